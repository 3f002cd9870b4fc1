"""Review round 62, F1: ``AbortJob`` stopped waiting for a run but left it going, its
sandbox slot and thread held to the wall-clock limit, while the Provider machine counted
the slot free. A requester awarding jobs it let the machine abort at once (an award's
deadline a few hundred milliseconds ahead) filled trio's default thread limiter, so the
daemon's other blocking work (a receipt's write) waited, and honest runs never started.
An aborted run now ends: its runner is cancelled, on threads of the runs' own."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import trio
import trio.testing

import protocol
import scheduler
from node.daemon.runs import RUN_THREADS, Runs
from sandbox import JobRequest, Outcome

from ...ledger.helpers import ALICE, BOB, CHAIN, award, job_spec

#: How long an aborted run would go on if nothing ended it (a job at its wall limit).
RUN_S = 60


class _Endless:
    """A runner whose every job runs until its limit, unless cancelled; counts the runs
    still going."""

    def __init__(self) -> None:
        self.going = 0

    def run(self, job: JobRequest) -> Outcome:
        self.going += 1
        try:
            assert job.cancel is not None, "the daemon gave the run no cancel handle"
            job.cancel.wait(RUN_S)
            usage = protocol.Usage(cpu_ms=0, wall_ms=0, peak_memory_kb=0, gpu_ms=0)
            return Outcome("crashed", "cancelled", usage)
        finally:
            self.going -= 1


def _node(nursery: trio.Nursery) -> Any:
    async def fetch(*args: object) -> bytes:
        return b"model"

    gauge = SimpleNamespace(inc=lambda: None, dec=lambda: None)
    return SimpleNamespace(
        spawn=nursery.start_soon,
        content=SimpleNamespace(fetch=fetch),
        metrics=SimpleNamespace(running=gauge),
        provider=None,
    )


def _run(n: int) -> scheduler.RunJob:
    spec = job_spec(ALICE, f"abort-{n}".encode())
    signed_award = protocol.decode(award(ALICE, BOB, 100, job=spec.id), CHAIN, protocol.Award)
    return scheduler.RunJob(spec, signed_award)


async def test_aborted_runs_end_and_leave_the_daemons_threads_alone() -> None:
    runner = _Endless()
    limiter = trio.to_thread.current_default_thread_limiter()
    async with trio.open_nursery() as nursery:
        runs = Runs(_node(nursery), runner)
        jobs = [_run(n) for n in range(RUN_THREADS + 8)]
        for effect in jobs:
            runs.start(effect)
        await trio.testing.wait_all_tasks_blocked()
        with trio.fail_after(10):
            while runner.going < RUN_THREADS:
                await trio.sleep(0.01)
        # Runs past the runs' own threads wait for one; the default limiter is untouched.
        assert runner.going == RUN_THREADS
        assert limiter.borrowed_tokens == 0
        for effect in jobs:
            runs.abort(effect.job.id)
        with trio.fail_after(10):  # the tree before: 60 s each, its limiter full meanwhile
            while runner.going:
                await trio.sleep(0.01)
        assert not any(effect.job.id in runs for effect in jobs)
        # a receipt's write on the default limiter goes at once
        with trio.fail_after(5):
            await trio.to_thread.run_sync(lambda: None)
        nursery.cancel_scope.cancel()
