"""Review round 69, R69-1: the dashboard's login cookie, and its old login links, reached
any program on another port of 127.0.0.1.

Browsers do not keep cookies apart by port and SameSite counts every port of 127.0.0.1 as
one site, so the cookie ``aimx_dashboard_<port>`` went with an ``<img>`` load from a page
on another port, where another local user listened and replayed it (snapshot, config,
pause). And ``/dashboard/login?token=<api token>`` in the browser's history sent the API
token itself to whoever held that port after a restart moved the API. Now no cookie: the
link carries a token made at each start, good for the dashboard only, in its fragment, and
the page sends it as ``Authorization: Bearer`` (specs/dashboard.md, "Access").
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import trio

from node.api import load_or_create_token, make_router, serve_http
from sandbox.testing import InProcessRunner

from ..daemon._cluster import CHAIN, cluster

TOKEN = "d" * 43


def _old_cookie(port: int, token: str) -> dict[str, str]:
    """The cookie the dashboard set before the fix (an HMAC of the API token)."""
    mac = hmac.new(token.encode(), b"aimx dashboard session", hashlib.sha256).digest()
    value = base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    return {"cookie": f"aimx_dashboard_{port}={value}"}


def _dashboard_token(base: str, api_token: str = TOKEN) -> str:
    with httpx.Client(base_url=base, timeout=20) as c:
        answer = c.get("/api/dashboard/token", headers={"authorization": f"Bearer {api_token}"})
        assert answer.status_code == 200, answer.text
        return str(answer.json()["token"])


async def test_the_old_cookie_opens_nothing(tmp_path: Path) -> None:
    with trio.fail_after(40):
        async with cluster(1, runner=lambda i: InProcessRunner()) as cl, trio.open_nursery() as n:
            contributor = cl.contributors[0]
            router = make_router(contributor, token=TOKEN, data_dir=tmp_path)
            port = await n.start(serve_http, router, "127.0.0.1", 0)

            def replay() -> None:
                cookie = _old_cookie(port, TOKEN)
                with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=20) as c:
                    assert c.get("/dashboard/snapshot", headers=cookie).status_code == 401
                    assert c.get("/dashboard/events", headers=cookie).status_code == 401
                    assert c.get("/dashboard/api/status", headers=cookie).status_code == 401
                    json_cookie = {**cookie, "content-type": "application/json"}
                    put = c.put(
                        "/dashboard/api/config",
                        headers=json_cookie,
                        content=json.dumps({"contributor": {"price_floor": 1}}),
                    )
                    assert put.status_code == 401
                    pause = c.post("/dashboard/api/pause", headers=json_cookie, content=b"{}")
                    assert pause.status_code == 401

            await trio.to_thread.run_sync(replay)
            assert contributor.provider is not None and not contributor.provider.draining
            assert not (tmp_path / "config.toml").exists()
            n.cancel_scope.cancel()


async def test_the_data_routes_need_this_runs_dashboard_token() -> None:
    with trio.fail_after(40):
        async with cluster(0) as cl, trio.open_nursery() as n:
            port = await n.start(serve_http, make_router(cl.requester, token=TOKEN), "127.0.0.1", 0)
            # a second start of the same node (same API token): its own dashboard token
            again = await n.start(
                serve_http, make_router(cl.requester, token=TOKEN), "127.0.0.1", 0
            )
            base, base2 = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{again}"

            def check() -> None:
                token, other_run = _dashboard_token(base), _dashboard_token(base2)
                assert len(token) == 43 and token != TOKEN and token != other_run
                with httpx.Client(base_url=base, timeout=20) as c:
                    for path in (
                        "/dashboard/snapshot",
                        "/dashboard/events",
                        "/dashboard/api/status",
                    ):
                        assert c.get(path).status_code == 401, path
                        for wrong in (TOKEN, other_run, "x" * 43):
                            answer = c.get(path, headers={"authorization": f"Bearer {wrong}"})
                            assert answer.status_code == 401, (path, wrong)
                            assert answer.headers["www-authenticate"] == "Bearer"
                    bearer = {"authorization": f"Bearer {token}"}
                    snap = c.get("/dashboard/snapshot", headers=bearer)
                    assert snap.status_code == 200
                    assert snap.json()["status"]["peer_id"] == cl.requester.peer_id
                    assert "set-cookie" not in snap.headers
                    with c.stream("GET", "/dashboard/events", headers=bearer) as events:
                        assert events.status_code == 200
                        assert events.headers["content-type"] == "text/event-stream"
                    assert c.get("/dashboard/api/status", headers=bearer).status_code == 200
                    # the dashboard's token opens nothing of the JSON API
                    assert c.get("/api/status", headers=bearer).status_code == 401
                    assert (
                        c.get("/dashboard/api/dashboard/token", headers=bearer).status_code == 404
                    )
                    # the page holds nothing of the node's: served without a token, and it
                    # reads the fragment and sends the token as a header, with no cookie
                    page = c.get("/dashboard/")
                    assert page.status_code == 200 and "aimx node dashboard" in page.text
                    assert "set-cookie" not in page.headers
                    js = c.get("/dashboard/static/app.js").text
                    assert "sessionStorage" in js and "replaceState" in js
                    assert "EventSource(" not in js and "document.cookie" not in js

            await trio.to_thread.run_sync(check)
            n.cancel_scope.cancel()


async def test_the_old_login_route_sets_nothing_and_echoes_no_token() -> None:
    with trio.fail_after(40):
        async with cluster(0) as cl, trio.open_nursery() as n:
            port = await n.start(serve_http, make_router(cl.requester, token=TOKEN), "127.0.0.1", 0)

            def check() -> None:
                with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=20) as c:
                    for query in (f"?token={TOKEN}", "?token=" + "e" * 43, ""):
                        answer = c.get("/dashboard/login" + query)
                        assert answer.status_code == 410, query
                        assert "set-cookie" not in answer.headers
                        assert "location" not in answer.headers
                        assert TOKEN not in answer.text and "e" * 43 not in answer.text
                        assert "aimx node dashboard" in answer.text
                        assert answer.headers["referrer-policy"] == "no-referrer"
                        assert answer.headers["cache-control"] == "no-store"
                    assert not c.cookies

            await trio.to_thread.run_sync(check)
            n.cancel_scope.cancel()


async def test_the_command_puts_the_token_only_in_the_fragment(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from node._runinfo import RunInfo, write_runinfo
    from node.cli import app
    from node.daemon._run import data_dir_lock

    data_dir = tmp_path / "node"
    data_dir.mkdir(mode=0o700)
    api_token = load_or_create_token(data_dir)
    with trio.fail_after(40):
        async with cluster(0) as cl, trio.open_nursery() as n:
            router = make_router(cl.requester, token=api_token)
            port = await n.start(serve_http, router, "127.0.0.1", 0)
            url = f"http://127.0.0.1:{port}"
            info = RunInfo(
                pid=os.getpid(),
                peer_id=cl.requester.peer_id,
                roles=("requester",),
                addresses=(),
                api_url=url,
                chain_id=CHAIN,
                started_ms=0,
                genesis_hash="00" * 32,
            )
            write_runinfo(data_dir, info)

            def command() -> None:
                out = CliRunner().invoke(
                    app, ["node", "dashboard", "--data-dir", str(data_dir), "--json"]
                )
                assert out.exit_code == 0, out.output
                link = urlsplit(json.loads(out.stdout)["url"])
                token = _dashboard_token(url, api_token)
                assert link._replace(fragment="").geturl() == f"{url}/dashboard/"
                assert link.query == "" and link.fragment == f"token={token}"
                assert api_token not in out.stdout
                # what a browser sends for the link: no token at all
                with httpx.Client(base_url=url, timeout=20) as browser:
                    page = browser.get(link.path)
                    assert page.status_code == 200 and not browser.cookies
                # the port moves at each start (api_port 0): the command says so
                printed = CliRunner().invoke(
                    app, ["node", "dashboard", "--data-dir", str(data_dir), "--no-open"]
                )
                assert printed.exit_code == 0, printed.output
                assert f"{url}/dashboard/#token={token}" in printed.stdout
                assert "earlier run" in printed.stderr and "open only this one" in printed.stderr

            with data_dir_lock(data_dir):  # held as a daemon holds it (the CLI checks)
                await trio.to_thread.run_sync(command)
            n.cancel_scope.cancel()
