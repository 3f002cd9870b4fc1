"""The machine's own samples for pause-on-use (``MachineSampler``): /proc's CPU ticks with
this daemon's tree left out, NVML's process lists (empty without NVML); and the settings
made from the configuration."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from node.config import AvailabilityConfig, ContributorConfig, PauseOnUseConfig
from node.daemon.owner_use import MachineSampler, own_tree, settings_of

BUSY = "import time\nend = time.time() + 30\nwhile time.time() < end: pass\n"


def test_a_busy_child_is_ours_and_a_stranger_s_busy_process_is_the_owner_s() -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    busy = subprocess.Popen([sys.executable, "-c", BUSY])
    try:
        assert busy.pid in own_tree(os.getpid()) and sleeper.pid in own_tree(os.getpid())
        assert busy.pid not in own_tree(sleeper.pid)
        ours = MachineSampler()  # this test's tree: the busy loop is ours
        stranger = MachineSampler(root_pid=sleeper.pid)  # the busy loop is someone else's
        assert ours.cpu_share_permille() is None and stranger.cpu_share_permille() is None
        time.sleep(1.0)
        mine, theirs = ours.cpu_share_permille(), stranger.cpu_share_permille()
        assert mine is not None and theirs is not None
        assert 0 <= mine <= 1000 and 0 <= theirs <= 1000
        # the busy loop ran (its ticks are in our tree) and counts as others' use only
        # for the stranger (on a machine that other work saturates, both may be near 1000)
        assert own_tree(os.getpid())[busy.pid] > 0
        assert theirs > mine or theirs == 1000, (mine, theirs)
    finally:
        for p in (sleeper, busy):
            p.kill()
            p.wait()


def test_without_nvml_no_process_uses_the_gpu() -> None:
    sampler = MachineSampler()
    users = sampler.gpu_users()  # this machine has no NVIDIA driver, or none of ours use it
    assert isinstance(users, list)
    assert all(not u.startswith(f"{os.getpid()} ") for u in users)


def test_nvml_process_lists_are_read_leaving_out_our_tree(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """NVML's answers stood in for by a module of the same shape (no GPU in CI; on a GPU
    machine the real library gives these lists): a process of our tree is ours, one not
    visible in our /proc is left out, a list NVML refuses is skipped."""

    class NVMLError(Exception):
        pass

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:

        def compute(handle: object) -> list[SimpleNamespace]:
            pids = (sleeper.pid, os.getpid(), 2**22 + 12345)
            return [SimpleNamespace(pid=p) for p in pids]

        def graphics(handle: object) -> list[SimpleNamespace]:
            raise NVMLError("not supported")

        fake = SimpleNamespace(
            NVMLError=NVMLError,
            nvmlInit=lambda: None,
            nvmlDeviceGetCount=lambda: 1,
            nvmlDeviceGetHandleByIndex=lambda i: object(),
            nvmlDeviceGetComputeRunningProcesses=compute,
            nvmlDeviceGetGraphicsRunningProcesses=graphics,
        )
        monkeypatch.setitem(sys.modules, "pynvml", fake)
        # the sleeper's tree is "this daemon": the test process is another program
        users = MachineSampler(root_pid=sleeper.pid).gpu_users()
        comm = Path(f"/proc/{os.getpid()}/comm").read_text().strip()
        assert users == [f"{os.getpid()} {comm}"]
    finally:
        sleeper.kill()
        sleeper.wait()


def test_settings_come_from_the_configuration() -> None:
    c = ContributorConfig(
        availability=AvailabilityConfig(days="Sat,Sun", hours="09:00-17:00", time_zone="UTC"),
        pause_on_use=PauseOnUseConfig(cpu_percent=40, busy_s=5, quiet_s=30, gpu=False),
    )
    s = settings_of(c)
    assert s.schedule is not None and s.schedule.text == "Sat,Sun 09:00-17:00 UTC"
    assert (s.gpu, s.cpu_permille, s.busy_ms, s.quiet_ms) == (False, 400, 5_000, 30_000)
    assert settings_of(ContributorConfig()).schedule is None  # always: no schedule shown
