"""The key on the Receipt: a provider that reserved its place in the escrow (``reserve``,
as its run starts) sends its key on the requester's sealed Receipt, and the requester's
settle pays it; its own claim is only for a requester that does not. Real Requester and
Provider machines over the real pure ledger."""

from __future__ import annotations

import dataclasses
from typing import Any

import ledger
import protocol
import scheduler
from protocol import Award, NoBid, Receipt, Unseal
from scheduler import (
    ClaimWithReceipt,
    Effect,
    Misbehaved,
    Output,
    Provider,
    ReservePlace,
    RunJob,
    Send,
    Settle,
    WorkPhase,
)
from scheduler._provider import CLAIM_MARGIN_BLOCKS, RESERVE_WAIT_BLOCKS
from scheduler._requester_jobs import _DECLINED_RESERVED, _NO_PLACE, KEY_DUE_BLOCKS

from ..keys import key, pub
from ._harness import CHAIN, START_MS, Machine, Node, Sim, TxRequest
from .test_requester_declines import DeclineLoop
from .test_review3_provider import _USAGE, _bids, _Escrow, _provider, _spec


def _job(sim: Sim, *providers: Node) -> tuple[Node, bytes]:
    req = sim.add_requester()
    spec = sim.spec(req, redundancy=1, deadline_ms=60_000)
    job = sim.submit(req, spec, providers=list(providers))
    sim.run_jobs([job], limit_ms=400_000)
    return req, job


def test_with_its_place_reserved_the_key_comes_on_the_receipt_and_the_settle_pays() -> None:
    sim = Sim(11)
    bob = sim.add_provider(reputation=5)
    _, job = _job(sim, bob)
    done = sim.done[job]
    assert done.status == "verified" and done.output is not None
    escrow = sim.ledger.escrow(job)
    assert escrow is not None and escrow.is_done
    (payout,) = done.paid
    assert payout.provider == bob.pub and escrow.paid_to(bob.pub) == payout.amount
    # paid by the settle: no claim of its own, no key on the ledger (it came in an Unseal)
    assert bob.pub not in escrow.claimed and escrow.unsealed_by(bob.pub) == b""
    assert escrow.reserved == ((bob.pub, payout.amount),)


def test_without_a_reservation_the_key_comes_with_the_claim_as_before() -> None:
    sim = Sim(11)
    sim.reserves = False
    bob = sim.add_provider(reputation=5)
    _, job = _job(sim, bob)
    done = sim.done[job]
    assert done.status == "verified"
    escrow = sim.ledger.escrow(job)
    assert escrow is not None and bob.pub in escrow.claimed and escrow.unsealed_by(bob.pub)


