"""Requester rules the mutation run (scripts/mutate.py) found unpinned, the machine driven
by hand with messages signed here (a stranger's bids, results and heartbeats): events for a
job it does not hold, or in a phase where they no longer apply, change nothing and raise
nothing; bids are bounded (price, expiry, one per provider, ``MAX_BIDS``); heartbeats and
results count only for the sender's running replica; the submit bounds, the early close of
the bid window and the probation replica each admit exactly their limit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

import nacl.signing
import pytest

from protocol import (
    Bid,
    Heartbeat,
    JobSpec,
    NoBid,
    sign,
)
from scheduler import (
    JobDone,
    JobPhase,
    JobRejected,
    JobStatus,
    Misbehaved,
    NotifyUser,
    Provider,
    ProviderConfig,
    Publish,
    ReplicaState,
    Reputation,
    Requester,
    RequesterConfig,
    Send,
    SetTimer,
    TimerKey,
    TimerKind,
    UserEvent,
)
from scheduler._requester_jobs import MAX_BIDS

from ._harness import CHAIN, CLASS, Sim, commitment, sealed_result

T = TypeVar("T")


def _of(effects: Sequence[object], kind: type[T]) -> list[T]:
    return [e for e in effects if isinstance(e, kind)]


@dataclass(frozen=True)
class _Escrow:
    """An escrow as the ledger shows it (scheduler.EscrowView)."""

    owner: bytes
    locked: int
    is_open: bool = True
    max_payees: int = 4
    places: frozenset[bytes] = frozenset()

    def paid_to(self, provider: bytes) -> int:
        return 0

    def reserved_for(self, provider: bytes) -> int:
        return 0

    def claimable_by(self, provider: bytes) -> bool:
        return self.is_open


class _Setup:
    """A requester machine, a provider machine, and a spec of the requester's."""

    def __init__(self) -> None:
        self.sim = Sim(42)
        self.rkey: nacl.signing.SigningKey = self.sim.key()
        self.req = Requester(RequesterConfig(key=self.rkey, chain_id=CHAIN, commitment=commitment))
        self.prov = Provider(
            ProviderConfig(key=self.sim.key(), chain_id=CHAIN, capability_classes=(CLASS,))
        )

    def spec(self, **kw: int) -> JobSpec:
        node = type("N", (), {"pub": bytes(self.rkey.verify_key)})
        return self.sim.spec(node, **kw)  # type: ignore[arg-type]

    def submit(self, req: Requester | None = None) -> tuple[bytes, bytes]:
        """Submit a redundancy-1 job naming the provider; its id and the provider's bid."""
        job_id, fx = (req or self.req).submit(
            self.spec(redundancy=1, max_retries=1), self.sim.now, providers=[self.prov.me]
        )
        (announcement,) = _of(fx, Send)
        (bid,) = _of(self.prov.receive(announcement.message.raw, self.sim.now + 1), Send)
        return job_id, bid.message.raw


def test_ledger_events_and_answers_for_a_job_it_does_not_hold_are_ignored() -> None:
    s = _Setup()
    other = Requester(RequesterConfig(key=s.rkey, chain_id=CHAIN, commitment=commitment))
    job_id, bid = s.submit(other)  # a job of another machine (same key): unknown here
    now = s.sim.now + 2
    assert not s.req.escrow_is_ours(job_id, _Escrow(owner=s.req.me, locked=10**9))
    assert s.req.escrow_locked(job_id, now) == []
    assert s.req.escrow_failed(job_id, "insufficient balance", now) == []
    assert s.req.escrow_closed(job_id, now) == []
    assert s.req.receive(bid, now) == []
    assert s.req.jobs == {}


def test_a_lock_refusal_after_the_lock_was_confirmed_changes_nothing() -> None:
    s = _Setup()
    job_id, _ = s.submit()
    s.req.escrow_locked(job_id, s.sim.now + 2)
    assert s.req.job(job_id).phase == JobPhase.COLLECTING
    assert s.req.escrow_failed(job_id, "a stale refusal", s.sim.now + 3) == []
    assert s.req.job(job_id).phase == JobPhase.COLLECTING
    assert s.req.job(job_id).done is None


