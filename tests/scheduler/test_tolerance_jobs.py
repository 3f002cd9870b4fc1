"""Jobs in ``tolerance`` mode are judged by their bytes, so the requester reads every output
before it settles and may pay bidders of its own instead (specs/marketplace.md, "Known
limits"). A provider bids on them only with ``tolerance_jobs`` set, and never on one with
both tolerances 0 (bit for bit, as exact mode, but with the outputs handed over first)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from protocol import JobSpec
from scheduler import RunJob

from ._harness import Machine, Node, Sim, honest_output


def _tolerance(spec: JobSpec, rtol_e9: int, atol_e9: int) -> JobSpec:
    policy = replace(spec.verification, mode="tolerance", rtol_e9=rtol_e9, atol_e9=atol_e9)
    return replace(spec, verification=policy)


def _runs(sim: Sim) -> list[bytes]:
    """Every job a provider started, as it starts it."""
    started: list[bytes] = []
    original = sim._carry_out

    def carry_out(node: Node, role: Machine, fx: object) -> None:
        if isinstance(fx, RunJob):
            started.append(fx.job.id)
        original(node, role, fx)  # type: ignore[arg-type]

    sim._carry_out = carry_out  # type: ignore[method-assign]
    return started


@pytest.mark.parametrize(
    ("accept", "rtol_e9", "atol_e9", "why"),
    [
        (False, 1_000, 1_000, "tolerance mode refused here"),
        (False, 0, 0, "tolerance mode refused here"),
        (True, 0, 0, "both tolerances 0"),
    ],
    ids=["default", "zero-default", "zero-accepted"],
)
def test_a_tolerance_job_gets_no_bid_and_no_output(
    accept: bool, rtol_e9: int, atol_e9: int, why: str
) -> None:
    # Before: every provider bid, ran and handed its output over at once, and the
    # requester settled with throw-away keys of its own at price 1.
    sim = Sim(7)
    req = sim.add_requester()
    providers = [sim.add_provider(tolerance_jobs=accept) for _ in range(3)]
    started = _runs(sim)
    spec = _tolerance(sim.spec(req, redundancy=2), rtol_e9, atol_e9)
    job = sim.submit(req, spec)
    sim.run_jobs([job], limit_ms=60_000)

    done = sim.done[job]
    assert done.status == "failed" and done.output is None and not done.paid
    assert done.no_bids is not None and done.no_bids.primary == "requirements_unmet"
    assert not started
    assert req.requester is not None
    nobids = req.requester.job(job).nobids
    assert set(nobids) == {p.pub for p in providers}
    assert all(why in nb.detail for nb in nobids.values())
    assert all(sim.ledger.state.balance(p.pub) == 0 for p in providers)


def test_a_provider_that_takes_tolerance_jobs_bids_on_them() -> None:
    sim = Sim(8)
    req = sim.add_requester()
    for _ in range(3):
        sim.add_provider(tolerance_jobs=True)
    spec = _tolerance(sim.spec(req, redundancy=2), 1_000, 0)
    job = sim.submit(req, spec)
    sim.run_jobs([job])

    done = sim.done[job]
    assert done.status == "verified"
    assert done.output == honest_output(spec)
    assert len(done.paid) == 2


def test_exact_jobs_are_bid_on_as_before() -> None:
    sim = Sim(9)
    req = sim.add_requester()
    sim.add_provider()  # the default: no tolerance jobs
    spec = sim.spec(req, redundancy=1)
    job = sim.submit(req, spec)
    sim.run_jobs([job])
    assert sim.done[job].status == "verified"
