"""Provider rules the mutation run (scripts/mutate.py) found unpinned, the machine driven by
hand with awards and escrows made here: copies of an announcement inside its bid window
are dropped; an award is taken only for a live bid of ours that it matches, once, while a
slot is free, and runs only on an open escrow shown before the award's deadline (a held
one is declined at that deadline); a run that ends without an output closes its work;
ledger events for work it does not hold change nothing, and work that runs is not closed
under its sandbox by its escrow closing."""

from __future__ import annotations

from typing import Any

import protocol
from protocol import Award, Bid, Heartbeat, JobSpec, NoBid, Usage
from scheduler import (
    AbortJob,
    Misbehaved,
    NotifyUser,
    Provider,
    RunJob,
    Send,
    SetTimer,
    TimerKey,
    TimerKind,
    UserEvent,
    WorkPhase,
)

from ..keys import key, pub
from ._harness import CHAIN, START_MS
from .test_review3_provider import _bids, _Escrow, _provider, _spec

REQUESTER = pub(key("requester"))
USAGE = Usage(cpu_ms=1, wall_ms=1, peak_memory_kb=1, gpu_ms=0)


def _award(
    job_id: bytes,
    bid: protocol.Signed[Bid],
    *,
    price: int | None = None,
    bid_hash: bytes | None = None,
    replica: int = 0,
    deadline_ms: int = START_MS + 500_000,
    provider: bytes | None = None,
) -> bytes:
    """The requester's signed Award of ``bid`` (its fields as given, else the bid's)."""
    award = Award(
        job_id=job_id,
        requester=REQUESTER,
        provider=bid.message.provider if provider is None else provider,
        replica=replica,
        price=bid.message.price if price is None else price,
        deadline_ms=deadline_ms,
        bid_hash=bid.id if bid_hash is None else bid_hash,
    )
    return protocol.sign(award, key("requester"), CHAIN).raw


def _sends(effects: list[Any], kind: type) -> list[Any]:
    return [
        e.message.message
        for e in effects
        if isinstance(e, Send) and isinstance(e.message.message, kind)
    ]


def _runs(effects: list[Any]) -> list[RunJob]:
    return [e for e in effects if isinstance(e, RunJob)]


def _bid_on(
    p: Provider, escrows: dict[bytes, _Escrow] | None, now: int = START_MS
) -> tuple[protocol.Signed[JobSpec], protocol.Signed[Bid]]:
    """A job of "requester" announced to ``p`` (its escrow locked when ``escrows`` is
    given), and ``p``'s bid for it."""
    signed = _spec("requester", now)
    if escrows is not None:
        escrows[signed.id] = _Escrow(owner=REQUESTER)
    [bid] = _bids(p.receive(signed.raw, now))
    return signed, bid


def _setup() -> tuple[Provider, dict[bytes, _Escrow]]:
    escrows: dict[bytes, _Escrow] = {}
    p = _provider(escrows)
    p.block(100, START_MS)
    return p, escrows


def test_a_copy_inside_the_bid_window_is_dropped_and_one_at_its_end_is_bid_on_again() -> None:
    p, escrows = _setup()
    signed, bid = _bid_on(p, escrows)
    window = signed.message.bid_window_ms
    assert p.receive(signed.raw, START_MS + window - 1) == []  # a copy (pubsub and direct)
    # the window is over: an announcement again, bid on afresh
    [again] = _bids(p.receive(signed.raw, START_MS + window))
    assert again.id != bid.id
    assert p.get(signed.id).bid.id == again.id


def test_an_award_for_no_work_of_ours_naming_another_provider_is_misbehaviour() -> None:
    p, escrows = _setup()
    other = _provider(escrows, me="other")
    signed, bid = _bid_on(other, escrows)  # another provider's bid: no work of ours
    fx = p.receive(_award(signed.id, bid), START_MS + 10)
    [blame] = [e for e in fx if isinstance(e, Misbehaved)]
    assert [type(e) for e in fx] == [Misbehaved] and blame.peer == REQUESTER
    # naming us, it is for a bid of ours that expired: a NoBid says so, nothing blamed
    fx = p.receive(_award(signed.id, bid, provider=p.me), START_MS + 20)
    [nobid] = _sends(fx, NoBid)
    assert nobid.reason == "busy" and "no live bid" in nobid.detail
    assert not [e for e in fx if isinstance(e, Misbehaved)]
    assert p.work == {}


