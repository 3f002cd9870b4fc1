"""Round 29, K4: while a job waited for more replicas, what agreed so far got its receipts
("fetch the bytes of what agrees so far"), and in exact mode those are sealed receipts,
claimable at once. A lone established cheat, the only bidder of the first window, was paid
for its wrong output before anything was compared; paid, it was beyond a slash when honest
veterans outvoted it later, and where the later bidders were honest newcomers the job
failed "with nobody paid" while the cheat had claimed. No receipt goes out now until the
job is decided, or ends short at its deadline.

Real Requester and Provider machines on the real pure ledger (``_harness.Sim``)."""

from __future__ import annotations

from typing import Any

from protocol import JobSpec

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


def test_a_job_finalising_short_awards_no_late_bid() -> None:
    # Round 30, L1: finalising short (under two bid windows left) gives what was accepted
    # a sealed receipt, claimable at once, but the job still awarded bids that came later:
    # veterans whose announcement came late outvoted the lone cheat after it was paid.
    # Now the job is overdue once it finalises short: the cheat's output is handed over
    # as unverified, and the late bids are not awarded.
    sim = Sim(7)
    req = sim.add_requester()
    cheat = sim.add_provider("cheat", reputation=5, stake=1_000_000, price_floor=500, run_ms=100)
    late = [
        sim.add_provider(reputation=5, stake=1_000_000, price_floor=1_000, run_ms=100)
        for _ in range(2)
    ]
    held: list[tuple[Any, ...]] = []
    send = sim._send

    def slow_gossip(src: Any, peer: bytes, raw: bytes, msg: Any, sealed: bytes | None) -> None:
        # the veterans hear of the job only once the cheat holds a receipt
        receipted = any(r.receipt for j in req.requester.jobs.values() for r in j.replicas)
        if isinstance(msg, JobSpec) and peer in {p.pub for p in late} and not receipted:
            held.append((src, peer, raw, msg, sealed))
            sim._at(sim.now + 100, lambda: slow_gossip(src, peer, raw, msg, sealed))
            return
        send(src, peer, raw, msg, sealed)

    sim._send = slow_gossip  # type: ignore[method-assign]
    spec = sim.spec(req, redundancy=2, max_retries=3, deadline_ms=20_000, bid_window_ms=1_200)
    job = sim.submit(req, spec)
    sim.run_jobs([job], limit_ms=200_000)
    assert held  # the veterans' announcement was held back, then delivered
    assert [r.provider for r in req.requester.jobs[job].replicas] == [cheat.pub]
    assert sim.done[job].status == "unverified"
