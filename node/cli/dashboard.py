"""``aimx node dashboard``: print (and open) the running node's dashboard login link.

The link carries this run's dashboard token (asked of the node with the API token of
``api.token``) in its fragment, ``/dashboard/#token=...``: a browser sends a fragment to no
server, and the token dies when the daemon stops (specs/dashboard.md, "Opening it").
"""

from __future__ import annotations

import json
import webbrowser
from typing import Annotated

import typer

from ._common import DataDirOption, JsonOption, resolve_data_dir, user_errors

OpenOption = Annotated[
    bool,
    typer.Option("--open/--no-open", help="Open the link in a browser (else only print it)."),
]


def dashboard(
    ctx: typer.Context,
    data_dir: DataDirOption = None,
    open_browser: OpenOption = True,
    as_json: JsonOption = False,
) -> None:
    """Print and open the login link of the running node's dashboard."""
    from ..api import Client
    from ..api.dashboard import login_url

    with user_errors():
        directory = resolve_data_dir(data_dir, ctx)
        with Client.for_data_dir(directory, timeout_s=10.0) as client:
            status = client.status()  # a stale node.json is an error here, not a dead link
            login = client.dashboard_token()
            url = login_url(client.api_url, str(login["token"]))
        if as_json:
            typer.echo(json.dumps({"url": url, "peer_id": status["peer_id"]}))
        else:
            typer.echo(f"dashboard of {status['peer_id']}:\n  {url}")
            typer.echo("  (the link logs in to this run of the node: do not share it)", err=True)
            if login.get("api_port") == 0:
                typer.echo(
                    "  (api_port is 0: the API's port changes at each start, and a link from an "
                    "earlier run points at a port any program may hold now: open only this one)",
                    err=True,
                )
        if open_browser and not as_json:
            webbrowser.open(url)
