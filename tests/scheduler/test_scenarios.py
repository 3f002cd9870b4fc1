"""The marketplace end to end over the in-test network, in virtual time."""

from __future__ import annotations

from ledger import REP_UNIT, EscrowStatus
from protocol import Receipt
from scheduler import Send

from ._harness import SLASH_AMOUNT, Sim, honest_output, spot_checked

#: What an established provider has bonded (``RequesterConfig.probation_stake``).
ESTABLISHED_STAKE = 1_000_000


def _escrow_status(sim: Sim, job_id: bytes) -> EscrowStatus:
    escrow = sim.ledger.escrow(job_id)
    assert escrow is not None, "the job's escrow was never locked"
    return escrow.status


def test_redundancy_two_completes_and_both_are_paid() -> None:
    sim = Sim(1)
    req = sim.add_requester(balance=1_000_000)
    provs = [
        sim.add_provider(price_floor=1_000 + 100 * i, reputation=5, stake=ESTABLISHED_STAKE)
        for i in range(3)
    ]
    spec = sim.spec(req, redundancy=2, max_retries=1)
    job = sim.submit(req, spec)
    sim.run_jobs([job])

    done = sim.done[job]
    assert done.status == "verified"
    assert done.output == honest_output(spec)
    paid = {p.provider: p.amount for p in done.paid}
    assert len(paid) == 2
    # The two cheapest providers won.
    assert set(paid) == {provs[0].pub, provs[1].pub}
    assert _escrow_status(sim, job) == EscrowStatus.SETTLED
    state = sim.ledger.state
    for p in provs[:2]:
        assert state.balance(p.pub) == paid[p.pub]
        # Five settled jobs before, then the payout.
        assert state.account(p.pub).rep_s == 6 * REP_UNIT
    assert state.balance(req.pub) == 1_000_000 - sum(paid.values())
    assert sim.reputation(provs[0].pub).settled_jobs == 6
    assert not sim.ledger.rejected
    assert not sim.misbehaved


def test_cheater_is_outvoted_unpaid_and_loses_reputation() -> None:
    sim = Sim(2)
    req = sim.add_requester(balance=1_000_000)
    stake = ESTABLISHED_STAKE + 2 * SLASH_AMOUNT  # established, and slashable twice
    cheat = sim.add_provider("cheat", price_floor=995, reputation=5, stake=stake)
    honest = [
        sim.add_provider(price_floor=1_000 + 10 * i, reputation=5, stake=stake) for i in range(2)
    ]
    spec = sim.spec(req, redundancy=2, max_retries=2)
    job = sim.submit(req, spec)
    sim.run_jobs([job])

    done = sim.done[job]
    assert done.status == "verified"
    assert done.output == honest_output(spec)  # the requester still gets the right answer
    assert {p.provider for p in done.paid} == {h.pub for h in honest}
    state = sim.ledger.state
    assert state.balance(cheat.pub) == 0
    # The requester attested against the unpaid cheater: reported with its signed result, the
    # coordinator slashed it (stake burned, reputation down); the honest kept their stake.
    (against,) = [a for a in sim.attests if not a.positive]
    assert against.subject == cheat.pub and against.reason == "outvoted"
    assert state.account(cheat.pub).stake == stake - SLASH_AMOUNT
    assert state.burned == SLASH_AMOUNT
    assert all(state.account(h.pub).stake == stake for h in honest)
    assert sim.reputation(cheat.pub).score_permille < sim.reputation(honest[0].pub).score_permille
    # Three replicas were awarded: the cheater's disagreement added one.
    assert len(req.requester.job(job).replicas) == 3  # type: ignore[union-attr]

    # With its reputation down, the cheater loses the next job despite the lowest price.
    job2 = sim.submit(req, sim.spec(req, redundancy=1, max_retries=1))
    sim.run_jobs([job2])
    winners = {p.provider for p in sim.done[job2].paid}
    assert cheat.pub not in winners and len(winners) == 1


def test_provider_that_vanishes_mid_job_is_replaced_and_unpaid() -> None:
    sim = Sim(3)
    req = sim.add_requester(balance=1_000_000)
    dead = sim.add_provider(price_floor=100, reputation=5, stake=ESTABLISHED_STAKE, run_ms=5_000)
    alive = sim.add_provider(price_floor=2_000, reputation=5, stake=ESTABLISHED_STAKE)
    spec = sim.spec(req, redundancy=1, max_retries=2)
    job = sim.submit(req, spec)
    # The cheapest provider wins the award, then dies (SIGKILL) a second into the run.
    sim.go_offline(dead, sim.now + 1_500)
    sim.run_jobs([job])

    done = sim.done[job]
    assert done.status == "verified"
    assert [p.provider for p in done.paid] == [alive.pub]
    state = sim.ledger.state
    assert state.balance(dead.pub) == 0
    replicas = req.requester.job(job).replicas  # type: ignore[union-attr]
    assert replicas[0].provider == dead.pub and replicas[0].reason == "went silent"
    (against,) = [a for a in sim.attests if not a.positive]
    assert against.subject == dead.pub and against.reason == "went silent"
    # The ledger takes attestations only about providers the job paid, and a silence leaves
    # no signed result to report: the dead provider's record is unchanged, and unpaid.
    assert state.account(dead.pub).rep_f == 0
    assert _escrow_status(sim, job) == EscrowStatus.SETTLED


