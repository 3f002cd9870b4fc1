"""A requester machine refuses to start a job the network would refuse (issue h23 F1):
a max_price under 1 (its lock of 0 is no escrow: the job stayed locking for good) and a
deadline past ``MAX_DEADLINE_MS`` (providers count it as misbehaviour)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from scheduler import MAX_DEADLINE_MS, JobRejected

from ._harness import Sim


@pytest.mark.parametrize(
    ("max_price", "ahead_ms", "says"),
    [
        (0, 10_000, "max_price must be at least 1"),
        (1_000, MAX_DEADLINE_MS + 1, "more than 23 h ahead"),
    ],
    ids=["max_price-0", "deadline-23h"],
)
def test_a_job_the_network_would_refuse_is_not_started(
    max_price: int, ahead_ms: int, says: str
) -> None:
    sim = Sim(4)
    req = sim.add_requester()
    sim.add_provider()
    spec = sim.spec(req, deadline_ms=10_000)
    spec = replace(spec, max_price=max_price, deadline_ms=sim.now + ahead_ms)
    with pytest.raises(JobRejected, match=says):
        sim.submit(req, spec)
    assert req.requester is not None and not req.requester.jobs
    sim.run_until(sim.now + 2_000)
    assert not sim.misbehaved


def test_a_deadline_just_inside_the_limit_runs() -> None:
    sim = Sim(5)
    req = sim.add_requester()
    sim.add_provider()
    spec = sim.spec(req, deadline_ms=MAX_DEADLINE_MS, max_price=1_000)
    job = sim.submit(req, spec)
    sim.run_until(sim.now + 3_000)
    assert req.requester is not None and req.requester.job(job).replicas
    assert not sim.misbehaved


def test_a_max_price_of_1_is_started() -> None:
    # (mutation run: `max_price < 1` as `<= 1` went unnoticed) the least price is allowed
    sim = Sim(6)
    req = sim.add_requester()
    sim.add_provider()
    spec = replace(sim.spec(req, deadline_ms=10_000), max_price=1)
    job = sim.submit(req, spec)
    assert req.requester is not None and job in req.requester.jobs
