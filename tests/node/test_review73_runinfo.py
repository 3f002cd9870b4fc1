"""Review round 73: a killed daemon's ``node.json`` named a pid another local user's
process could take, and the CLI, trusting any live pid, sent that user the API token (F1);
a link another user made, as the data directory or its ``api.token``, pointed the CLI at
the real token while naming that user's port (F2)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from node._runinfo import RUNINFO_FILE, NodeNotRunning, read_runinfo
from node.api._auth import TOKEN_FILE, read_token
from node.daemon import DataDirUnusable
from node.daemon._run import data_dir_lock, private_data_dir

INFO = {
    "peer_id": "12D3KooW",
    "roles": ["requester"],
    "addresses": [],
    "api_url": "http://127.0.0.1:1",
    "chain_id": "aimx-test",
    "started_ms": 0,
}


def test_a_node_json_whose_lock_is_not_held_is_stale_whatever_its_pid(tmp_path: Path) -> None:
    (tmp_path / RUNINFO_FILE).write_text(json.dumps({**INFO, "pid": os.getpid()}))  # alive
    with pytest.raises(NodeNotRunning, match="is gone"):
        read_runinfo(tmp_path)
    with data_dir_lock(tmp_path):  # a daemon holds it: trusted
        assert read_runinfo(tmp_path).pid == os.getpid()


def test_a_linked_node_json_or_token_is_not_trusted(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (real / TOKEN_FILE).write_text("t" * 43 + "\n")
    (real / RUNINFO_FILE).write_text(json.dumps({**INFO, "pid": os.getpid()}))
    other = tmp_path / "other"
    other.mkdir()
    os.symlink(real / TOKEN_FILE, other / TOKEN_FILE)
    os.symlink(real / RUNINFO_FILE, other / RUNINFO_FILE)
    assert read_token(real) == "t" * 43
    assert read_token(other) is None
    with data_dir_lock(other), pytest.raises(NodeNotRunning, match="not a regular file"):
        read_runinfo(other)


@pytest.mark.skipif(os.geteuid() != 0, reason="making another user's link needs root")
def test_a_data_directory_linked_by_another_user_is_refused(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o700)
    link = tmp_path / "link"
    os.symlink(mine, link)
    os.lchown(link, 65534, 65534)
    with pytest.raises(DataDirUnusable, match="a link another user made"):
        private_data_dir(link)
    os.lchown(link, 0, 0)
    private_data_dir(link)  # one of ours (or root's) is followed


@pytest.mark.skipif(os.geteuid() != 0, reason="making another user's directory needs root")
def test_a_data_directory_of_another_user_is_refused_to_root_too(tmp_path: Path) -> None:
    # Review round 77, F2: root's daemon used it; that user could swap the node's key, or
    # link a file root writes there to one of root's.
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, 65534, 65534)
    with pytest.raises(DataDirUnusable, match="belongs to another user"):
        private_data_dir(theirs)


@pytest.mark.skipif(os.geteuid() != 0, reason="making another user's directory needs root")
def test_a_data_directory_inside_another_users_directory_is_refused(tmp_path: Path) -> None:
    # Review round 79, F3: told to use a subdirectory of another user's directory, root's
    # daemon had it swapped by that user while it ran.
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, 65534, 65534)
    with pytest.raises(DataDirUnusable, match="another user's directory"):
        private_data_dir(theirs / "node")
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o775)  # group-writable, not sticky
    with pytest.raises(DataDirUnusable, match="others may write to"):
        private_data_dir(shared / "node")
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    os.chmod(sticky, 0o1777)  # like /tmp: others cannot move our entries
    private_data_dir(sticky / "node")
    assert (sticky / "node").is_dir()