def test_requester_silent_after_its_receipt_pays_by_the_claim() -> None:
    sim = Sim(4)
    req = sim.add_requester(balance=1_000_000)
    prov = sim.add_provider(price_floor=3_000, reputation=5, stake=ESTABLISHED_STAKE)
    spec = sim.spec(req, redundancy=1, max_retries=0)
    # The requester's process dies right after it sends the receipt (before it settles),
    # and only comes back well after the escrow expired.
    req.crash_after = lambda fx: isinstance(fx, Send) and isinstance(fx.message.message, Receipt)
    job = sim.submit(req, spec)
    back = sim.now + (spec.escrow_expiry_height + 5) * 1_000
    sim.run_until(sim.now + 2_000)
    assert not req.online
    req.back_at = back
    sim.go_offline(req, sim.now, back)
    sim.run_jobs([job], limit_ms=back - sim.now + 10_000)

    state = sim.ledger.state
    price = req.requester.job(job).replicas[0].award.message.price  # type: ignore[union-attr]
    assert price >= 3_000
    assert state.balance(prov.pub) == price  # claimed with the receipt
    escrow = state.escrow(job)
    assert escrow is not None and escrow.claimed == (prov.pub,)
    claims = [n for who, n in sim.notes if who == prov.pub and n.event == "claimed"]
    assert len(claims) == 1  # a sealed receipt: claimed at once, not after the deadline
    # Back, the requester reads the key from the escrow, and closes it (its settle pays
    # nobody again; the rest comes back to it).
    assert _escrow_status(sim, job) in (EscrowStatus.SETTLED, EscrowStatus.REFUNDED)
    assert state.balance(req.pub) == 1_000_000 - price
    sim.ledger.check_conservation()


def test_no_provider_matches_reports_reasons_and_refunds() -> None:
    sim = Sim(5)
    req = sim.add_requester(balance=1_000_000)
    sim.add_provider(price_floor=50_000)  # above max_price
    sim.add_provider(capability_classes=("torch.gpu.m80",))
    sim.add_provider(price_floor=60_000)
    spec = sim.spec(req, redundancy=1, max_price=10_000)
    job = sim.submit(req, spec)
    sim.run_jobs([job])

    done = sim.done[job]
    assert done.status == "failed" and done.no_bids is not None
    assert dict(done.no_bids.reasons) == {"price_below_floor": 2, "class_not_served": 1}
    assert done.no_bids.primary == "price_below_floor"
    assert done.no_bids.lowest_floor == 50_000
    assert "50000" in done.no_bids.advice[0]
    # Nobody to pay: no settle before expiry (the ledger refuses a short one); refunded then.
    assert _escrow_status(sim, job) == EscrowStatus.REFUNDED
    assert sim.ledger.state.balance(req.pub) == 1_000_000


def test_no_provider_known_at_all() -> None:
    sim = Sim(6)
    req = sim.add_requester(balance=1_000_000)
    job = sim.submit(req, sim.spec(req, capability_class="onnx.gpu.m80"), providers=[])
    sim.run_jobs([job])
    report = sim.done[job].no_bids
    assert report is not None and report.primary == "no_provider_known"
    assert sim.ledger.state.balance(req.pub) == 1_000_000


def test_insufficient_balance_fails_without_announcing() -> None:
    sim = Sim(7)
    req = sim.add_requester(balance=10)
    prov = sim.add_provider()
    job = sim.submit(req, sim.spec(req))
    sim.run_until(sim.now + 5_000)
    assert sim.done[job].status == "failed"
    # The ledger's own refusal, word for word.
    assert sim.done[job].reason.startswith(
        "escrow not locked: balance after fee is 10, cannot lock"
    )
    assert [kind for kind, _ in sim.ledger.rejected] == ["lock"]
    assert sim.ledger.escrow(job) is None
    assert prov.provider is not None and not prov.provider.history


def test_full_provider_declines_award_and_is_replaced() -> None:
    sim = Sim(8)
    req = sim.add_requester(balance=10_000_000)
    busy = sim.add_provider(price_floor=100, reputation=5, stake=ESTABLISHED_STAKE, run_ms=3_000)
    other = sim.add_provider(price_floor=5_000, reputation=5, stake=ESTABLISHED_STAKE)
    # Two jobs announced at once: ``busy`` bids on both (bids do not reserve a slot),
    # wins both, and must decline the second award.
    jobs = [sim.submit(req, sim.spec(req, redundancy=1, max_retries=1)) for _ in range(2)]
    sim.run_jobs(jobs)
    winners = sorted(p.provider for j in jobs for p in sim.done[j].paid)
    assert winners == sorted([busy.pub, other.pub])
    assert busy.provider is not None
    outcomes = [s.outcome for s in busy.provider.history]
    assert "declined" in outcomes
    report = busy.provider.why_no_jobs(sim.now)
    assert any("max_concurrency" in h for h in report.hints)


