"""Review round 56, F1: a provider's work on a job started its count of what the escrow
paid it at 0, and was compared with all the escrow ever paid it. Once paid for a job, the
provider bid on the job's next announcement, ran the award, and the next block closed that
work "paid" while it ran, with no abort: its slot freed, the run went on in the sandbox,
never to be paid (the ledger takes one claim a provider). One payment bought a requester
unpaid runs past the provider's ``max_concurrency`` until the job's deadline. Now a job
whose escrow paid us is not bid on and its awards are declined, and work closed by a
payment while it runs ends its run."""

from __future__ import annotations

from typing import Any

import protocol
from protocol import Award, Bid, JobSpec, NoBid
from scheduler import (
    AbortJob,
    ClaimWithReceipt,
    NotifyUser,
    Provider,
    RunJob,
    Send,
    UserEvent,
    WorkPhase,
)

from ..keys import key, pub
from ._harness import CHAIN, START_MS
from .test_review3_provider import _bids, _Escrow, _provider, _spec

REQUESTER = pub(key("requester"))


def _award(job_id: bytes, bid: protocol.Signed[Bid], replica: int = 0) -> bytes:
    award = Award(
        job_id=job_id,
        requester=REQUESTER,
        provider=bid.message.provider,
        replica=replica,
        price=bid.message.price,
        deadline_ms=START_MS + 500_000,
        bid_hash=bid.id,
    )
    return protocol.sign(award, key("requester"), CHAIN).raw


def _sends(effects: list[Any], kind: type) -> list[Any]:
    return [
        e.message.message
        for e in effects
        if isinstance(e, Send) and isinstance(e.message.message, kind)
    ]


def _running() -> tuple[Provider, dict[bytes, _Escrow], protocol.Signed[JobSpec], Any]:
    """A provider running its award of a job on a covering escrow: it, the escrows, the
    job, our bid."""
    escrows: dict[bytes, _Escrow] = {}
    p = _provider(escrows)
    p.block(100, START_MS)
    signed = _spec("requester", START_MS)
    escrows[signed.id] = _Escrow(owner=REQUESTER)
    [bid] = _bids(p.receive(signed.raw, START_MS))
    fx = p.receive(_award(signed.id, bid), START_MS + 10)
    assert [e for e in fx if isinstance(e, RunJob)]
    return p, escrows, signed, bid


def test_a_job_whose_escrow_paid_us_is_neither_bid_on_nor_run_again() -> None:
    p, escrows, signed, bid = _running()
    escrow = escrows[signed.id]
    # the run is delivered, receipted and claimed; the ledger pays the claim and the
    # escrow stays open (its owner never settles)
    escrow.paid[p.me] = bid.message.price
    fx = p.follow_ledger(101, escrows.get, START_MS + 200)
    assert p.active == 0 and signed.id not in p.work
    # the same job announced again: no bid (the tree before: a bid, an award run, and the
    # next block closed that run "paid" with no abort, one run after another)
    later = START_MS + 2_000
    fx = p.receive(signed.raw, later)
    assert not _sends(fx, Bid)
    assert signed.id not in p.work


def test_an_award_held_for_an_escrow_that_then_shows_it_paid_us_is_declined() -> None:
    escrows: dict[bytes, _Escrow] = {}
    p = _provider(escrows)
    p.block(100, START_MS)
    signed = _spec("requester", START_MS)
    [bid] = _bids(p.receive(signed.raw, START_MS))  # no escrow seen yet: a bid
    p.receive(_award(signed.id, bid), START_MS + 10)
    assert p.get(signed.id).phase == WorkPhase.AWARDED  # held for its escrow
    escrows[signed.id] = _Escrow(owner=REQUESTER, paid={p.me: bid.message.price})
    fx = p.follow_ledger(101, escrows.get, START_MS + 200)
    assert not [e for e in fx if isinstance(e, RunJob)]  # the tree before: run
    [nobid] = _sends(fx, NoBid)
    assert "paid us already" in nobid.detail
    assert signed.id not in p.work and p.active == 0


def test_work_paid_while_it_runs_ends_its_run() -> None:
    p, escrows, signed, bid = _running()
    escrow = escrows[signed.id]
    assert p.get(signed.id).phase == WorkPhase.RUNNING
    escrow.paid[p.me] = bid.message.price  # its owner settles, paying us, as we run
    fx = p.follow_ledger(101, escrows.get, START_MS + 200)
    assert AbortJob(signed.id) in fx  # the tree before: closed, the run left going
    assert [e for e in fx if isinstance(e, NotifyUser) and e.event == UserEvent.PAID]
    assert not [e for e in fx if isinstance(e, ClaimWithReceipt)]
    assert p.active == 0
