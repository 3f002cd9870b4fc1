"""Strangers trying to game the marketplace's money and trust rules (issue 14)."""

from __future__ import annotations

import ledger
from protocol import JobSpec
from scheduler import (
    Deliver,
    JobPhase,
    NotifyUser,
    Output,
    Send,
    TimerKey,
    TimerKind,
    UserEvent,
)
from scheduler._provider_delivered import MAX_OUTPUT_RESENDS

from ._harness import Sim, honest_output, wrong_output

#: What an established provider has bonded (``RequesterConfig.probation_stake``).
ESTABLISHED_STAKE = 1_000_000


def test_output_bytes_that_miss_their_commitment_are_a_failed_replica() -> None:
    # Attack 5: a provider reports the honest commitment but delivers corrupted bytes. The
    # requester recomputes the commitment of what its key opened: the replica fails, the
    # user gets the honest bytes, and the job is verified by honest replicas. Its sealed
    # receipt (its commitment was among the verified winners) paid its claim: knowing the
    # winning commitment without handing over that output takes a colluder that computed
    # it (specs/marketplace.md, "Known limits").
    sim = Sim(5)
    req = sim.add_requester(balance=1_000_000)
    liar = sim.add_provider("liar", price_floor=900, reputation=5, stake=ESTABLISHED_STAKE)
    honest = [
        sim.add_provider(price_floor=1_000 + 10 * i, reputation=5, stake=ESTABLISHED_STAKE)
        for i in range(2)
    ]
    spec = sim.spec(req, redundancy=2, max_retries=2)
    job = sim.submit(req, spec)
    sim.run_jobs([job])

    done = sim.done[job]
    assert done.status == "verified"
    assert done.output == honest_output(spec)
    paid = {p.provider: p.amount for p in done.paid}
    assert set(paid) == {h.pub for h in honest}
    state = sim.ledger.state
    assert all(state.balance(h.pub) == paid[h.pub] for h in honest)
    assert any(m.peer == liar.pub and "commitment" in m.reason for m in sim.misbehaved)
    rep = next(r for r in req.requester.job(job).replicas if r.provider == liar.pub)  # type: ignore[union-attr]
    assert rep.output is None
    assert rep.reason == "delivered output bytes that do not match its commitment"
    assert any(a.subject == liar.pub and not a.positive for a in sim.attests)
    escrow = sim.ledger.state.escrow(job)
    assert escrow is not None and not escrow.is_open


def test_a_requester_gets_no_output_before_it_signs_a_receipt() -> None:
    # Attack 10: outputs used to travel with the Result, before any receipt, so a requester
    # could keep them and never acknowledge (nothing to claim with). Now the output travels
    # sealed under a one-time key, and the key goes only for a Receipt bound to the Result.
    sim = Sim(10)
    req = sim.add_requester(balance=1_000_000)
    prov = sim.add_provider(reputation=5, stake=ESTABLISHED_STAKE, run_ms=2_000)
    job = sim.submit(req, sim.spec(req, redundancy=1))
    machine = prov.provider
    assert machine is not None
    while machine.active == 0:  # until the award
        sim.run_until(sim.now + 100)
    req.online = False  # the requester goes silent while the job runs
    work = machine.get(job)
    while work.phase != "delivered":
        sim.run_until(sim.now + 10)
    sealed = work.sealed
    assert work.result is not None and work.receipt is None and sealed
    # The requester went silent after the award: resends carry the sealed bytes, never the
    # output itself nor its key (and only a few, within the award's time: round 71, F1).
    plain = honest_output(req.requester.job(job).spec).data  # type: ignore[union-attr]
    resends = [
        fx
        for t in range(1, 40)
        for fx in machine.timer(TimerKey(TimerKind.RESEND, job), sim.now + 10 * t)
        if isinstance(fx, Deliver | Send)
    ]
    assert resends and all(isinstance(fx, Deliver) for fx in resends)
    assert all(fx.output == sealed and plain not in fx.output for fx in resends)  # type: ignore[union-attr]
    assert len(resends) <= MAX_OUTPUT_RESENDS


def test_a_provider_that_withholds_its_bytes_after_the_receipt_is_replaced_and_unpaid() -> None:
    # The other half of the fair exchange: the receipt came, the key never did (neither
    # an Unseal nor the claim that would publish it). The requester fails the replica once
    # it is overdue, has the job run elsewhere, and settles with the provider that
    # delivered: the withholder is paid nothing, and its receipt cannot be cashed without
    # handing the output over.
    sim = Sim(11)
    req = sim.add_requester(balance=1_000_000)
    withholder = sim.add_provider(
        "withhold", price_floor=900, reputation=5, stake=ESTABLISHED_STAKE
    )
    honest = sim.add_provider(price_floor=1_000, reputation=5, stake=ESTABLISHED_STAKE)
    spec = sim.spec(req, redundancy=1, max_retries=2)
    job = sim.submit(req, spec)
    sim.run_jobs([job])

    done = sim.done[job]
    assert done.status == "verified" and done.output == honest_output(spec)
    assert [p.provider for p in done.paid] == [honest.pub]
    machine = req.requester
    assert machine is not None
    rep = next(r for r in machine.job(job).replicas if r.provider == withholder.pub)
    assert rep.receipt is not None and rep.reason == "withheld its output after the receipt"
    escrow = sim.ledger.state.escrow(job)
    assert escrow is not None and not escrow.is_open
    assert sim.ledger.state.balance(withholder.pub) == 0
    assert any(a.subject == withholder.pub and not a.positive for a in sim.attests)


