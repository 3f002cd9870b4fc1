"""``aimx node dashboard``: print (and open) the running node's dashboard login link.

As Jupyter does: the link carries the node's API token (``api.token`` in the data
directory, readable only by its owner) and logs the browser in with a cookie; the page
is refused without it (specs/dashboard.md).
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
    from ..api import Client, read_token
    from ..api.dashboard import login_url

    with user_errors():
        directory = resolve_data_dir(data_dir, ctx)
        with Client.for_data_dir(directory, timeout_s=10.0) as client:
            status = client.status()  # a stale node.json is an error here, not a dead link
            url = login_url(client.api_url, read_token(directory) or "")
        if as_json:
            typer.echo(json.dumps({"url": url, "peer_id": status["peer_id"]}))
        else:
            typer.echo(f"dashboard of {status['peer_id']}:\n  {url}")
            typer.echo("  (the link holds the node's API token: do not share it)", err=True)
        if open_browser and not as_json:
            webbrowser.open(url)