def test_a_closed_job_ignores_late_bids_and_a_second_close() -> None:
    s = _Setup()
    job_id, bid = s.submit()
    (done,) = _of(s.req.escrow_failed(job_id, "insufficient balance", s.sim.now + 2), JobDone)
    assert s.req.job(job_id).phase == JobPhase.CLOSED
    assert s.req.receive(bid, s.sim.now + 3) == []  # the bid arrives after the refusal
    assert s.req.escrow_closed(job_id, s.sim.now + 4) == []
    job = s.req.job(job_id)
    assert job.phase == JobPhase.CLOSED and job.done == done and not job.bids


def _settling(s: _Setup) -> tuple[bytes, bytes]:
    """A job whose lock was confirmed only after its deadline failed it: SETTLING, to be
    refunded at its expiry. Its id and a bid the provider made for it."""
    job_id, bid = s.submit()
    deadline = TimerKey(TimerKind.DEADLINE, job_id)
    (done,) = _of(s.req.timer(deadline, s.sim.now + 2), JobDone)
    assert done.status == JobStatus.FAILED
    told = s.req.escrow_locked(job_id, s.sim.now + 3)  # refunded at its expiry, and told so
    assert [(type(e), e.event) for e in told] == [(NotifyUser, UserEvent.LOCKED)]
    assert s.req.job(job_id).phase == JobPhase.SETTLING
    return job_id, bid


def test_a_decided_job_takes_no_more_bids() -> None:
    s = _Setup()
    job_id, bid = _settling(s)
    assert s.req.receive(bid, s.sim.now + 4) == []
    job = s.req.job(job_id)
    assert not job.bids and not job.replicas and job.phase == JobPhase.SETTLING


def test_timers_of_a_decided_or_closed_job_do_nothing() -> None:
    s = _Setup()
    job_id, _ = _settling(s)
    for kind in (TimerKind.DEADLINE, TimerKind.BIDS):
        assert s.req.timer(TimerKey(kind, job_id), s.sim.now + 5) == []
    assert s.req.job(job_id).phase == JobPhase.SETTLING
    closed, _ = s.submit()
    s.req.escrow_failed(closed, "insufficient balance", s.sim.now + 2)
    for kind in (TimerKind.DEADLINE, TimerKind.BIDS):
        assert s.req.timer(TimerKey(kind, closed), s.sim.now + 5) == []
    assert s.req.job(closed).phase == JobPhase.CLOSED


def test_submit_bounds_admit_exactly_their_limit() -> None:
    s = _Setup()
    now = s.sim.now
    base = s.spec(redundancy=1, max_retries=1)
    window = base.bid_window_ms
    with pytest.raises(JobRejected, match="deadline"):
        s.req.submit(replace(base, deadline_ms=now + window), now)
    s.req.submit(replace(base, deadline_ms=now + window + 1, nonce=b"\x01" * 16), now)
    with pytest.raises(JobRejected, match="bid_window_ms must be positive"):
        s.req.submit(replace(base, bid_window_ms=0, nonce=b"\x02" * 16), now)
    margin = s.req.config.claim_window_blocks + s.req.config.settle_margin_blocks
    s.req.block(base.escrow_expiry_height - margin, now)
    with pytest.raises(JobRejected, match="escrow_expiry_height"):
        s.req.submit(replace(base, nonce=b"\x03" * 16), now)
    s.req.height -= 1  # one block earlier: the expiry is just above the margin
    s.req.submit(replace(base, nonce=b"\x04" * 16), now)


def _hand_bid(job_id: bytes, who: nacl.signing.SigningKey, price: int, expires_ms: int) -> bytes:
    """A Bid signed by ``who`` (not through a Provider machine, which never bids like this)."""
    bid = Bid(
        job_id=job_id,
        provider=bytes(who.verify_key),
        price=price,
        est_finish_ms=expires_ms + 1_000,
        determinism_class="ort-1.32.0/cpu/generic/extended",  # the machines' default class
        bench_score=1,
        expires_ms=expires_ms,
    )
    return sign(bid, who, CHAIN).raw


