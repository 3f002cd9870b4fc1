"""``node.json``: written by a running daemon, read by its clients; a stale one is "not
running"."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from node._runinfo import (
    RUNINFO_FILE,
    NodeNotRunning,
    RunInfo,
    read_runinfo,
    remove_runinfo,
    write_runinfo,
)
from node.daemon._run import data_dir_lock


def info(pid: int) -> RunInfo:
    return RunInfo(
        pid=pid,
        peer_id="12D3KooW",
        roles=("coordinator",),
        addresses=("/ip4/127.0.0.1/tcp/4001/p2p/12D3KooW",),
        api_url="http://127.0.0.1:8080",
        chain_id="aimx-test",
        started_ms=1,
    )


def test_written_then_read_while_the_process_lives(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        write_runinfo(tmp_path, info(os.getpid()))
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / RUNINFO_FILE).stat().st_mode) == 0o600  # its owner's only
    with data_dir_lock(tmp_path):  # held as a daemon holds it while it runs
        assert read_runinfo(tmp_path) == info(os.getpid())
    remove_runinfo(tmp_path)
    assert not (tmp_path / RUNINFO_FILE).exists()
    remove_runinfo(tmp_path)  # idempotent


def test_missing_unreadable_or_stale_is_not_running(tmp_path: Path) -> None:
    with pytest.raises(NodeNotRunning, match="no node is running"):
        read_runinfo(tmp_path)
    (tmp_path / RUNINFO_FILE).write_text("{not json")
    with pytest.raises(NodeNotRunning, match="unreadable"):
        read_runinfo(tmp_path)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    write_runinfo(tmp_path, info(gone.pid))
    with pytest.raises(NodeNotRunning, match="is gone"):
        read_runinfo(tmp_path)