def test_probation_replica_for_a_newcomer() -> None:
    sim = Sim(9)
    req = sim.add_requester(balance=1_000_000)
    newbie = sim.add_provider(price_floor=100, reputation=0)
    veteran = sim.add_provider(price_floor=5_000, reputation=10, stake=ESTABLISHED_STAKE)
    job = sim.submit(req, sim.spec(req, redundancy=1, max_retries=1))
    sim.run_jobs([job])
    replicas = req.requester.job(job).replicas  # type: ignore[union-attr]
    assert [r.provider for r in replicas] == [newbie.pub, veteran.pub]
    assert {p.provider for p in sim.done[job].paid} == {newbie.pub, veteran.pub}


def test_spot_check_catches_a_cheater_with_a_known_answer() -> None:
    sim = Sim(10)
    cheat, check = spot_checked(sim, "cheat")
    assert sim.done[check].status == "failed"
    # Caught: unpaid (no receipt, nothing to claim with) and attested against. Not slashed:
    # a known answer is no evidence the ledger can check (it slashes on a paid majority).
    assert sim.slashes == []
    against = [(a.subject, a.positive) for a in sim.attests if a.job_id == check]
    assert against == [(cheat.pub, False)]
    escrow = sim.ledger.escrow(check)
    assert escrow is not None and escrow.paid == ()  # nothing for the wrong answer
    assert sim.ledger.state.account(cheat.pub).stake == SLASH_AMOUNT


def test_lossy_network_still_verifies() -> None:
    # A quarter of all messages (announcements, bids, awards, heartbeats, results,
    # receipts) are lost; re-announcements, award and result resends carry the jobs through.
    for seed in range(10):
        sim = Sim(100 + seed, loss=0.25)
        req = sim.add_requester(balance=1_000_000)
        for i in range(4):
            sim.add_provider(price_floor=1_000 + i, reputation=5, stake=ESTABLISHED_STAKE)
        spec = sim.spec(req, redundancy=2, max_retries=2)
        job = sim.submit(req, spec)
        sim.run_jobs([job])
        assert sim.done[job].status == "verified", seed
        assert sim.done[job].output == honest_output(spec)
        assert _escrow_status(sim, job) == EscrowStatus.SETTLED


def test_provider_priced_out_learns_why() -> None:
    sim = Sim(11)
    req = sim.add_requester(balance=10_000_000)
    dear = sim.add_provider(price_floor=8_000, reputation=5, stake=ESTABLISHED_STAKE)
    sim.add_provider(price_floor=1_000, reputation=5, max_concurrency=3, stake=ESTABLISHED_STAKE)
    jobs = [sim.submit(req, sim.spec(req, max_price=5_000 + 2_000 * i)) for i in range(3)]
    sim.run_jobs(jobs)
    assert dear.provider is not None
    report = dear.provider.why_no_jobs(sim.now)
    assert dict(report.outcomes) == {"price_below_floor": 2, "lost": 1}
    assert any("price_floor" in h for h in report.hints)
    assert any("bids lost" in h for h in report.hints)
    # Closed jobs can be dropped from the requester's memory.
    assert req.requester is not None
    for j in jobs:
        req.requester.forget(j)
    assert not req.requester.jobs


def test_exact_jobs_prefer_replicas_in_one_determinism_class() -> None:
    sim = Sim(12)
    req = sim.add_requester(balance=1_000_000)
    first = sim.add_provider(price_floor=1_000, reputation=5, stake=ESTABLISHED_STAKE)
    # Cheaper than ``same`` but in another class: passed over for the second replica.
    other = sim.add_provider(
        price_floor=1_100, reputation=5, stake=ESTABLISHED_STAKE, determinism_class="ort/cpu/avx512"
    )
    same = sim.add_provider(price_floor=1_500, reputation=5, stake=ESTABLISHED_STAKE)
    job = sim.submit(req, sim.spec(req, redundancy=2, max_retries=0))
    sim.run_jobs([job])
    assert {p.provider for p in sim.done[job].paid} == {first.pub, same.pub}
    assert other.provider is not None
    assert [s.outcome for s in other.provider.history] == ["lost"]


def test_busy_answers_wait_for_capacity() -> None:
    sim = Sim(13)
    req = sim.add_requester(balance=1_000_000)
    only = sim.add_provider(
        price_floor=1_000, reputation=5, stake=ESTABLISHED_STAKE, overbook=1, run_ms=1_500
    )
    jobs = [sim.submit(req, sim.spec(req, redundancy=1, max_retries=0)) for _ in range(2)]
    sim.run_jobs(jobs)
    # One job was told "busy", announced again, and ran once the slot was free.
    assert [sim.done[j].status for j in jobs] == ["verified", "verified"]
    assert only.provider is not None
    assert [s.outcome for s in only.provider.history].count("busy") >= 1
    announced = [n for _, n in sim.notes if n.job_id in jobs and n.event == "announced"]
    assert len(announced) >= 3