def test_a_bid_above_max_price_is_misbehaviour_and_one_at_it_is_kept() -> None:
    s = _Setup()
    spec = s.spec(redundancy=1, max_retries=1)
    job_id, _ = s.req.submit(spec, s.sim.now)  # announced on the topic, nobody named
    now = s.sim.now + 1
    greedy, fair = s.sim.key(), s.sim.key()
    fx = s.req.receive(_hand_bid(job_id, greedy, spec.max_price + 1, now + 5_000), now)
    assert _of(fx, Misbehaved) and bytes(greedy.verify_key) not in s.req.job(job_id).bids
    fx = s.req.receive(_hand_bid(job_id, fair, spec.max_price, now + 5_000), now)
    assert not _of(fx, Misbehaved) and bytes(fair.verify_key) in s.req.job(job_id).bids


def test_an_expired_bid_is_not_kept() -> None:
    s = _Setup()
    job_id, _ = s.req.submit(s.spec(redundancy=1, max_retries=1), s.sim.now)
    now = s.sim.now + 1
    late, in_time = s.sim.key(), s.sim.key()
    assert s.req.receive(_hand_bid(job_id, late, 100, expires_ms=now), now) == []
    s.req.receive(_hand_bid(job_id, in_time, 100, expires_ms=now + 1), now)
    assert list(s.req.job(job_id).bids) == [bytes(in_time.verify_key)]


def test_a_provider_running_a_replica_cannot_bid_for_another() -> None:
    s = _Setup()
    job_id, bid = s.submit()
    s.req.receive(bid, s.sim.now + 2)
    fx = s.req.escrow_locked(job_id, s.sim.now + 3)
    assert [e.peer for e in _of(fx, Send)] == [s.prov.me]  # the award
    job = s.req.job(job_id)
    kept = dict(job.bids)
    again = _hand_bid(job_id, s.prov.config.key, 100, expires_ms=s.sim.now + 60_000)
    assert s.req.receive(again, s.sim.now + 4) == []
    assert job.bids == kept and len(job.replicas) == 1


def test_only_named_providers_answers_close_the_window_early() -> None:
    # Named: the provider machine. Two bids come from strangers on the topic: redundancy +
    # 1 bids would close the window, but only when the named providers make them.
    s = _Setup()
    job_id, _ = s.submit()
    s.req.escrow_locked(job_id, s.sim.now + 2)
    now = s.sim.now + 3
    for stranger in (s.sim.key(), s.sim.key()):
        assert s.req.receive(_hand_bid(job_id, stranger, 100, now + 60_000), now) == []
    job = s.req.job(job_id)
    assert job.phase == JobPhase.COLLECTING and len(job.bids) == 2 and not job.replicas


def test_a_repeated_bid_keeps_its_first_arrival_and_a_new_one_replaces_it() -> None:
    # The arrival time sets the replica's deadline (est_finish_ms counts from it).
    s = _Setup()
    job_id, _ = s.req.submit(s.spec(redundancy=1, max_retries=1), s.sim.now)
    who = s.sim.key()
    first = _hand_bid(job_id, who, 100, expires_ms=s.sim.now + 60_000)
    s.req.receive(first, s.sim.now + 1)
    s.req.receive(first, s.sim.now + 50)  # the same bid again, after a re-announcement
    bids = s.req.job(job_id).bids
    assert bids[bytes(who.verify_key)][1] == s.sim.now + 1
    cheaper = _hand_bid(job_id, who, 90, expires_ms=s.sim.now + 60_000)
    s.req.receive(cheaper, s.sim.now + 60)
    signed, arrived = bids[bytes(who.verify_key)]
    assert (signed.message.price, arrived) == (90, s.sim.now + 60)


def test_bids_are_kept_up_to_max_bids_and_known_bidders_may_still_update() -> None:
    s = _Setup()
    job_id, _ = s.req.submit(s.spec(redundancy=1, max_retries=1), s.sim.now)
    now = s.sim.now + 1
    keys = [s.sim.key() for _ in range(MAX_BIDS + 1)]
    for k in keys:
        s.req.receive(_hand_bid(job_id, k, 100, expires_ms=now + 60_000), now)
    bids = s.req.job(job_id).bids
    assert len(bids) == MAX_BIDS and bytes(keys[-1].verify_key) not in bids
    s.req.receive(_hand_bid(job_id, keys[0], 80, expires_ms=now + 60_000), now + 1)
    assert len(bids) == MAX_BIDS and bids[bytes(keys[0].verify_key)][0].message.price == 80