def test_an_award_that_does_not_match_our_bid_is_misbehaviour_and_runs_nothing() -> None:
    p, escrows = _setup()
    signed, bid = _bid_on(p, escrows)
    price = bid.message.price
    for raw in (
        _award(signed.id, bid, price=price - 1),  # less than we asked
        _award(signed.id, bid, bid_hash=bytes(32)),  # a bid we never made
    ):
        fx = p.receive(raw, START_MS + 10)
        assert [type(e) for e in fx] == [Misbehaved]
        assert p.get(signed.id).phase == WorkPhase.BIDDING and p.active == 0
    assert _runs(p.receive(_award(signed.id, bid), START_MS + 20))  # ours, as bid: runs


def test_an_award_for_work_already_awarded_is_taken_once() -> None:
    p, escrows = _setup()
    signed, bid = _bid_on(p, escrows)
    raw = _award(signed.id, bid)
    assert _runs(p.receive(raw, START_MS + 10))
    assert p.receive(raw, START_MS + 20) == []  # the same award again: nothing
    fx = p.receive(_award(signed.id, bid, replica=1), START_MS + 30)
    assert [type(e) for e in fx] == [Misbehaved]  # a second, different award
    assert p.get(signed.id).phase == WorkPhase.RUNNING and p.active == 1


def test_an_award_is_taken_up_to_its_bids_expiry_and_declined_after_it() -> None:
    p, escrows = _setup()
    late, late_bid = _bid_on(p, escrows)
    expires = late_bid.message.expires_ms
    fx = p.receive(_award(late.id, late_bid), expires + 1)
    [nobid] = _sends(fx, NoBid)
    assert nobid.reason == "busy" and "expired" in nobid.detail
    assert not _runs(fx) and late.id not in p.work
    # a declined award sets no heartbeat: nothing of it is left
    assert not [e for e in fx if isinstance(e, SetTimer)]
    on_time, on_time_bid = _bid_on(p, escrows)
    at = on_time_bid.message.expires_ms
    assert _runs(p.receive(_award(on_time.id, on_time_bid), at))


def test_an_award_while_every_slot_is_taken_is_declined_at_once() -> None:
    p, escrows = _setup()  # max_concurrency 1
    first, first_bid = _bid_on(p, escrows)
    unfunded, unfunded_bid = _bid_on(p, None)  # no escrow seen yet: would be held
    assert _runs(p.receive(_award(first.id, first_bid), START_MS + 10))
    fx = p.receive(_award(unfunded.id, unfunded_bid), START_MS + 20)
    [nobid] = _sends(fx, NoBid)
    assert nobid.reason == "busy" and "slots in use" in nobid.detail
    assert unfunded.id not in p.work and p.active == 1


def test_a_held_award_whose_escrow_shows_once_the_slots_filled_is_declined() -> None:
    p, escrows = _setup()  # max_concurrency 1
    held, held_bid = _bid_on(p, None)
    other, other_bid = _bid_on(p, escrows)
    p.receive(_award(held.id, held_bid), START_MS + 10)
    assert p.get(held.id).phase == WorkPhase.AWARDED  # no escrow seen: held
    assert _runs(p.receive(_award(other.id, other_bid), START_MS + 20))
    escrows[held.id] = _Escrow(owner=REQUESTER)  # its escrow in the next block
    fx = p.follow_ledger(101, escrows.get, START_MS + 1_000)
    assert not _runs(fx)
    [nobid] = _sends(fx, NoBid)
    assert "slots in use" in nobid.detail
    assert held.id not in p.work and p.active == 1


def test_a_held_award_runs_on_an_escrow_shown_with_our_estimate_left_only() -> None:
    # Round 65, H3: held for its escrow, an award ran whatever time was left once the
    # escrow came (only a deadline already passed was declined): a requester timing its
    # lock had the run aborted unpaid. It starts only with our estimate of the run left.
    p, escrows = _setup()
    on_time, on_time_bid = _bid_on(p, None)
    run_ms = on_time_bid.message.est_finish_ms - on_time_bid.message.expires_ms
    run_ms += p.config.bid_validity_ms
    deadline = START_MS + 5_000
    p.receive(_award(on_time.id, on_time_bid, deadline_ms=deadline), START_MS + 10)
    assert p.get(on_time.id).phase == WorkPhase.AWARDED
    escrows[on_time.id] = _Escrow(owner=REQUESTER)
    assert _runs(p.follow_ledger(101, escrows.get, deadline - run_ms))
    # another provider, its escrow shown a millisecond later than that
    q, q_escrows = _setup()
    late, late_bid = _bid_on(q, None)
    q.receive(_award(late.id, late_bid, deadline_ms=deadline), START_MS + 10)
    q_escrows[late.id] = _Escrow(owner=REQUESTER)
    fx = q.follow_ledger(101, q_escrows.get, deadline - run_ms + 1)
    assert not _runs(fx)
    [nobid] = _sends(fx, NoBid)
    assert "less than our estimate" in nobid.detail
    assert late.id not in q.work


