"""Review round 62, F1 (its trigger): an award whose deadline came a few hundred
milliseconds after it was run and aborted at the provider's next heartbeat, its slot
freed for the next such award, so one funded key kept every slot running work it never
paid for (escrows refunded at expiry). An award leaving less time than our estimate of
the run, from its arrival, is declined now: an honest one leaves at least that."""

from __future__ import annotations

from scheduler import RunJob

from ._harness import START_MS
from .test_mutants_provider import _award, _bid_on, _setup


def _awarded(left_after_estimate_ms: int) -> list[object]:
    """The effects of an award arriving 10 ms after our bid whose deadline leaves our
    estimate of the run plus ``left_after_estimate_ms``."""
    p, escrows = _setup()
    signed, bid = _bid_on(p, escrows)
    run_ms = bid.message.est_finish_ms - START_MS - signed.message.bid_window_ms
    now = START_MS + 10
    deadline = now + run_ms + left_after_estimate_ms
    assert deadline < signed.message.deadline_ms
    return p.receive(_award(signed.id, bid, deadline_ms=deadline), now)


def test_an_award_leaving_less_than_our_estimate_is_declined_not_run() -> None:
    fx = _awarded(-1)
    assert not [e for e in fx if isinstance(e, RunJob)]  # the tree before: run, then aborted


def test_an_award_leaving_our_estimate_runs() -> None:
    assert [e for e in _awarded(0) if isinstance(e, RunJob)]


def test_a_late_award_ending_at_our_estimated_finish_is_declined() -> None:
    # Round 64, R64-1: the bid is awardable until its expiry, 5 s past its estimated
    # finish; an award made late with its deadline at that finish passed the rule and
    # left the run a few milliseconds. The time left is measured from the award now.
    p, escrows = _setup()
    signed, bid = _bid_on(p, escrows)
    late = bid.message.est_finish_ms - 100
    fx = p.receive(_award(signed.id, bid, deadline_ms=bid.message.est_finish_ms), late)
    assert not [e for e in fx if isinstance(e, RunJob)]  # 64fe64c: run, aborted at +250 ms