def test_a_bid_arriving_while_a_replica_waits_is_awarded_at_once() -> None:
    # Redundancy 2 and one bid when the window closes: one replica runs, the job executes
    # short of one; the next bid (a stranger's, on the topic) is awarded without waiting.
    s = _Setup()
    spec = s.spec(redundancy=2, max_retries=1)
    job_id, fx = s.req.submit(spec, s.sim.now, providers=[s.prov.me])
    (announcement,) = _of(fx, Send)
    (bid,) = _of(s.prov.receive(announcement.message.raw, s.sim.now + 1), Send)
    s.req.receive(bid.message.raw, s.sim.now + 2)
    s.req.escrow_locked(job_id, s.sim.now + 3)
    s.req.timer(TimerKey(TimerKind.BIDS, job_id), s.sim.now + spec.bid_window_ms)
    job = s.req.job(job_id)
    assert job.phase == JobPhase.EXECUTING and len(job.live()) == 1
    now = s.sim.now + spec.bid_window_ms + 10
    stranger = s.sim.key()
    fx = s.req.receive(_hand_bid(job_id, stranger, 100, expires_ms=now + 60_000), now)
    assert [e.peer for e in _of(fx, Send)] == [bytes(stranger.verify_key)]
    assert len(job.live()) == 2


def _awarded(s: _Setup) -> bytes:
    """A redundancy-1 job whose one replica (index 0) is awarded to the provider machine."""
    job_id, bid = s.submit()
    s.req.receive(bid, s.sim.now + 2)
    s.req.escrow_locked(job_id, s.sim.now + 3)
    assert len(s.req.job(job_id).live()) == 1
    return job_id


def _heartbeat(job_id: bytes, who: nacl.signing.SigningKey, replica: int, at: int) -> bytes:
    hb = Heartbeat(
        job_id=job_id,
        provider=bytes(who.verify_key),
        replica=replica,
        progress_permille=500,
        sent_ms=at,
    )
    return sign(hb, who, CHAIN).raw


def test_heartbeats_only_count_for_the_senders_running_replica() -> None:
    s = _Setup()
    job_id = _awarded(s)
    rep = s.req.job(job_id).replicas[0]
    seen = rep.last_seen_ms
    now = s.sim.now + 100
    never_awarded = _heartbeat(job_id, s.prov.config.key, 1, now)
    assert _of(s.req.receive(never_awarded, now), Misbehaved)
    someone_elses = _heartbeat(job_id, s.sim.key(), 0, now)
    assert _of(s.req.receive(someone_elses, now), Misbehaved)
    assert rep.last_seen_ms == seen
    fx = s.req.receive(_heartbeat(job_id, s.prov.config.key, 0, now), now)  # its own: counts
    assert _of(fx, SetTimer) and rep.last_seen_ms == now
    # silent past the heartbeat timeout: failed; a heartbeat after that changes nothing
    later = now + s.req.config.heartbeat_timeout_ms
    s.req.timer(TimerKey(TimerKind.WATCH, job_id, 0), later)
    assert rep.state == ReplicaState.FAILED
    assert s.req.receive(_heartbeat(job_id, s.prov.config.key, 0, later + 1), later + 1) == []
    assert rep.last_seen_ms == now
    # and its watch timer, if it fires again, fails it no second time (the job announced
    # again: it still runs, so the timer reaches the replica)
    assert s.req.job(job_id).phase == JobPhase.COLLECTING
    assert s.req.timer(TimerKey(TimerKind.WATCH, job_id, 0), later + 10**6) == []


def _hand_result(
    job_id: bytes,
    who: nacl.signing.SigningKey,
    replica: int,
    output: bytes,
    determinism_class: str = "ort-1.32.0/cpu/generic/extended",
) -> bytes:
    return sealed_result(job_id, who, replica, output, determinism_class)[0]


def test_a_result_for_a_replica_never_awarded_is_misbehaviour() -> None:
    s = _Setup()
    job_id = _awarded(s)  # replica 0 only
    output = b"any output"
    now = s.sim.now + 100
    fx = s.req.receive(_hand_result(job_id, s.prov.config.key, 1, output), now, output=output)
    assert _of(fx, Misbehaved)
    assert s.req.job(job_id).replicas[0].state == ReplicaState.RUNNING


