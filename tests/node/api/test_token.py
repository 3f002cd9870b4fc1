"""The API token in the data directory, and a started node's files kept to its owner."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import httpx
import pytest
import trio

from node._runinfo import RunInfo
from node.api import TOKEN_FILE, ApiError, Client, load_or_create_token, read_token
from node.config import CoordinatorConfig, NodeConfig


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_a_token_is_made_private_and_kept_across_starts(tmp_path: Path) -> None:
    assert read_token(tmp_path) is None
    token = load_or_create_token(tmp_path)
    assert len(token) == 43 and mode(tmp_path / TOKEN_FILE) == 0o600
    assert read_token(tmp_path) == token
    assert load_or_create_token(tmp_path) == token  # a restart keeps it
    assert [p.name for p in tmp_path.iterdir()] == [TOKEN_FILE]  # no temporary file left


@pytest.mark.parametrize("damage", ["others_may_read", "garbage", "symlink"])
def test_a_token_others_may_have_read_or_a_bad_one_is_replaced(tmp_path: Path, damage: str) -> None:
    path = tmp_path / TOKEN_FILE
    old = load_or_create_token(tmp_path)
    if damage == "others_may_read":
        os.chmod(path, 0o644)
    elif damage == "garbage":
        path.write_text("not a token\n")
    else:
        elsewhere = tmp_path / "elsewhere"
        os.replace(path, elsewhere)
        path.symlink_to(elsewhere)
    new = load_or_create_token(tmp_path)
    assert new != old and read_token(tmp_path) == new
    assert not path.is_symlink() and mode(path) == 0o600


def test_a_client_without_the_token_is_told_where_it_is(tmp_path: Path) -> None:
    from node._runinfo import write_runinfo
    from node.daemon._run import data_dir_lock

    info = RunInfo(os.getpid(), "12D3KooW", ("requester",), (), "http://127.0.0.1:1", "c", 1)
    write_runinfo(tmp_path, info)
    with data_dir_lock(tmp_path), pytest.raises(ApiError, match=f"no API token at .*{TOKEN_FILE}"):
        Client.for_data_dir(tmp_path)


async def test_a_started_node_keeps_its_files_to_its_owner(tmp_path: Path) -> None:
    """Everything a daemon creates in its data directory (key, genesis, ledger and its
    WAL, node.json, api.token) is 0600, every directory 0700; its API answers the CLI's
    client (token from the data directory) and nobody without the token."""
    from node.daemon import run_daemon

    data_dir = tmp_path / "node"
    config = NodeConfig(roles=("coordinator",), coordinator=CoordinatorConfig(block_interval_ms=50))
    umask = os.umask(0o022)
    try:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                up = trio.Event()
                infos: list[RunInfo] = []

                def ready(info: RunInfo) -> None:
                    infos.append(info)
                    up.set()

                nursery.start_soon(lambda: run_daemon(data_dir, config, ready=ready))
                await up.wait()

                def use_the_api() -> int:
                    with Client.for_data_dir(data_dir) as client:
                        while client.status()["height"] < 2:  # the ledger's WAL is written
                            pass
                    return httpx.get(infos[0].api_url + "/api/status").status_code

                assert await trio.to_thread.run_sync(use_the_api) == 401
                created = [data_dir, *data_dir.rglob("*")]
                names = {p.relative_to(data_dir).as_posix() for p in created[1:]}
                assert {TOKEN_FILE, "node.json", "genesis.bin", "keys/node.key"} <= names
                assert any(n.endswith("-wal") for n in names), names
                wrong = {
                    str(p): oct(mode(p))
                    for p in created
                    if mode(p) != (0o700 if p.is_dir() else 0o600)
                }
                assert wrong == {}
                nursery.cancel_scope.cancel()
        assert os.umask(0o022) == 0o022  # the daemon put the test's umask back
    finally:
        os.umask(umask)
