"""Round 29, K4: while a job waited for more replicas, what agreed so far got its receipts
("fetch the bytes of what agrees so far"), and in exact mode those are sealed receipts,
claimable at once. A lone established cheat, the only bidder of the first window, was paid
for its wrong output before anything was compared; paid, it was beyond a slash when honest
veterans outvoted it later, and where the later bidders were honest newcomers the job
failed "with nobody paid" while the cheat had claimed. No receipt goes out now until the
job is decided, or ends short at its deadline.

Real Requester and Provider machines on the real pure ledger (``_harness.Sim``)."""

from __future__ import annotations

from ._harness import Sim


def _lone_cheat_first(veterans: bool) -> tuple[Sim, bytes, bytes]:
    sim = Sim(7)
    req = sim.add_requester()
    cheat = sim.add_provider("cheat", reputation=5, stake=1_000_000, price_floor=500, run_ms=100)
    later = [
        sim.add_provider(reputation=5 if veterans else 0, stake=1_000_000, price_floor=1_000)
        for _ in range(2)
    ]
    for p in later:  # away for the first bid window
        sim.go_offline(p, at=sim.now, back_at=sim.now + 6_000)
    job = sim.submit(req, sim.spec(req, redundancy=2, max_retries=3, deadline_ms=60_000))
    sim.run_jobs([job], limit_ms=200_000)
    sim.run_until(sim.now + 10_000)
    return sim, job, cheat.pub


def test_a_lone_cheat_is_not_paid_before_later_veterans_outvote_it() -> None:
    sim, job, cheat = _lone_cheat_first(veterans=True)
    assert sim.done[job].status == "verified"
    escrow = sim.ledger.escrow(job)
    assert escrow is not None
    assert escrow.paid_to(cheat) == 0 and cheat not in escrow.claimed
    assert cheat in escrow.slashed
    assert sim.ledger.state.account(cheat).stake < 1_000_000


def test_a_lone_cheat_is_not_paid_when_newcomers_then_disagree_with_it() -> None:
    # newcomers never outvote an established provider: the job fails, and nobody is paid
    sim, job, cheat = _lone_cheat_first(veterans=False)
    assert sim.done[job].status == "failed"
    assert sim.done[job].paid == ()
    escrow = sim.ledger.escrow(job)
    assert escrow is not None
    assert escrow.paid_to(cheat) == 0 and not escrow.paid