def test_nobody_bid_announces_again_only_if_two_windows_fit_before_the_deadline() -> None:
    def window_ends(slack: int) -> list[object]:
        """No answer at all; the bid window ends ``2 * window + slack`` before the deadline."""
        s = _Setup()
        spec = s.spec(redundancy=1, max_retries=1)
        job_id, _ = s.req.submit(spec, s.sim.now)
        s.req.escrow_locked(job_id, s.sim.now + 1)
        at = spec.deadline_ms - 2 * spec.bid_window_ms - slack
        return list(s.req.timer(TimerKey(TimerKind.BIDS, job_id), at))

    again = window_ends(1)
    assert _of(again, Publish) and not _of(again, JobDone)
    (done,) = _of(window_ends(0), JobDone)  # exactly two windows left: no time for answers
    assert done.status == JobStatus.FAILED


def _first_awards(redundancy: int, max_retries: int, bidders: list[tuple[int, int]]) -> list[int]:
    """The first awards of a job whose window ends with a bid from each ``(settled_jobs,
    price)`` provider (on the topic): the indexes, in ``bidders``, of the providers awarded."""
    s = _Setup()
    keys = [s.sim.key() for _ in bidders]
    record = {bytes(k.verify_key): jobs for k, (jobs, _) in zip(keys, bidders, strict=True)}

    def reputation(who: bytes) -> Reputation:
        # Every bidder holds the probation stake: ``settled_jobs`` alone decides here.
        return Reputation(800, record.get(who, 0), stake=1_000_000)

    req = Requester(
        RequesterConfig(key=s.rkey, chain_id=CHAIN, commitment=commitment, reputation=reputation)
    )
    assert req.config.probation_jobs == 3
    spec = s.spec(redundancy=redundancy, max_retries=max_retries)
    job_id, _ = req.submit(spec, s.sim.now)
    req.escrow_locked(job_id, s.sim.now + 1)
    now = s.sim.now + 2
    for k, (_, price) in zip(keys, bidders, strict=True):
        req.receive(_hand_bid(job_id, k, price, expires_ms=now + 60_000), now)
    fx = req.timer(TimerKey(TimerKind.BIDS, job_id), s.sim.now + spec.bid_window_ms)
    awarded = [e.peer for e in _of(fx, Send)]
    return [i for i, k in enumerate(keys) if bytes(k.verify_key) in awarded]


def test_a_newcomer_chosen_alone_gets_a_probation_replica_beside_it() -> None:
    assert _first_awards(1, 1, [(0, 50), (0, 100)]) == [0, 1]


def test_a_provider_with_exactly_the_probation_jobs_needs_no_second_replica() -> None:
    assert _first_awards(1, 1, [(3, 50), (0, 100)]) == [0]
    assert _first_awards(1, 1, [(2, 50), (0, 100)]) == [0, 1]


def test_two_newcomers_chosen_need_no_third_replica() -> None:
    assert _first_awards(2, 1, [(0, 50), (0, 60), (0, 100)]) == [0, 1]


def test_adaptive_awards_a_trusted_named_providers_bid_without_waiting() -> None:
    # Two providers named; the trusted one bids once the escrow is locked: the job runs on
    # it at once, without waiting for the other (or the window) (audit_permille 0: alone).
    s = _Setup()
    other = s.sim.key()
    trusted = bytes(s.prov.config.key.verify_key)

    def reputation(who: bytes) -> Reputation:
        if who == trusted:
            return Reputation(990, 50, failures=0, stake=2_000_000)
        return Reputation(500, 0)

    req = Requester(
        RequesterConfig(
            key=s.rkey,
            chain_id=CHAIN,
            commitment=commitment,
            reputation=reputation,
            replication="adaptive",
            audit_permille=0,
        )
    )
    spec = s.spec(redundancy=2, max_retries=1)
    job_id, fx = req.submit(spec, s.sim.now, providers=[s.prov.me, bytes(other.verify_key)])
    req.escrow_locked(job_id, s.sim.now + 1)
    announcement = next(e for e in _of(fx, Send) if e.peer == s.prov.me)
    (bid,) = _of(s.prov.receive(announcement.message.raw, s.sim.now + 2), Send)
    fx = req.receive(bid.message.raw, s.sim.now + 3)
    assert [e.peer for e in _of(fx, Send)] == [s.prov.me]  # the award, long before the window
    assert req.job(job_id).phase == JobPhase.EXECUTING


