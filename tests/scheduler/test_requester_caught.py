"""A provider whose sealed bytes do not open to its own (winning) commitment is paid by its
claim before the requester can tell (specs/marketplace.md, "Known limits"); it is then
caught (adaptive replication never trusts it again) and attested against on the ledger,
claim or not (specs/daemon.md, "Attestations and slash reports")."""

from __future__ import annotations

from ledger._rules import attest_failure_weight
from scheduler import ReplicaState

from ._harness import Sim, honest_output, reputation


def test_a_trusted_liar_paid_by_its_claim_is_caught_and_attested_against() -> None:
    # Before: paid 625 by its claim for every job, never caught, no failure on the ledger.
    sim = Sim(8)
    req = sim.add_requester(replication="adaptive", audit_permille=0)
    liar = sim.add_provider("liar", reputation=50, stake=2_000_000, price_floor=500)
    honest = [sim.add_provider(reputation=50, stake=2_000_000) for _ in range(2)]
    assert req.requester is not None
    jobs = []
    for _ in range(3):
        spec = sim.spec(req, redundancy=2, deadline_ms=30_000)
        job = sim.submit(req, spec)
        sim.run_jobs([job], limit_ms=400_000)
        jobs.append(job)
        assert sim.done[job].status == "verified"
        assert sim.done[job].output == honest_output(spec)

    first = req.requester.job(jobs[0]).replicas
    lied = next(r for r in first if r.provider == liar.pub)
    assert lied.state == ReplicaState.FAILED
    assert lied.reason == "delivered output bytes that do not match its commitment"
    assert liar.pub in req.requester.caught
    state = sim.ledger.state
    assert state.balance(liar.pub) == lied.award.message.price  # its one claim
    # Its failure weight is the attestation's: its 625 payout weighs 625/800 of a unit
    # (specs/ledger.md, "attest"), read as 0 whole failures.
    paid = lied.award.message.price
    assert state.reputation_weights(liar.pub)[1] == attest_failure_weight(paid) > 0
    assert reputation(state, liar.pub).failures == 0  # under one unit: whole units, floored
    for job in jobs[1:]:
        assert all(r.provider != liar.pub for r in req.requester.job(job).replicas)
    assert sum(state.balance(h.pub) for h in honest) > 0
