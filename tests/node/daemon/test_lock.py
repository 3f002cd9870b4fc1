"""One daemon per data directory: a second start names the running one's pid, exits 1 and
changes nothing (issue 18)."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest
import trio

from node._runinfo import RUNINFO_FILE
from node.config import CoordinatorConfig, NodeConfig
from node.daemon import DataDirInUse, DataDirUnusable, run_daemon
from node.daemon._run import LOCK_FILE, data_dir_lock, private_data_dir


def test_the_lock_names_its_holder_and_is_free_again_after(tmp_path: Path) -> None:
    with data_dir_lock(tmp_path):
        assert (tmp_path / LOCK_FILE).read_text().strip() == str(os.getpid())
        assert (tmp_path / LOCK_FILE).stat().st_mode & 0o777 == 0o600
        with pytest.raises(DataDirInUse, match=f"pid {os.getpid()}"), data_dir_lock(tmp_path):
            pass
    with data_dir_lock(tmp_path):  # released with the daemon
        pass


async def test_a_second_daemon_on_the_same_data_dir_exits_1_and_touches_nothing(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "node"
    config = NodeConfig(roles=("coordinator",), coordinator=CoordinatorConfig(block_interval_ms=50))
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            up = trio.Event()
            nursery.start_soon(lambda: run_daemon(data_dir, config, ready=lambda _: up.set()))
            await up.wait()
            before = (data_dir / RUNINFO_FILE).read_text()
            second = await trio.run_process(
                [sys.executable, "-m", "node", "node", "start", "--data-dir", str(data_dir)],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                env={**os.environ, "COLUMNS": "200"},
            )
            output = (second.stdout + second.stderr).decode()
            assert second.returncode == 1, output
            assert len(output.strip().splitlines()) < 5, output
            assert f"pid {os.getpid()}" in output and "--data-dir" in output, output
            assert "Traceback" not in output
            assert (data_dir / RUNINFO_FILE).read_text() == before  # node.json untouched
            assert (data_dir / LOCK_FILE).read_text().strip() == str(os.getpid())
            nursery.cancel_scope.cancel()
    assert not (data_dir / RUNINFO_FILE).exists()


def test_a_shared_directory_is_refused_as_the_data_directory_and_left_as_it_was(
    tmp_path: Path,
) -> None:
    # Review round 69, R69-6: the daemon made any --data-dir 0700, /tmp included (as
    # root, for the whole machine), and left its key and lock file there.
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    with pytest.raises(DataDirUnusable, match="shared with other users"):
        private_data_dir(shared)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777 and not any(shared.iterdir())
    own = tmp_path / "own"
    own.mkdir(mode=0o755)
    private_data_dir(own)  # the user's own: made private
    assert stat.S_IMODE(own.stat().st_mode) == 0o700
    new = tmp_path / "new" / "node"
    private_data_dir(new)
    assert stat.S_IMODE(new.stat().st_mode) == 0o700
