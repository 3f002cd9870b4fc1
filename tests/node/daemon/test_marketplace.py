"""Whole daemons in one process over the in-memory network: a job from submit to settled."""

from __future__ import annotations

import numpy as np
import trio

import ledger
from sandbox import Sandbox, tiny_model_path

from ._cluster import Cluster, cluster, tiny_inputs


def _conserved(state: ledger.State) -> None:
    ledger.check_invariants(state)
    held = sum(a.balance + a.stake + a.unbonding_total for _, a in state.accounts())
    escrowed = sum(e.remaining for _, e in state.escrows() if e.is_open)
    total, issued = state.conservation()
    assert held + escrowed + state.fees == total == issued


async def _wait_closed(cl: Cluster, job_id: bytes) -> None:
    record = cl.requester.jobs[job_id]
    while not record.closed:
        await record.changed.wait()
    await cl.settle_blocks(2)


async def test_job_verified_with_redundancy_two_and_both_paid() -> None:
    model = tiny_model_path().read_bytes()
    inputs = tiny_inputs()
    with trio.fail_after(40):
        async with cluster(3) as cl:
            before = {n.me: n.ledger.state.balance(n.me) for n in cl.nodes}
            job_id = await cl.requester.submit_job(model, inputs, redundancy=2)
            await _wait_closed(cl, job_id)
            record = cl.requester.jobs[job_id]
            assert record.done is not None and record.done.status == "verified", record.events
            # the verified output is what the model computes
            with Sandbox() as sb:
                from sandbox import JobRequest

                expect = sb.run(JobRequest(runtime="onnx", model=model, inputs=inputs))
            assert record.outputs is not None
            for name, value in expect.outputs.items():
                np.testing.assert_array_equal(record.outputs[name], value)
            paid = {p.provider: p.amount for p in record.done.paid}
            assert len(paid) >= 2 and all(a > 0 for a in paid.values())
            state = cl.coordinator.ledger.state
            escrow = state.escrow(job_id)
            assert escrow is not None and not escrow.is_open
            assert dict(escrow.paid) == paid
            spent = before[cl.requester.me] - state.balance(cl.requester.me)
            assert spent == sum(paid.values())
            for node in cl.contributors:
                got = state.balance(node.me) - before[node.me]
                assert got == paid.get(node.me, 0)
            _conserved(state)
            roots = {n.ledger.state.root for n in cl.nodes if n.ledger.state.height == state.height}
            assert len(roots) == 1