def test_a_delivered_replica_takes_its_result_again_but_not_another() -> None:
    # Redundancy 2: the provider machine's replica delivers while the other still runs.
    s = _Setup()
    spec = s.spec(redundancy=2, max_retries=1)
    job_id, fx = s.req.submit(spec, s.sim.now, providers=[s.prov.me])
    (announcement,) = _of(fx, Send)
    (bid,) = _of(s.prov.receive(announcement.message.raw, s.sim.now + 1), Send)
    s.req.receive(bid.message.raw, s.sim.now + 2)
    now = s.sim.now + 3
    s.req.receive(_hand_bid(job_id, s.sim.key(), 100, expires_ms=now + 60_000), now)
    s.req.escrow_locked(job_id, now)
    s.req.timer(TimerKey(TimerKind.BIDS, job_id), s.sim.now + spec.bid_window_ms)
    job = s.req.job(job_id)
    (mine,) = [r for r in job.replicas if r.provider == s.prov.me]
    key, at = s.prov.config.key, s.sim.now + spec.bid_window_ms + 10
    cls = s.prov.config.determinism_class  # the class its bid named
    first, sealed, unseal = sealed_result(job_id, key, mine.index, b"out", cls)
    s.req.receive(first, at, output=sealed)
    s.req.receive(unseal, at)  # its key, unasked: the output opens
    assert mine.state == ReplicaState.DELIVERED and job.phase == JobPhase.EXECUTING
    assert not _of(s.req.receive(first, at + 1, output=sealed), Misbehaved)  # resent
    other, other_sealed, _ = sealed_result(job_id, key, mine.index, b"other", cls)
    assert _of(s.req.receive(other, at + 2, output=other_sealed), Misbehaved)
    assert mine.result is not None and mine.result.raw == first


def test_a_nobid_while_the_lock_is_on_its_way_withdraws_the_providers_bid() -> None:
    s = _Setup()
    job_id, _ = s.req.submit(s.spec(redundancy=1, max_retries=1), s.sim.now)
    assert s.req.job(job_id).phase == JobPhase.LOCKING
    who = s.sim.key()
    now = s.sim.now + 1
    s.req.receive(_hand_bid(job_id, who, 100, expires_ms=now + 60_000), now)
    nobid = NoBid(
        job_id=job_id,
        provider=bytes(who.verify_key),
        reason="busy",
        detail="filled up meanwhile",
        price_floor=100,
    )
    s.req.receive(sign(nobid, who, CHAIN).raw, now + 1)
    job = s.req.job(job_id)
    assert not job.bids and list(job.nobids) == [bytes(who.verify_key)]


def test_a_trusted_provider_caught_after_its_bid_is_trusted_no_more() -> None:
    # Its bid came in while the lock was on its way; then another job of ours caught it
    # (``caught``, as that job's verdict records it): the lock's confirmation does not run
    # this job on it alone.
    s = _Setup()
    other = s.sim.key()
    suspect = bytes(s.prov.config.key.verify_key)
    req = Requester(
        RequesterConfig(
            key=s.rkey,
            chain_id=CHAIN,
            commitment=commitment,
            reputation=lambda who: Reputation(990, 50, failures=0, stake=2_000_000),
            replication="adaptive",
            audit_permille=0,
        )
    )
    spec = s.spec(redundancy=2, max_retries=1)
    job_id, fx = req.submit(spec, s.sim.now, providers=[s.prov.me, bytes(other.verify_key)])
    announcement = next(e for e in _of(fx, Send) if e.peer == s.prov.me)
    (bid,) = _of(s.prov.receive(announcement.message.raw, s.sim.now + 1), Send)
    req.receive(bid.message.raw, s.sim.now + 2)
    req.caught[suspect] = None
    fx = req.escrow_locked(job_id, s.sim.now + 3)
    assert not _of(fx, Send) and req.job(job_id).phase == JobPhase.COLLECTING


