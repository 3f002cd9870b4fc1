"""A run cancelled from another thread (``RunCancel``) ends: its worker is killed, its
pool slot freed, and a run waiting for a slot gives up. Before, a run whose daemon had
stopped waiting for it (an aborted job) kept its slot and thread to the wall-clock limit
(review round 62, F1)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
import pytest

import sandbox
from sandbox.testing import run_payload

from .conftest import worker_processes, zombie_children

#: A wall-clock limit no run in these tests may reach: only a cancel ends them.
PATIENT = sandbox.Limits(wall_ms=120_000, cpu_s=120, memory_mb=1024, processes=64)


def sleep_forever() -> None:
    import time

    time.sleep(100_000)


@pytest.fixture
def one_slot() -> Iterator[sandbox.Sandbox]:
    with sandbox.Sandbox(sandbox.SandboxConfig(pool_size=1, spare_workers=0)) as sb:
        yield sb


class _Run:
    """A run on its own thread, as the daemon makes one."""

    def __init__(self, box: sandbox.Sandbox) -> None:
        self.cancel = sandbox.RunCancel()
        self.outcome: sandbox.Outcome | None = None
        self.thread = threading.Thread(target=self._run, args=(box,), daemon=True)
        self.thread.start()

    def _run(self, box: sandbox.Sandbox) -> None:
        self.outcome = run_payload(box, sleep_forever, limits=PATIENT, cancel=self.cancel)

    def ended(self, within_s: float = 30) -> sandbox.Outcome:
        self.thread.join(within_s)
        assert not self.thread.is_alive(), "the run went on after its cancel"
        assert self.outcome is not None
        return self.outcome


def _started(box: sandbox.Sandbox) -> None:
    """Wait (bounded) until a worker runs the payload."""
    for _ in range(300):
        if worker_processes():
            return
        time.sleep(0.05)
    raise AssertionError("no worker started")


def test_a_cancelled_run_ends_its_worker_and_frees_its_slot(one_slot: sandbox.Sandbox) -> None:
    zombies_before = set(zombie_children())  # other tests' in this process are not ours
    run = _Run(one_slot)
    _started(one_slot)
    run.cancel.cancel()
    outcome = run.ended()
    assert not outcome.ok
    assert worker_processes() == []
    assert set(zombie_children()) - zombies_before == set(), "the worker was not reaped"
    # its slot is free: the next run gets a worker at once
    assert one_slot.run(sandbox.JobRequest("onnx", _tiny(), _x16())).ok


def test_a_run_waiting_for_a_slot_gives_up_when_cancelled(one_slot: sandbox.Sandbox) -> None:
    holder = _Run(one_slot)
    _started(one_slot)
    waiting = _Run(one_slot)  # pool_size 1: waits for the holder's slot
    waiting.thread.join(0.5)
    assert waiting.thread.is_alive()
    waiting.cancel.cancel()
    assert "waited for a worker" in waiting.ended().message
    assert holder.thread.is_alive()  # the holder was not touched
    holder.cancel.cancel()
    holder.ended()
    assert worker_processes() == []


def test_a_cancel_before_the_run_starts_starts_nothing(one_slot: sandbox.Sandbox) -> None:
    cancel = sandbox.RunCancel()
    cancel.cancel()
    outcome = run_payload(one_slot, sleep_forever, limits=PATIENT, cancel=cancel)
    assert outcome.kind == "crashed" and "cancelled" in outcome.message
    assert worker_processes() == []


def _tiny() -> bytes:
    return sandbox.tiny_model_path().read_bytes()


def _x16() -> dict[str, npt.NDArray[np.float32]]:
    return {"x": np.ones((1, 16), np.float32)}
