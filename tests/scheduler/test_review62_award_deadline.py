"""Review round 62, F1 (its trigger): an award whose deadline came a few hundred
milliseconds after it was run and aborted at the provider's next heartbeat, its slot
freed for the next such award, so one funded key kept every slot running work it never
paid for (escrows refunded at expiry). An award ending before our estimated finish is
declined now: an honest one leaves at least that."""

from __future__ import annotations

import protocol
from protocol import Award, Bid
from scheduler import RunJob

from ..keys import key, pub
from ._harness import CHAIN, START_MS
from .test_review3_provider import _bids, _Escrow, _provider, _spec

REQUESTER = pub(key("requester"))


def _award(job_id: bytes, bid: protocol.Signed[Bid], deadline_ms: int) -> bytes:
    award = Award(
        job_id=job_id,
        requester=REQUESTER,
        provider=bid.message.provider,
        replica=0,
        price=bid.message.price,
        deadline_ms=deadline_ms,
        bid_hash=bid.id,
    )
    return protocol.sign(award, key("requester"), CHAIN).raw


def _awarded(deadline_after_estimate_ms: int) -> list[object]:
    escrows: dict[bytes, _Escrow] = {}
    p = _provider(escrows)
    p.block(100, START_MS)
    signed = _spec("requester", START_MS)
    escrows[signed.id] = _Escrow(owner=REQUESTER)
    [bid] = _bids(p.receive(signed.raw, START_MS))
    deadline = bid.message.est_finish_ms + deadline_after_estimate_ms
    assert deadline < signed.message.deadline_ms
    return p.receive(_award(signed.id, bid, deadline), START_MS + 10)


def test_an_award_ending_before_our_estimate_is_declined_not_run() -> None:
    fx = _awarded(-1)
    assert not [e for e in fx if isinstance(e, RunJob)]  # the tree before: run, then aborted


def test_an_award_leaving_our_estimate_runs() -> None:
    assert [e for e in _awarded(0) if isinstance(e, RunJob)]