def test_a_held_award_whose_escrow_shows_closed_is_declined() -> None:
    p, escrows = _setup()
    signed, bid = _bid_on(p, None)
    p.receive(_award(signed.id, bid), START_MS + 10)
    escrows[signed.id] = _Escrow(owner=REQUESTER, is_open=False)  # refunded already
    fx = p.follow_ledger(101, escrows.get, START_MS + 1_000)
    assert not _runs(fx) and not [e for e in fx if isinstance(e, Misbehaved)]
    [nobid] = _sends(fx, NoBid)
    assert nobid.reason == "busy" and "escrow is closed" in nobid.detail
    assert signed.id not in p.work


def test_a_held_award_told_its_escrow_closed_is_declined() -> None:
    p, _ = _setup()
    signed, bid = _bid_on(p, None)
    p.receive(_award(signed.id, bid), START_MS + 10)
    fx = p.escrow_closed(signed.id, START_MS + 1_000)
    [nobid] = _sends(fx, NoBid)
    assert nobid.reason == "busy" and "escrow is closed" in nobid.detail
    assert not [e for e in fx if isinstance(e, NotifyUser)]  # declined, not closed as work
    assert signed.id not in p.work


def test_a_held_award_is_declined_at_its_deadline_by_its_heartbeat() -> None:
    p, _ = _setup()
    deadline = START_MS + 5_000
    signed, bid = _bid_on(p, None)
    p.receive(_award(signed.id, bid, deadline_ms=deadline), START_MS + 10)
    beat = TimerKey(TimerKind.HEARTBEAT, signed.id)
    fx = p.timer(beat, deadline - 1)  # held: alive, not started
    [hb] = _sends(fx, Heartbeat)
    assert hb.progress_permille == 0 and signed.id in p.work
    fx = p.timer(beat, deadline)
    [nobid] = _sends(fx, NoBid)
    assert "no escrow on the ledger by its deadline" in nobid.detail
    assert not _sends(fx, Heartbeat) and signed.id not in p.work


def test_a_run_that_ends_without_an_output_closes_its_work() -> None:
    p, escrows = _setup()
    signed, bid = _bid_on(p, escrows)
    assert _runs(p.receive(_award(signed.id, bid), START_MS + 10))
    fx = p.job_finished(signed.id, START_MS + 500, outcome="crashed", output=None, usage=USAGE)
    closed = [e for e in fx if isinstance(e, NotifyUser) and e.event == UserEvent.CLOSED]
    assert [e.detail for e in closed] == ["run ended: crashed"]
    assert signed.id not in p.work and p.active == 0
    assert not [e for e in fx if isinstance(e, SetTimer)]  # nothing to resend


def test_ledger_events_for_work_it_does_not_hold_are_ignored() -> None:
    p, _ = _setup()
    unknown = bytes(32)
    assert p.paid(unknown, 5, START_MS) == []
    assert p.escrow_closed(unknown, START_MS) == []
    assert p.work == {}


def test_running_work_whose_escrow_closes_unpaid_ends_its_run() -> None:
    """Closed while its sandbox runs, with no AbortJob, its slot would be free for another
    run beside it (the pattern of review round 56, F1); kept, the run held its slot to its
    end though nothing could pay it. It ends at once (AbortJob) and the work closes."""
    p, escrows = _setup()
    signed, bid = _bid_on(p, escrows)
    assert _runs(p.receive(_award(signed.id, bid), START_MS + 10))
    escrows[signed.id].is_open = False  # settled, paying us nothing, as we run
    fx = p.follow_ledger(101, escrows.get, START_MS + 200)
    assert AbortJob(signed.id) in fx
    closed = [e for e in fx if isinstance(e, NotifyUser) and e.event == UserEvent.CLOSED]
    assert [e.detail for e in closed] == ["the job's escrow closed while it ran, without paying us"]
    assert signed.id not in p.work and p.active == 0


def test_an_award_declined_on_its_escrow_sets_no_heartbeat_and_one_that_runs_does() -> None:
    p, escrows = _setup()
    closed, closed_bid = _bid_on(p, escrows)
    escrows[closed.id].is_open = False  # refunded before the award came
    fx = p.receive(_award(closed.id, closed_bid), START_MS + 10)
    [nobid] = _sends(fx, NoBid)
    assert "escrow is closed" in nobid.detail
    assert not [e for e in fx if isinstance(e, SetTimer)] and closed.id not in p.work
    running, running_bid = _bid_on(p, escrows)
    fx = p.receive(_award(running.id, running_bid), START_MS + 20)
    assert _runs(fx)
    beat = TimerKey(TimerKind.HEARTBEAT, running.id)
    assert [e.key for e in fx if isinstance(e, SetTimer)] == [beat]
