"""Requester rules of ``fill`` (scheduler/_requester_awards.py) the mutation run
(scripts/mutate.py) found unpinned, the machine driven by hand with messages signed here:
while every replica a job wants is live, a result delivered compares no outputs (they are
compared when the verdict is taken); and a job announced again awards nothing before its
new bid window ends, even when a replica's output opens meanwhile."""

from __future__ import annotations

from protocol import Award, NoBid, sign
from scheduler import (
    JobPhase,
    ReplicaState,
    Send,
    TimerKey,
    TimerKind,
)

from ._harness import CHAIN, sealed_result
from .test_requester_pinned import _hand_bid, _of, _Setup
from .test_review58_bids import _deliver, three_veterans_running


def test_results_delivered_while_every_wanted_replica_runs_compare_nothing() -> None:
    """Two of three veterans' outputs in, and they disagree, the third replica running:
    nothing is awarded, so nothing is ranked, and the outputs are not compared yet."""
    req, job_id, veterans, compares = three_veterans_running(40, 9)
    job = req.job(job_id)
    assert len(job.live()) == 3 and job.can_award()  # a spare award left in the budget
    _deliver(req, veterans[0], job_id, b"one")
    _deliver(req, veterans[1], job_id, b"two")
    assert [r.state for r in job.replicas].count(ReplicaState.RUNNING) == 1
    assert compares == []  # the tree with bids ranked on each change: one compare
    # the third output: now the verdict is taken, and compares
    _deliver(req, veterans[2], job_id, b"one")
    assert compares


def test_a_job_announced_again_awards_nothing_before_its_window_ends() -> None:
    """Redundancy 2: one replica commits its result, the other declines, and no bid is
    left: the job is announced again. The committed replica's output opens (its key came)
    while a newcomer's bid is in: the bid waits for the window's end, as every bid of an
    announcement does."""
    s = _Setup()
    spec = s.spec(redundancy=2, max_retries=2)
    job_id, _ = s.req.submit(spec, s.sim.now)
    first, second, late = s.sim.key(), s.sim.key(), s.sim.key()
    now = s.sim.now + 1
    for k in (first, second):
        s.req.receive(_hand_bid(job_id, k, 100, expires_ms=now + 60_000), now)
    s.req.escrow_locked(job_id, now + 1)
    now += spec.bid_window_ms
    s.req.timer(TimerKey(TimerKind.BIDS, job_id), now)
    job = s.req.job(job_id)
    assert [r.state for r in job.replicas] == [ReplicaState.RUNNING] * 2
    by_key = {r.provider: r.index for r in job.replicas}
    result, sealed, unseal = sealed_result(
        job_id, first, by_key[bytes(first.verify_key)], b"output"
    )
    s.req.receive(result, now + 10, output=sealed)
    declined = NoBid(job_id, bytes(second.verify_key), "busy", "full", 1_000)
    s.req.receive(sign(declined, second, CHAIN).raw, now + 20)
    assert job.phase == JobPhase.COLLECTING  # announced again
    s.req.receive(_hand_bid(job_id, late, 100, expires_ms=now + 60_000), now + 30)
    fx = s.req.receive(unseal, now + 40)  # the committed replica's key: its output opens
    assert job.replicas[by_key[bytes(first.verify_key)]].state == ReplicaState.DELIVERED
    assert not [e for e in _of(fx, Send) if isinstance(e.message.message, Award)]
    assert job.phase == JobPhase.COLLECTING and len(job.live()) == 1
    # the window's end awards the bid
    fx = s.req.timer(TimerKey(TimerKind.BIDS, job_id), now + 20 + 2 * spec.bid_window_ms)
    awards = [e for e in _of(fx, Send) if isinstance(e.message.message, Award)]
    assert [e.peer for e in awards] == [bytes(late.verify_key)]
