"""The provider's mends of the round-3 review (h24): F5 (a sealed receipt whose claim_by
cannot be met is refused, no claim), F2 (a provider still syncing judges escrow expiries
against the best head it heard of), F1 (a requester seen locking once does not get
unbounded bids for unfunded jobs), F7 (a node never bids on its own announcements)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import protocol
from protocol import (
    Award,
    Bid,
    InputRef,
    JobSpec,
    Receipt,
    Requirements,
    Usage,
    VerificationPolicy,
)
from scheduler import (
    ClaimWithReceipt,
    Misbehaved,
    Output,
    Provider,
    ProviderConfig,
    Send,
    WorkPhase,
)
from scheduler._provider import CLAIM_BY_SLACK_BLOCKS, RESERVE_WAIT_BLOCKS
from scheduler._provider_bids import (
    MAX_ESCROW_AHEAD_BLOCKS,
    MAX_UNFUNDED_BIDS_ALL,
    MAX_UNFUNDED_BIDS_PER_FUNDER,
)
from scheduler._requester_jobs import KEY_DUE_BLOCKS

from ..keys import key, pub
from ._harness import CHAIN, CLASS, START_MS

_USAGE = Usage(cpu_ms=1, wall_ms=1, peak_memory_kb=1, gpu_ms=0)


@dataclass
class _Escrow:
    owner: bytes
    locked: int = 4 * 10**6  # every payee at its most (scheduler.uncovered)
    remaining: int = 4 * 10**6
    claim_height: int = 1190
    expiry_height: int = 1200
    max_per_payee: int = 10**6
    max_payees: int = 4
    is_open: bool = True
    paid: dict[bytes, int] = field(default_factory=dict)
    reserved: dict[bytes, int] = field(default_factory=dict)

    def paid_to(self, p: bytes) -> int:
        return self.paid.get(p, 0)

    def unsealed_by(self, p: bytes) -> bytes:
        return b""

    def reserved_for(self, p: bytes) -> int:
        return self.reserved.get(p, 0)

    @property
    def places(self) -> frozenset[bytes]:
        return frozenset([*self.paid, *self.reserved])

    def claimable_by(self, p: bytes) -> bool:
        return self.is_open or (self.reserved_for(p) > 0 and self.paid_to(p) == 0)


_nonce = 0


def _spec(who: str, now: int, **fields: Any) -> protocol.Signed[JobSpec]:
    global _nonce
    _nonce += 1
    spec = JobSpec(
        requester=pub(key(who)),
        nonce=_nonce.to_bytes(16, "big"),
        runtime="onnx",
        model_hash=bytes(32),
        model_size=2048,
        inputs=(InputRef(name="x", hash=bytes(32), size=512),),
        requirements=Requirements(
            device="cpu",
            execution_provider="CPUExecutionProvider",
            min_memory_mb=256,
            capability_class=CLASS,
        ),
        graph_opt_level="extended",
        threads=1,
        max_price=10_000,
        redundancy=1,
        max_retries=2,
        verification=VerificationPolicy(mode="exact", rtol_e9=0, atol_e9=0, spot_check_permille=0),
        created_ms=now,
        bid_window_ms=300,
        deadline_ms=now + 600_000,
        escrow_expiry_height=1200,
    )
    return protocol.sign(replace(spec, **fields), key(who), CHAIN)


def _provider(escrows: dict[bytes, _Escrow] | None = None, me: str = "provider") -> Provider:
    table = escrows if escrows is not None else {}
    return Provider(
        ProviderConfig(
            key=key(me),
            chain_id=CHAIN,
            capability_classes=(CLASS,),
            escrow_of=lambda job_id: table.get(job_id),
        )
    )


def _bids(effects: list[Any]) -> list[protocol.Signed[Bid]]:
    return [
        e.message for e in effects if isinstance(e, Send) and isinstance(e.message.message, Bid)
    ]


def _delivered(
    claim_by: int, height: int = 100, receipt_height: int | None = None
) -> tuple[Provider, list[Any]]:
    """A provider at ``height`` that ran and delivered a job on a covering escrow (expiry
    1200), then got a sealed receipt with ``claim_by`` (at ``receipt_height``, if given);
    the effects of that receipt."""
    escrows: dict[bytes, _Escrow] = {}
    p = _provider(escrows)
    p.block(height, START_MS)
    return p, _delivered_on(p, escrows, claim_by, receipt_height)


def _delivered_on(
    p: Provider, escrows: dict[bytes, _Escrow], claim_by: int, receipt_height: int | None = None
) -> list[Any]:
    """``p`` runs and delivers a job of "requester" on a covering escrow, then gets a
    sealed receipt with ``claim_by``; the effects of that receipt."""
    s = _spec("requester", START_MS)
    escrows[s.id] = _Escrow(owner=pub(key("requester")))
    [bid] = _bids(p.receive(s.raw, START_MS))
    award = Award(
        job_id=s.id,
        requester=pub(key("requester")),
        provider=p.me,
        replica=0,
        price=bid.message.price,
        deadline_ms=START_MS + 500_000,
        bid_hash=bid.id,
    )
    p.receive(protocol.sign(award, key("requester"), CHAIN).raw, START_MS + 10)
    output = Output(b"\x01" * 64, bytes(32), "ort/cpu/generic/extended")
    p.job_finished(s.id, START_MS + 100, outcome="ok", output=output, usage=_USAGE)
    res = p.work[s.id].result
    assert res is not None
    receipt = Receipt(
        job_id=s.id,
        requester=pub(key("requester")),
        provider=p.me,
        replica=0,
        result_hash=res.id,
        output_commitment=res.message.output_commitment,
        key_hash=res.message.key_hash,
        at_once=1,
        claim_by=claim_by,
        received_ms=START_MS + 100,
    )
    if receipt_height is not None:
        p.block(receipt_height, START_MS + 150)
    return p.receive(protocol.sign(receipt, key("requester"), CHAIN).raw, START_MS + 200)


# --- F5 ------------------------------------------------------------------------------


def test_a_sealed_receipt_whose_claim_by_has_passed_is_refused_without_a_claim() -> None:
    for claim_by in (0, 99, 100):
        p, effects = _delivered(claim_by, height=100)
        assert not any(isinstance(e, ClaimWithReceipt) for e in effects), claim_by
        # No blame (round 4): an honest requester whose ledger lags ours sends one.
        assert not any(isinstance(e, Misbehaved) for e in effects), claim_by
        # The receipt is ignored; the work stays delivered (closed, the job could be
        # announced again and run again on one escrow: round 71, F3).
        assert next(iter(p.work.values())).phase == WorkPhase.DELIVERED


def test_a_sealed_receipt_whose_claim_by_is_absurdly_far_is_refused_without_a_claim() -> None:
    _, effects = _delivered(100 + KEY_DUE_BLOCKS + CLAIM_BY_SLACK_BLOCKS + 1, height=100)
    assert not any(isinstance(e, ClaimWithReceipt) for e in effects)
    assert any(isinstance(e, Misbehaved) for e in effects)


def test_an_honest_sealed_receipt_is_claimed_at_once_even_a_few_blocks_ahead() -> None:
    # (Claimed once our place is not reserved by RESERVE_WAIT_BLOCKS after the run began,
    # or at once when its claim_by is that close.)
    for claim_by in (101, 100 + KEY_DUE_BLOCKS, 100 + KEY_DUE_BLOCKS + CLAIM_BY_SLACK_BLOCKS):
        p, effects = _delivered(claim_by, height=100)
        effects += p.block(100 + RESERVE_WAIT_BLOCKS, START_MS)
        assert any(isinstance(e, ClaimWithReceipt) for e in effects), claim_by
        assert not any(isinstance(e, Misbehaved) for e in effects)
        assert next(iter(p.work.values())).phase == WorkPhase.CLAIMED


def test_a_sealed_receipt_a_block_before_the_escrow_expires_is_refused_without_a_claim() -> None:
    # Round 9, R9-2: its claim could only land at the expiry, refused there, dragging our
    # later transactions (an honest claim among them) with it.
    p, effects = _delivered(1199 + KEY_DUE_BLOCKS, receipt_height=1199)
    assert not any(isinstance(e, ClaimWithReceipt) for e in effects)
    assert not any(isinstance(e, Misbehaved) for e in effects)
    assert next(iter(p.work.values())).phase == WorkPhase.DELIVERED  # ignored (round 71, F3)
    _, effects = _delivered(1198 + KEY_DUE_BLOCKS, receipt_height=1198)  # lands at 1199
    assert any(isinstance(e, ClaimWithReceipt) for e in effects)


# --- F2 ------------------------------------------------------------------------------


def test_a_syncing_provider_does_not_blame_honest_requesters_for_far_escrows() -> None:
    head, local = 2_400_000, 5_000  # the chain is here; our ledger is still here
    p = _provider()
    p.block(local, START_MS)
    p.note_head(head)  # what the daemon tells it from its ledger's sources
    honest = _spec("honest", START_MS, escrow_expiry_height=head + 100)
    effects = p.receive(honest.raw, START_MS)
    assert not any(isinstance(e, Misbehaved) for e in effects), effects
    assert _bids(effects)
    # still absurd from the head: refused as before
    absurd = _spec("absurd", START_MS, escrow_expiry_height=head + MAX_ESCROW_AHEAD_BLOCKS + 1)
    assert any(isinstance(e, Misbehaved) for e in p.receive(absurd.raw, START_MS))


# --- F1 ------------------------------------------------------------------------------


def test_a_requester_seen_locking_once_gets_a_bounded_number_of_unfunded_bids() -> None:
    escrows: dict[bytes, _Escrow] = {}
    p = _provider(escrows)
    p.block(1, START_MS)
    now = START_MS
    first = _spec("attacker", now, bid_window_ms=1)
    escrows[first.id] = _Escrow(owner=pub(key("attacker")))
    assert _bids(p.receive(first.raw, now))  # one lock: a funder now
    bids = 0
    for _ in range(2_000):
        now += 1
        s = _spec("attacker", now, bid_window_ms=1)
        bids += len(_bids(p.receive(s.raw, now)))
    assert bids == MAX_UNFUNDED_BIDS_PER_FUNDER
    assert p._bids.unfunded_open == MAX_UNFUNDED_BIDS_PER_FUNDER
    assert len(p.work) == MAX_UNFUNDED_BIDS_PER_FUNDER + 1


def test_funders_together_stay_under_the_overall_unfunded_bound() -> None:
    escrows: dict[bytes, _Escrow] = {}
    p = _provider(escrows)
    p.block(1, START_MS)
    now = START_MS
    for i in range(MAX_UNFUNDED_BIDS_ALL // MAX_UNFUNDED_BIDS_PER_FUNDER + 4):
        who = f"funder{i}"
        s = _spec(who, now, bid_window_ms=1)
        escrows[s.id] = _Escrow(owner=pub(key(who)))
        p.receive(s.raw, now)
        for _ in range(MAX_UNFUNDED_BIDS_PER_FUNDER + 5):
            now += 1
            p.receive(_spec(who, now, bid_window_ms=1).raw, now)
    assert p._bids.unfunded_open == MAX_UNFUNDED_BIDS_ALL
    # a stranger is refused past the first bound; the counts come back as bids go
    assert not _bids(p.receive(_spec("stranger", now, bid_window_ms=1).raw, now))
    for work in list(p.work.values()):
        p._bids.drop(work)
        del p.work[work.id]
    assert p._bids.unfunded_open == 0 and p._bids.unfunded_open_of(pub(key("funder0"))) == 0


# --- F7 ------------------------------------------------------------------------------


def test_a_provider_never_bids_on_its_own_nodes_announcement() -> None:
    p = _provider(me="both")
    p.block(1, START_MS)
    own = _spec("both", START_MS)
    effects = p.receive(own.raw, START_MS)
    assert effects == []  # no bid, no NoBid, no misbehaviour
    assert not p.work