class _Stiffing(Sim):
    """A requester that, holding the winner's key, settles paying a bidder of its own."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.sybil: Node | None = None

    def _settle(self, node: Node, fx: Settle) -> None:
        assert node.requester is not None and self.sybil is not None
        signed, _ = node.requester.job(fx.job_id).bids[self.sybil.pub]
        payout = ledger.Payout(self.sybil.pub, signed.message.price, signed.raw)
        self.ledger.submit(TxRequest(node.key, ledger.Settle(fx.job_id, (payout,))))


def test_a_requester_that_settles_to_its_own_bidder_after_the_key_still_pays_by_the_claim() -> None:
    sim = _Stiffing(12)
    bob = sim.add_provider(reputation=5, price_floor=1_000)
    sim.sybil = sim.add_provider(reputation=5, price_floor=5_000)  # bids, and loses
    req, job = _job(sim, bob, sim.sybil)
    done = sim.done[job]
    assert done.status == "verified" and done.output is not None  # it read BOB's output
    escrow = sim.ledger.escrow(job)
    assert escrow is not None and escrow.paid_to(sim.sybil.pub) > 0  # the stiffing settle
    assert req.requester is not None
    awards = {r.provider: r.award.message for r in req.requester.job(job).replicas}
    assert bob.pub in {p.provider for p in done.paid}  # a winner, its output read
    # BOB's reserved price stayed in the escrow; its claim took it
    price = awards[bob.pub].price
    assert bob.pub in escrow.claimed and escrow.paid_to(bob.pub) == price
    assert sim.ledger.state.account(bob.pub).balance == price
    assert escrow.is_done


class _ReserveThenDecline(DeclineLoop):
    """``DeclineLoop``'s fresh keys, each of which reserves its place with the award
    before it declines it: its price is then held in the escrow until the expiry."""

    def _carry_out(self, node: Node, role: Machine, fx: Effect) -> None:
        if role == "requester" and isinstance(fx, Send):
            msg = fx.message.message
            if isinstance(msg, Award) and msg.provider in self.ours:
                reserve = ledger.Reserve(msg.job_id, fx.message.raw)
                self.ledger.submit(TxRequest(self.ours[msg.provider], reserve))
        super()._carry_out(node, role, fx)


def test_a_key_that_reserves_its_place_and_declines_counts_against_the_budget() -> None:
    sim = _ReserveThenDecline(9, keys=1)
    req = sim.add_requester()
    honest = [sim.add_provider() for _ in range(3)]
    spec = sim.spec(req, redundancy=1, max_retries=3, deadline_ms=60_000)
    job = sim.submit(req, spec)
    sim.run_jobs([job], limit_ms=200_000)
    assert req.requester is not None
    replicas = req.requester.job(job).replicas
    reserved = [r for r in replicas if r.reason == _DECLINED_RESERVED]
    assert reserved and all(r.provider in sim.ours for r in reserved)
    # Each counts against the job's budget once the requester's ledger shows its place
    # (a decline arriving before the reservation's block counts from that block). A
    # provider's key goes only on a place of its own, so the places these keys hold cost
    # an honest provider at most its work: each that delivered was paid, or was failed
    # without blame for having no place left (its key never went).
    escrow = sim.ledger.escrow(job)
    assert escrow is not None
    honest_pubs = {h.pub for h in honest}
    for r in replicas:
        if r.provider in honest_pubs and r.result is not None:
            paid = escrow.paid_to(r.provider) == r.award.message.price
            assert paid or r.reason == _NO_PLACE, (r.state, r.reason)
    assert not [a for a in sim.attests if a.subject in honest_pubs and not a.positive]
    assert not [m for m in sim.misbehaved if m.peer in honest_pubs]


# --- the provider machine's rules, on an escrow as the ledger shows it ------------------


def _receipted(
    claim_by: int,
    *,
    reserved: bool,
    height: int = 100,
    hide: bool = False,
    escrows: dict[bytes, _Escrow] | None = None,
) -> tuple[Provider, _Escrow, list[Any]]:
    """A provider at ``height`` that ran and delivered a job of "requester" (its place in
    the escrow reserved at the award's price, or not), then got a sealed receipt with
    ``claim_by``: the provider, the escrow it sees, and the receipt's effects."""
    escrows = {} if escrows is None else escrows  # the provider's view of the ledger
    p = _provider(escrows)
    p.block(height, START_MS)
    s = _spec("requester", START_MS)
    escrow = escrows[s.id] = _Escrow(owner=pub(key("requester")))
    [bid] = _bids(p.receive(s.raw, START_MS))
    award = Award(
        s.id, pub(key("requester")), p.me, 0, bid.message.price, START_MS + 500_000, bid.id
    )
    fx = p.receive(protocol.sign(award, key("requester"), CHAIN).raw, START_MS + 10)
    assert [e for e in fx if isinstance(e, ReservePlace)]  # asked for as the run starts
    if reserved:
        escrow.reserved[p.me] = award.price
    out = Output(b"\x01" * 64, bytes(32), "ort/cpu/generic/extended")
    p.job_finished(s.id, START_MS + 100, outcome="ok", output=out, usage=_USAGE)
    res = p.work[s.id].result
    assert res is not None
    if hide:  # the ledger we see no longer shows the escrow when the receipt comes
        del escrows[s.id]
    m = res.message
    receipt = Receipt(s.id, pub(key("requester")), p.me, 0, res.id, m.output_commitment,
                      m.key_hash, 1, claim_by, START_MS + 100)  # fmt: skip
    signed = protocol.sign(receipt, key("requester"), CHAIN)
    return p, escrow, p.receive(signed.raw, START_MS + 200)


def _unseals(effects: list[Any]) -> list[Unseal]:
    return [
        e.message.message
        for e in effects
        if isinstance(e, Send) and isinstance(e.message.message, Unseal)
    ]


def _claims(effects: list[Any]) -> list[ClaimWithReceipt]:
    return [e for e in effects if isinstance(e, ClaimWithReceipt)]


def test_on_its_reserved_place_the_key_goes_on_the_receipt_and_the_claim_waits() -> None:
    p, escrow, fx = _receipted(100 + KEY_DUE_BLOCKS, reserved=True)
    assert _unseals(fx) and not _claims(fx)
    (work,) = p.work.values()
    assert work.keyed and work.phase == WorkPhase.RECEIPTED
    # the settle has not paid us by CLAIM_MARGIN_BLOCKS before claim_by: we claim
    look = {work.id: escrow}.get
    for h in range(101, 100 + KEY_DUE_BLOCKS - CLAIM_MARGIN_BLOCKS):
        assert not _claims(p.follow_ledger(h, look, START_MS + h)), h
    assert _claims(p.follow_ledger(100 + KEY_DUE_BLOCKS - CLAIM_MARGIN_BLOCKS, look, START_MS))


def test_paid_by_the_settle_it_never_claims() -> None:
    p, escrow, _ = _receipted(100 + KEY_DUE_BLOCKS, reserved=True)
    (work,) = p.work.values()
    assert work.award is not None
    escrow.paid[p.me] = work.award.message.price
    escrow.is_open = False
    effects = p.follow_ledger(101, {work.id: escrow}.get, START_MS + 300)
    assert not _claims(effects) and work.id not in p.work  # closed, paid


def test_settled_without_paying_us_we_claim_our_reserved_price_at_once() -> None:
    p, escrow, _ = _receipted(100 + KEY_DUE_BLOCKS, reserved=True)
    (work,) = p.work.values()
    escrow.is_open = False  # settled, paying others; our price still held
    effects = p.follow_ledger(101, {work.id: escrow}.get, START_MS + 300)
    assert _claims(effects) and work.id in p.work and work.phase == WorkPhase.CLAIMED


def test_no_key_before_payment_when_the_receipts_claim_by_is_too_near_to_claim_in_time() -> None:
    # A requester giving a claim_by a block or two ahead would have the key at once and our
    # claim land past it: its reserved price then went back to it at the expiry.
    _, _, fx = _receipted(100 + CLAIM_MARGIN_BLOCKS, reserved=True)
    assert not _unseals(fx) and _claims(fx)


def test_no_early_key_when_the_escrow_expires_before_a_claim_could_land() -> None:
    # Review round 81, F1: a receipt a few blocks before the escrow's expiry (1200) with a
    # claim_by past it: the key went at once, the claim was due only past the expiry, and
    # the requester refunded the reserved price there. Claims close at the expiry.
    last = 1199  # the last block a claim lands in
    for height in (last - CLAIM_MARGIN_BLOCKS, last - 2, last - 1):
        _, _, fx = _receipted(1205, reserved=True, height=height)
        assert not _unseals(fx) and _claims(fx), height
    _, _, fx = _receipted(1205, reserved=True, height=last - CLAIM_MARGIN_BLOCKS - 1)
    assert _unseals(fx) and not _claims(fx)  # room enough: the key on the receipt


def test_without_a_reservation_no_key_goes_before_the_claim() -> None:
    p, escrow, fx = _receipted(100 + KEY_DUE_BLOCKS, reserved=False)
    assert not _unseals(fx) and not _claims(fx)
    (work,) = p.work.values()
    look = {work.id: escrow}.get
    effects = p.follow_ledger(100 + RESERVE_WAIT_BLOCKS - 1, look, START_MS + 300)
    assert not _unseals(effects) and not _claims(effects)
    effects = p.follow_ledger(100 + RESERVE_WAIT_BLOCKS, look, START_MS + 400)
    assert _claims(effects) and not _unseals(effects)


def test_a_receipt_on_an_escrow_our_ledger_does_not_show_claims_nothing() -> None:
    # Our ledger lags (the receipt came first): no claim, however long we wait for the
    # escrow, and no key. A claim is made only on an escrow seen covering our award.
    none: dict[bytes, _Escrow] = {}
    p, _, fx = _receipted(100 + KEY_DUE_BLOCKS, reserved=True, hide=True)
    (work,) = p.work.values()
    assert not work.covered and not _unseals(fx) and not _claims(fx)
    for h in range(101, 100 + KEY_DUE_BLOCKS + 2):  # past its claim_by: never shown
        effects = p.follow_ledger(h, none.get, START_MS + h)
        assert not _claims(effects) and not _unseals(effects), h
    # shown in time, with our place reserved: the key goes
    view: dict[bytes, _Escrow] = {}
    p, escrow, _ = _receipted(100 + KEY_DUE_BLOCKS, reserved=True, hide=True, escrows=view)
    (work,) = p.work.values()
    shown = 100 + KEY_DUE_BLOCKS - CLAIM_MARGIN_BLOCKS - 1  # the last block it may go early
    for h in range(101, shown):
        effects = p.follow_ledger(h, view.get, START_MS + h)
        assert not _claims(effects) and not _unseals(effects), h
    view[work.id] = escrow
    effects = p.follow_ledger(shown, view.get, START_MS + 500)
    assert _unseals(effects) and not _claims(effects)


def test_a_reservation_that_comes_while_we_wait_sends_the_key() -> None:
    p, escrow, _ = _receipted(100 + KEY_DUE_BLOCKS, reserved=False)
    (work,) = p.work.values()
    assert work.award is not None
    escrow.reserved[p.me] = work.award.message.price
    effects = p.follow_ledger(101, {work.id: escrow}.get, START_MS + 300)
    assert _unseals(effects) and not _claims(effects)
    # a reservation at another price (another award of ours) is not ours to rely on
    p, escrow, _ = _receipted(100 + KEY_DUE_BLOCKS, reserved=False)
    (work,) = p.work.values()
    escrow.reserved[p.me] = 1
    effects = p.follow_ledger(101, {work.id: escrow}.get, START_MS + 300)
    assert not _unseals(effects)


def test_an_award_on_an_escrow_with_no_place_left_is_declined_without_blame() -> None:
    escrows: dict[bytes, _Escrow] = {}
    p = _provider(escrows)
    p.block(100, START_MS)
    s = _spec("requester", START_MS)
    escrow = escrows[s.id] = _Escrow(owner=pub(key("requester")), max_payees=2)
    escrow.reserved = {b"\x01" * 32: 1, b"\x02" * 32: 1}  # keys that reserved, then left
    [bid] = _bids(p.receive(s.raw, START_MS))
    price, deadline = bid.message.price, START_MS + 500_000
    award = Award(s.id, pub(key("requester")), p.me, 0, price, deadline, bid.id)
    fx = p.receive(protocol.sign(award, key("requester"), CHAIN).raw, START_MS + 10)
    assert not [e for e in fx if isinstance(e, (RunJob, ReservePlace, Misbehaved))]
    (nobid,) = [e.message.message for e in fx if isinstance(e, Send)]
    assert isinstance(nobid, NoBid) and "no place" in nobid.detail


def test_who_may_still_be_paid_from_a_closed_escrow() -> None:
    """``still_payable``: what is said about a provider on the ledger waits while the
    settled escrow holds its reserved price and it holds our receipt (it may claim)."""
    a, b, c = b"\x0a" * 32, b"\x0b" * 32, b"\x0c" * 32
    settled = ledger.Escrow(
        b"\x01" * 32, 3_000, 2_000, 10, 50, 1_000, 3,
        status=ledger.EscrowStatus.SETTLED, paid=((c, 1_000),),
        reserved=((a, 1_000), (b, 1_000), (c, 1_000)),
    )  # fmt: skip
    job: Any = type("J", (), {"replicas": [_Rep(a, True), _Rep(b, False)]})()
    assert scheduler.still_payable(job, settled, 20) == {a}  # b holds no receipt; c paid
    assert scheduler.still_payable(None, settled, 20) == {a, b}  # unknown: any reserved
    assert scheduler.still_payable(job, settled, 49) == {a}
    assert scheduler.still_payable(job, settled, 50) == frozenset()  # expired: no claim
    opened = dataclasses.replace(settled, status=ledger.EscrowStatus.OPEN)
    assert scheduler.still_payable(job, opened, 20) == frozenset()  # not closed yet
    empty = dataclasses.replace(settled, remaining=0, reserved=((c, 1_000),))
    assert scheduler.still_payable(None, empty, 20) == frozenset()


@dataclasses.dataclass
class _Rep:
    provider: bytes
    receipted: bool

    @property
    def receipt(self) -> object:
        return object() if self.receipted else None