def test_a_result_naming_another_class_than_its_bid_gets_no_receipt() -> None:
    # Review of issue 14: a cheater bid in the job's class, then named another class in its
    # Result. Results in two classes are compared by bytes, so every one was receipted
    # before judging, and the cheater claimed when the job could not verify. A Result in
    # another class than its bid's now fails its replica, unreceipted.
    sim = Sim(13)
    req = sim.add_requester(balance=1_000_000)
    cheat = sim.add_provider("classlie", price_floor=900, reputation=5, stake=ESTABLISHED_STAKE)
    honest = [
        sim.add_provider(price_floor=1_000 + 10 * i, reputation=5, stake=ESTABLISHED_STAKE)
        for i in range(2)
    ]
    spec = sim.spec(req, redundancy=2, max_retries=2)
    job = sim.submit(req, spec)
    sim.run_jobs([job])

    done = sim.done[job]
    assert done.status == "verified" and done.output == honest_output(spec)
    machine = req.requester
    assert machine is not None
    rep = next(r for r in machine.job(job).replicas if r.provider == cheat.pub)
    assert rep.receipt is None and "determinism class" in rep.reason
    assert {p.provider for p in done.paid} == {h.pub for h in honest}
    assert sim.ledger.state.balance(cheat.pub) == 0


def test_receipts_only_for_verified_work() -> None:
    # The outvoted provider never holds a receipt, so it cannot claim from the escrow.
    sim = Sim(2)
    req = sim.add_requester(balance=1_000_000)
    cheat = sim.add_provider("cheat", price_floor=995, reputation=5, stake=ESTABLISHED_STAKE)
    honest = [
        sim.add_provider(price_floor=1_000 + 10 * i, reputation=5, stake=ESTABLISHED_STAKE)
        for i in range(2)
    ]
    job = sim.submit(req, sim.spec(req, redundancy=2, max_retries=2))
    sim.run_jobs([job])
    assert sim.done[job].status == "verified"
    reps = {r.provider: r for r in req.requester.job(job).replicas}  # type: ignore[union-attr]
    assert reps[cheat.pub].result is not None and reps[cheat.pub].receipt is None
    assert all(reps[h.pub].receipt is not None for h in honest)
    assert sim.ledger.state.balance(cheat.pub) == 0


def test_requester_ignores_an_escrow_it_did_not_lock() -> None:
    # Attack 7, the daemon's side: an escrow under the job's id that is not this node's,
    # or does not hold the job's budget, never counts as the job's lock.
    sim = Sim(7)
    node = sim.add_requester()
    machine = node.requester
    assert machine is not None
    spec = sim.spec(node)
    job_id, _ = machine.submit(spec, sim.now)
    budget = spec.max_price * (spec.redundancy + spec.max_retries)

    def escrow(owner: bytes, locked: int) -> ledger.Escrow:
        return ledger.Escrow(owner, locked, locked, 1, spec.escrow_expiry_height, 1, 1)

    mallory = sim.key()
    for fake in (escrow(bytes(mallory.verify_key), budget), escrow(node.pub, 1)):
        assert machine.follow_ledger(1, lambda _job, e=fake: e, sim.now) == []  # type: ignore[misc]
        assert machine.job(job_id).phase == JobPhase.LOCKING
    effects = machine.follow_ledger(1, lambda j: escrow(node.pub, budget), sim.now)
    assert any(isinstance(fx, NotifyUser) and fx.event == UserEvent.LOCKED for fx in effects)
    assert machine.job(job_id).phase == JobPhase.COLLECTING


def test_two_colluding_newcomers_cannot_outvote_the_probation_replica() -> None:
    # Attack 11: two newcomers return the same wrong output and win the two cheapest bids of
    # a redundancy-2 job; the established provider awarded as the probation replica
    # disagrees. Newcomers never outvote it: the colluders are neither verified nor paid.
    sim = Sim(11)
    req = sim.add_requester(balance=1_000_000)
    colluders = [sim.add_provider("collude", price_floor=500 + i) for i in range(2)]
    veteran = sim.add_provider(price_floor=2_000, reputation=5, stake=ESTABLISHED_STAKE)
    spec = sim.spec(req, redundancy=2, max_retries=1)
    job = sim.submit(req, spec)
    sim.run_jobs([job])

    done = sim.done[job]
    assert done.status != "verified"
    assert done.output != sim_wrong(spec)
    state = sim.ledger.state
    assert all(state.balance(c.pub) == 0 for c in colluders)
    replicas = req.requester.job(job).replicas  # type: ignore[union-attr]
    assert {r.provider for r in replicas} >= {c.pub for c in colluders} | {veteran.pub}
    assert all(r.receipt is None for r in replicas if r.provider != veteran.pub)


def sim_wrong(spec: JobSpec) -> Output:
    return wrong_output(spec, b"colluders")
