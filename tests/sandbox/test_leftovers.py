"""A daemon killed with -9 leaves its sandbox's temporary directories; the next sandbox to
start removes them (issue 15, specs/sandbox.md "Leftovers"), and never a live one's.

The temporary directory is the test's own (``tempfile.tempdir``), so other sandboxes on
this machine are never touched."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from node._runinfo import RUNINFO_FILE, RunInfo, remove_stale_runinfo, write_runinfo
from sandbox import Sandbox, SandboxConfig

OLD = time.time() - 3600


@pytest.fixture
def tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    return done.pid


@pytest.fixture
def live_pid() -> Iterator[int]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def leftover(base: Path, name: str, *, age: float = OLD) -> Path:
    """A sandbox directory as a killed daemon leaves it: a job directory and a file in it."""
    d = base / name
    (d / "job-1-0").mkdir(parents=True)
    (d / "job-1-0" / "out.bin").write_bytes(b"x" * 100)
    os.utime(d, (age, age))
    return d


def test_a_killed_daemons_directories_are_removed_a_live_ones_kept(
    tmp: Path, live_pid: int
) -> None:
    dead = dead_pid()
    gone = [
        leftover(tmp, f"aimx-sandbox-{dead}-abc_12"),
        leftover(tmp, f"aimx-sandbox-private-{dead}-x9Yz"),
    ]
    kept = [
        # a live daemon's
        leftover(tmp, f"aimx-sandbox-{live_pid}-abc"),
        leftover(tmp, f"aimx-sandbox-private-{live_pid}-abc"),
        # a dead pid's, but younger than a minute (a sandbox starting in another pid
        # namespace could be naming it)
        leftover(tmp, f"aimx-sandbox-{dead}-young", age=time.time()),
        # not named as a sandbox names them
        leftover(tmp, f"aimx-sandbox-{dead}"),
        leftover(tmp, "aimx-sandbox-abcd1234"),
    ]
    # a dead pid's name but locked: a live sandbox in another pid namespace
    locked = leftover(tmp, f"aimx-sandbox-{dead}-locked")
    fd = os.open(locked, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    kept.append(locked)
    # a link is never followed
    target = leftover(tmp, "target")
    (tmp / f"aimx-sandbox-{dead}-link").symlink_to(target)
    os.utime(tmp / f"aimx-sandbox-{dead}-link", (OLD, OLD), follow_symlinks=False)
    kept += [tmp / f"aimx-sandbox-{dead}-link", target]
    if os.geteuid() == 0:
        # another user's
        other = leftover(tmp, f"aimx-sandbox-{dead}-other")
        os.chown(other, 65534, 65534)
        os.utime(other, (OLD, OLD))
        kept.append(other)
    try:
        with Sandbox(SandboxConfig(pool_size=1, spare_workers=0)) as box:
            assert box.leftovers_removed == len(gone)
            for d in gone:
                assert not d.exists(), d
            for d in kept:
                assert os.path.lexists(d), d
            assert (target / "job-1-0" / "out.bin").exists()
            # its own directories carry its pid, and a second sandbox leaves them alone
            own = sorted(
                p.name
                for p in tmp.iterdir()
                if p.name.startswith(f"aimx-sandbox-{os.getpid()}-")
                or p.name.startswith(f"aimx-sandbox-private-{os.getpid()}-")
            )
            assert len(own) == 2, own
            for p in own:
                os.utime(tmp / p, (OLD, OLD))
            with Sandbox(SandboxConfig(pool_size=1, spare_workers=0)) as second:
                assert second.leftovers_removed == 0
            for p in own:
                assert (tmp / p).is_dir()
        assert not any((tmp / p).exists() for p in own)  # a clean close removes them
    finally:
        os.close(fd)


def test_a_killed_sandbox_process_leaves_directories_the_next_start_removes(tmp: Path) -> None:
    """For real: a process that made a sandbox is killed with -9."""
    code = (
        "import os, sys, tempfile, time\n"
        f"tempfile.tempdir = {str(tmp)!r}\n"
        "from sandbox import Sandbox, SandboxConfig\n"
        "box = Sandbox(SandboxConfig(pool_size=1, spare_workers=0))\n"
        "print('ready', flush=True)\n"
        "time.sleep(120)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        left = sorted(tmp.glob(f"aimx-sandbox-*{proc.pid}-*"))
        assert len(left) == 2, left
    finally:
        proc.kill()
        proc.wait()
    for d in left:
        os.utime(d, (OLD, OLD))
    with Sandbox(SandboxConfig(pool_size=1, spare_workers=0)) as box:
        assert box.leftovers_removed == 2
    assert not any(d.exists() for d in left)


def _info(pid: int) -> RunInfo:
    return RunInfo(
        pid=pid,
        peer_id="12D3KooW",
        roles=("contributor",),
        addresses=(),
        api_url="http://127.0.0.1:1",
        chain_id="aimx-test",
        started_ms=0,
    )


def test_a_killed_daemons_node_json_is_removed_at_start(tmp_path: Path, live_pid: int) -> None:
    write_runinfo(tmp_path, _info(dead_pid()))
    (tmp_path / f".{RUNINFO_FILE}.tmp").write_text("{half")
    assert remove_stale_runinfo(tmp_path)
    assert not (tmp_path / RUNINFO_FILE).exists()
    assert not (tmp_path / f".{RUNINFO_FILE}.tmp").exists()
    assert not remove_stale_runinfo(tmp_path)  # nothing there
    # half written by a killed daemon: removed too
    (tmp_path / RUNINFO_FILE).write_text('{"pid": ')
    assert remove_stale_runinfo(tmp_path)
    # a live process's is kept
    write_runinfo(tmp_path, _info(live_pid))
    assert not remove_stale_runinfo(tmp_path)
    assert (tmp_path / RUNINFO_FILE).exists()


def _deep_tree(root: Path, depth: int = 1_500) -> None:
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            inner = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = inner
    finally:
        os.close(fd)


def test_a_tree_too_deep_for_rmtree_is_removed_and_swept(tmp_path: Path) -> None:
    # Review round 75, F1: shutil.rmtree recursed once a level; a job's tree 1,500 levels
    # deep raised RecursionError (which ignore_errors does not cover), its directory stayed,
    # and every later start's sweep raised the same.
    from sandbox._leftovers import remove_tree, sweep_leftovers

    deep = tmp_path / "deep"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    left = tmp_path / f"aimx-sandbox-{gone.pid}-abcd"
    try:
        deep.mkdir()
        _deep_tree(deep)
        assert remove_tree(deep) and not deep.exists()
        left.mkdir()
        _deep_tree(left)
        old = time.time() - 3_600
        os.utime(left, (old, old))
        assert sweep_leftovers(tmp_path) == 1 and not left.exists()
    finally:  # pytest's own clean-up of tmp_path recurses and would fail on them
        subprocess.run(["rm", "-rf", "--", str(deep), str(left)], check=False)
