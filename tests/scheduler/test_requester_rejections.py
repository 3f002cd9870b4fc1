"""A job its providers reject ends at once with what they said (issue 18), and a job short
of replicas says so while it waits."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger import EscrowStatus
from protocol import Usage
from scheduler import JobStatus, RunJob, UserEvent

from ._harness import CLASS, Node, Sim

SAID = "model has 3 nodes, more than the limit of 2"
#: How long a rejecting provider takes to say so (its sandbox's admission).
REJECT_MS = 5
NO_USAGE = Usage(cpu_ms=0, wall_ms=0, peak_memory_kb=0, gpu_ms=0)


class RejectingSim(Sim):
    """The harness, with a provider behaviour ``reject``: its sandbox refuses every job
    (outcome ``rejected``) a few milliseconds after the award."""

    def _run(self, node: Node, fx: RunJob) -> None:
        if node.behaviour != "reject":
            super()._run(node, fx)
            return

        def finish() -> None:
            if node.online and node.provider is not None:
                effects = node.provider.job_finished(
                    fx.job.id, self.now, outcome="rejected", output=None, usage=NO_USAGE,
                    message=SAID,
                )  # fmt: skip
                self.execute(node, "provider", effects)

        self._at(self.now + REJECT_MS, finish)


def _events(sim: Sim, job: bytes, event: UserEvent) -> list[str]:
    return [n.detail for _, n in sim.notes if n.job_id == job and n.event == event]


def test_every_replica_rejected_ends_the_job_at_once_with_their_reason() -> None:
    sim = RejectingSim(3)
    req = sim.add_requester(balance=1_000_000)
    provs = [sim.add_provider("reject", price_floor=1_000 + i) for i in range(3)]
    spec = sim.spec(req, redundancy=2, max_retries=2, deadline_ms=20_000)
    start = sim.now
    job = sim.submit(req, spec)
    sim.run_until(start + 3_000)  # the lock needs a block (1 s), then the awards

    done = sim.done.get(job)
    assert done is not None, "the job still waits for its 20 s deadline"
    assert done.status == JobStatus.FAILED
    assert done.reason.startswith(f"rejected by every provider awarded it (3): {SAID}")
    assert f"refunded at its expiry, block {spec.escrow_expiry_height}" in done.reason
    # the spare bid was tried (3 awards: 2 + the spare), then no announcement again
    assert len(_events(sim, job, UserEvent.AWARDED)) == 3
    assert len(_events(sim, job, UserEvent.ANNOUNCED)) == 1
    # a rejection is not misbehaviour: nobody is attested against or slashed
    assert not sim.attests and not sim.slashes
    # the escrow comes back whole at its expiry (no early empty settle)
    sim.run_jobs([job])
    escrow = sim.ledger.escrow(job)
    assert escrow is not None and escrow.status == EscrowStatus.REFUNDED
    assert sim.ledger.state.balance(req.pub) == 1_000_000
    assert all(sim.ledger.state.balance(p.pub) == 0 for p in provs)


def test_a_rejection_while_another_replica_runs_does_not_end_the_job() -> None:
    sim = RejectingSim(4)
    req = sim.add_requester(balance=1_000_000)
    sim.add_provider("reject", price_floor=1_000)
    sim.add_provider(price_floor=1_001, run_ms=3_000)
    spec = sim.spec(req, redundancy=2, max_retries=2, deadline_ms=20_000)
    job = sim.submit(req, spec)
    sim.run_until(sim.now + 2_500)  # awarded, rejected; the honest one still runs

    assert len(_events(sim, job, UserEvent.REPLICA_FAILED)) == 1
    assert job not in sim.done
    # short of a replica with no bid left: the user is told so, once
    waiting = _events(sim, job, UserEvent.WAITING)
    assert waiting == [f"1 of 2 replicas found; waiting for more contributors of {CLASS}"]
    sim.run_jobs([job])
    done = sim.done[job]
    assert done.status == JobStatus.UNVERIFIED  # one result by the deadline
    assert not done.reason.startswith("rejected")


def test_a_spare_that_accepts_replaces_a_rejecting_replica() -> None:
    sim = RejectingSim(5)
    req = sim.add_requester(balance=1_000_000)
    sim.add_provider("reject", price_floor=900)  # the cheapest: awarded first
    honest = sim.add_provider(price_floor=1_000)
    job = sim.submit(req, sim.spec(req, redundancy=1, max_retries=1))
    sim.run_jobs([job])
    done = sim.done[job]
    assert done.status == JobStatus.VERIFIED
    assert [p.provider for p in done.paid] == [honest.pub]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.sampled_from(["reject", "honest"]), min_size=1, max_size=4),
    st.integers(1, 3),
    st.integers(0, 3),
    st.integers(0, 2**16),
)
def test_rejections_end_a_job_early_only_when_every_award_was_rejected(
    behaviours: list[str], redundancy: int, retries: int, seed: int
) -> None:
    sim = RejectingSim(seed)
    req = sim.add_requester(balance=10_000_000)
    for i, b in enumerate(behaviours):
        sim.add_provider(b, price_floor=1_000 + i, run_ms=300)
    spec = sim.spec(req, redundancy=redundancy, max_retries=retries, deadline_ms=20_000)
    job = sim.submit(req, spec)
    sim.run_until(sim.now + 5_000)
    done: Any = sim.done.get(job)
    if "honest" not in behaviours:
        # every provider rejects: over in seconds, not at the 20 s deadline
        assert done is not None and done.status == JobStatus.FAILED
        assert SAID in done.reason and done.reason.startswith("rejected by every provider")
    sim.run_jobs([job])
    done = sim.done[job]
    if done.reason.startswith("rejected"):
        # only ever when no award was accepted
        assert req.requester is not None
        replicas = req.requester.job(job).replicas
        assert all(r.reason.startswith("reported rejected") for r in replicas)
    escrow = sim.ledger.escrow(job)
    assert escrow is not None and not escrow.is_open