def test_a_solo_job_whose_trusted_provider_failed_needs_agreeing_results_again() -> None:
    # Adaptive: the trusted provider runs the job alone and goes silent; the spare bid, an
    # established provider's that is not trusted (score 500), replaces it (a newcomer's
    # could not: review R4-6). One result of it does not verify the job (the order is
    # decided again once no replica is live: no longer solo).
    s = _Setup()
    trusted = bytes(s.prov.config.key.verify_key)

    def reputation(who: bytes) -> Reputation:
        if who == trusted:
            return Reputation(990, 50, failures=0, stake=2_000_000)
        return Reputation(500, 5, stake=1_000_000)

    req = Requester(
        RequesterConfig(
            key=s.rkey,
            chain_id=CHAIN,
            commitment=commitment,
            reputation=reputation,
            replication="adaptive",
            audit_permille=0,
        )
    )
    spec = s.spec(redundancy=2, max_retries=1)
    job_id, fx = req.submit(spec, s.sim.now, providers=[s.prov.me])
    (announcement,) = _of(fx, Send)
    (bid,) = _of(s.prov.receive(announcement.message.raw, s.sim.now + 1), Send)
    spare = s.sim.key()
    now = s.sim.now + 2
    req.receive(_hand_bid(job_id, spare, 100, expires_ms=now + 10**7), now)
    req.receive(bid.message.raw, now)
    fx = req.escrow_locked(job_id, now + 1)
    assert [e.peer for e in _of(fx, Send)] == [trusted]  # alone
    job = req.job(job_id)
    later = now + req.config.heartbeat_timeout_ms + 10
    fx = req.timer(TimerKey(TimerKind.WATCH, job_id, 0), later)
    assert [e.peer for e in _of(fx, Send)] == [bytes(spare.verify_key)]  # the spare
    result, sealed, unseal = sealed_result(job_id, spare, 1, b"out")
    fx = req.receive(result, later + 1, output=sealed)
    fx += req.receive(unseal, later + 1)
    assert job.replicas[1].state == ReplicaState.DELIVERED
    assert not _of(fx, JobDone) and job.done is None


def test_a_provider_with_exactly_the_probation_jobs_closes_the_window_once_locked() -> None:
    # Two providers named; the one with exactly probation_jobs settled jobs bids after the
    # lock: established, its bid is enough (no wait for the other, or the window).
    s = _Setup()
    established = bytes(s.prov.config.key.verify_key)
    silent = s.sim.key()
    req = Requester(
        RequesterConfig(
            key=s.rkey,
            chain_id=CHAIN,
            commitment=commitment,
            reputation=lambda who: Reputation(800, 3 if who == established else 0, stake=1_000_000),
        )
    )
    assert req.config.probation_jobs == 3
    spec = s.spec(redundancy=1, max_retries=1)
    job_id, fx = req.submit(spec, s.sim.now, providers=[s.prov.me, bytes(silent.verify_key)])
    req.escrow_locked(job_id, s.sim.now + 1)
    announcement = next(e for e in _of(fx, Send) if e.peer == s.prov.me)
    (bid,) = _of(s.prov.receive(announcement.message.raw, s.sim.now + 2), Send)
    fx = req.receive(bid.message.raw, s.sim.now + 3)
    assert [e.peer for e in _of(fx, Send)] == [s.prov.me]


def test_a_result_after_its_replica_failed_is_not_taken() -> None:
    s = _Setup()
    job_id = _awarded(s)
    rep = s.req.job(job_id).replicas[0]
    later = s.sim.now + s.req.config.heartbeat_timeout_ms + 100
    s.req.timer(TimerKey(TimerKind.WATCH, job_id, 0), later)
    assert rep.state == ReplicaState.FAILED
    assert s.req.job(job_id).phase == JobPhase.COLLECTING  # announced again, still open
    late = _hand_result(job_id, s.prov.config.key, 0, b"out")
    assert s.req.receive(late, later + 1, output=b"out") == []
    assert rep.state == ReplicaState.FAILED and rep.result is None
    assert s.req.job(job_id).done is None
