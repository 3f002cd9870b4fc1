"""Every ``aimx`` command that asks a node reads the API token from the data directory."""

from __future__ import annotations

import json
import os
from pathlib import Path

import trio
from typer.testing import CliRunner

from node._runinfo import RunInfo, write_runinfo
from node.api import Request, Response, Router, load_or_create_token, owner_only, serve_http
from node.api._auth import token_path
from node.cli import app
from node.daemon._run import data_dir_lock

STATUS = {
    "peer_id": "12D3KooW",
    "roles": ["requester"],
    "chain_id": "aimx-devnet",
    "height": 7,
    "balance": 1,
    "stake": 0,
    "reputation": 0.5,
    "connected_peers": 0,
    "api_url": "",
    "jobs": {},
    "addresses": [],
}


async def _status(request: Request) -> Response:
    return Response.json(STATUS)


def _aimx(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), env={"AIMX_DATA_DIR": None})
    return result.exit_code, result.output


async def test_node_status_sends_the_token_of_the_data_dir(tmp_path: Path) -> None:
    token = load_or_create_token(tmp_path)
    router = Router()
    router.add("GET", "/api/status", _status)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_http, owner_only(router, token), "127.0.0.1", 0)
        info = RunInfo(
            os.getpid(), "12D3KooW", ("requester",), (), f"http://127.0.0.1:{port}", "c", 1
        )
        write_runinfo(tmp_path, info)
        with data_dir_lock(tmp_path):  # held as a daemon holds it (the CLI checks)
            status = ("node", "status", "--json", "--data-dir", str(tmp_path))

            code, out = await trio.to_thread.run_sync(lambda: _aimx(*status))
            assert code == 0, out
            assert json.loads(out)["height"] == 7

            token_path(tmp_path).write_text("B" * 43)  # a token the node does not know
            code, out = await trio.to_thread.run_sync(lambda: _aimx(*status))
            assert code == 1 and "401" in out and "token" in out

            token_path(tmp_path).unlink()
            code, out = await trio.to_thread.run_sync(lambda: _aimx(*status))
            assert code == 1 and "no API token" in out
        nursery.cancel_scope.cancel()
