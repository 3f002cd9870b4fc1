"""Whole daemons under trio's MockClock: the machines, the in-memory network and the fake
job runners of ``sandbox.testing`` (no workers), so deadlines and expiries that take
tens of seconds of real time pass in virtual time."""

from __future__ import annotations

from collections.abc import Callable

import trio
import trio.testing

import ledger
from sandbox import JobRunner, tiny_model_path
from sandbox.testing import FailingRunner, InProcessRunner

from ._cluster import Cluster, cluster, tiny_inputs

#: Jumps only when nothing ran for this long in real time, so a job running in a worker
#: thread (real time) is never skipped over.
IDLE_S = 0.05


def _runner(failing: set[int]) -> Callable[[int], JobRunner]:
    shared = InProcessRunner()

    def choose(i: int) -> JobRunner:
        return FailingRunner("runtime_error", "the runtime crashed") if i in failing else shared

    return choose


async def _closed(cl: Cluster, job_id: bytes) -> None:
    record = cl.requester.jobs[job_id]
    while not record.closed:
        await record.changed.wait()
    await cl.settle_blocks(2)


async def test_a_failing_contributor_is_replaced_in_virtual_time(
    mock_clock: trio.testing.MockClock,
) -> None:
    mock_clock.autojump_threshold = IDLE_S
    async with cluster(3, runner=_runner({0}), seed=3) as cl:
        job_id = await cl.requester.submit_job(
            tiny_model_path().read_bytes(), tiny_inputs(), redundancy=2
        )
        with trio.fail_after(120):  # virtual seconds
            await _closed(cl, job_id)
        record = cl.requester.jobs[job_id]
        assert record.done is not None and record.done.status == "verified", record.events
        failing = cl.contributors[0].me
        paid = {p.provider: p.amount for p in record.done.paid}
        assert failing not in paid and len(paid) == 2
        state = cl.coordinator.ledger.state
        ledger.check_invariants(state)
        escrow = state.escrow(job_id)
        assert escrow is not None and not escrow.is_open
        assert escrow.paid_to(failing) == 0
