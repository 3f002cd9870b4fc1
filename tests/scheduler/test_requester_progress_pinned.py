"""The requester's progress and settle rules the mutation run left unpinned
(specs/marketplace.md, "Replica states", "Progress", "Forcing"): past the deadline nothing
more is awarded; while a replica runs the others wait; a job judged by bytes reads every
result's bytes before it decides; a receipt is sent again only half a heartbeat timeout
after it went; a result accepted short waits for its key whatever else comes; a block's
escrow of a job this node does not hold opens nothing."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import protocol
import scheduler
from scheduler._provider import RESERVE_WAIT_BLOCKS

from ..keys import key, pub
from ..ledger.helpers import BOB
from ._world import USAGE, World, commit, spec

DATA = b"the real output " * 4
DAVE = key("dave")
CAROL = key("carol")
ERIN = key("erin")


def _sent(effects: list[scheduler.Effect], kind: type) -> list[tuple[bytes, object]]:
    """``(peer, message)`` of each Send of a ``kind`` message."""
    return [
        (e.peer, e.message.message)
        for e in effects
        if isinstance(e, scheduler.Send) and isinstance(e.message.message, kind)
    ]


def _done(effects: list[scheduler.Effect]) -> list[scheduler.JobDone]:
    return [e for e in effects if isinstance(e, scheduler.JobDone)]


def _claim_and_sync(w: World, effects: list[scheduler.Effect], now: int) -> list[scheduler.Effect]:
    """The providers' claims among ``effects`` land in a block; the machines read it.
    (This world sends no ``reserve``: a sealed receipt is claimed once the provider's wait
    for its place, ``RESERVE_WAIT_BLOCKS``, is over.)"""
    claims = [e for e in effects if isinstance(e, scheduler.ClaimWithReceipt)]
    for _ in range(RESERVE_WAIT_BLOCKS):
        if claims:
            break
        w.c.ok()
        claims = [e for e in w.pump(w.sync(now), now) if isinstance(e, scheduler.ClaimWithReceipt)]
    assert claims
    w.c.ok(*[w.claim(fx) for fx in claims])
    return w.pump(w.sync(now), now + 10)


def _tolerance(w: World, job: protocol.JobSpec) -> protocol.JobSpec:
    """``job`` judged by bytes (``tolerance`` mode), bid on by every provider of ``w``."""
    for p in w.p.values():
        p.config = dataclasses.replace(p.config, tolerance_jobs=True)
    policy = dataclasses.replace(job.verification, mode="tolerance", rtol_e9=1_000, atol_e9=0)
    return dataclasses.replace(job, verification=policy)


class _Knowing(scheduler.Requester):
    """A requester whose jobs are submitted with ``known`` as their known answer."""

    known: scheduler.Output | None = None

    def submit(
        self,
        spec: protocol.JobSpec,
        now_ms: int,
        *,
        providers: Sequence[bytes] = (),
        known_answer: scheduler.Output | None = None,
    ) -> tuple[bytes, list[scheduler.Effect]]:
        return super().submit(spec, now_ms, providers=providers, known_answer=self.known)


def test_past_the_deadline_a_failed_replica_is_not_replaced_while_a_key_is_pending() -> None:
    # BOB's result is in, DAVE still runs, CAROL's bid is spare; the deadline comes.
    w = World([BOB, DAVE, CAROL], floors={pub(DAVE): 1100, pub(CAROL): 1200})
    job = dataclasses.replace(
        spec(b"overdue", redundancy=2, expiry=60, deadline_ms=2000), max_retries=1
    )
    w.submit(job)
    replicas = w.r.job(w.job_id).replicas
    assert [r.provider for r in replicas] == [pub(BOB), pub(DAVE)]
    w.sync(1000)
    w.deliver(pub(BOB), DATA, 1100)
    deadline = w.r.timer(scheduler.TimerKey(scheduler.TimerKind.DEADLINE, w.job_id), 2000)
    ((to, receipt),) = _sent(deadline, protocol.Receipt)  # BOB's, sealed: its key comes
    assert to == pub(BOB) and isinstance(receipt, protocol.Receipt) and receipt.at_once
    assert not _done(deadline)  # overdue: waits for BOB's key
    # DAVE misses its deadline: past the job's, nothing more is awarded (CAROL's bid stays)
    late = w.r.timer(scheduler.TimerKey(scheduler.TimerKind.WATCH, w.job_id, 1), 2000)
    assert replicas[1].state == scheduler.ReplicaState.FAILED
    assert not _sent(late, protocol.Award)
    assert not _done(late)
    assert len(w.r.job(w.job_id).replicas) == 2
    # BOB's claim publishes its key: the job is decided with its output, short
    out = _claim_and_sync(w, w.pump(deadline, 2010), 2100)
    (done,) = _done(out)
    assert done.status == scheduler.JobStatus.UNVERIFIED
    assert done.output is not None and done.output.data == DATA
    assert not _sent(out, protocol.Award)


def test_a_result_judged_by_bytes_gets_no_receipt_while_another_replica_runs() -> None:
    w = World([BOB, DAVE], floors={pub(DAVE): 1100})
    w.submit(_tolerance(w, spec(b"running", redundancy=2, expiry=60, deadline_ms=3_000_000)))
    w.sync(1000)
    first = w.deliver(pub(BOB), DATA, 1100)
    assert not _sent(first, protocol.Receipt)  # DAVE still runs: nothing more yet
    assert w.r.job(w.job_id).replicas[0].state == scheduler.ReplicaState.COMMITTED
    second = w.deliver(pub(DAVE), DATA, 1200)  # all in: both read, plain receipts
    receipts = _sent(second, protocol.Receipt)
    assert sorted(to for to, _ in receipts) == sorted([pub(BOB), pub(DAVE)])
    assert all(isinstance(r, protocol.Receipt) and not r.at_once for _, r in receipts)
    (done,) = _done(second)
    assert done.status == scheduler.JobStatus.VERIFIED
    assert done.output is not None and done.output.data == DATA


def test_a_job_judged_by_bytes_reads_every_result_before_it_decides() -> None:
    # A known answer matched by the first output opened would verify the job alone: the
    # second result's bytes are still read (and its work paid) before the decision.
    w = World([BOB, DAVE], floors={pub(DAVE): 1100})
    w.r = _Knowing(w.r.config)
    w.r.known = scheduler.Output(DATA, commit(DATA), "")
    job = _tolerance(w, spec(b"known", redundancy=2, expiry=60, deadline_ms=3_000_000))
    w.submit(job)
    w.sync(1000)
    assert not _done(w.deliver(pub(BOB), DATA, 1100))
    out = w.deliver(pub(DAVE), DATA, 1200)
    (done,) = _done(out)
    assert done.status == scheduler.JobStatus.VERIFIED
    assert sorted(p.provider for p in done.paid) == sorted([pub(BOB), pub(DAVE)])
    delivered = [r.state for r in w.r.job(w.job_id).replicas]
    assert delivered == [scheduler.ReplicaState.DELIVERED] * 2


def test_a_receipt_is_sent_again_only_half_a_timeout_after_it_went() -> None:
    w = World([BOB])
    w.submit(spec(b"half", redundancy=1, expiry=60, deadline_ms=3_000_000))
    w.sync(1000)
    deliver = w.finished(pub(BOB), DATA, 1100)
    half = w.r.config.heartbeat_timeout_ms // 2
    watch = scheduler.TimerKey(scheduler.TimerKind.WATCH, w.job_id, 0)
    # The Result alone: verified, its receipt wanted, its sealed bytes awaited
    early = w.r.receive(deliver.result.raw, 1110)
    assert not _sent(early, protocol.Receipt)
    assert scheduler.SetTimer(1110 + half, watch) in early
    # Its bytes come later: the receipt goes now, watched half a timeout from now
    signed = w.r.receive(deliver.result.raw, 2000, output=deliver.output)
    ((to, _),) = _sent(signed, protocol.Receipt)
    assert to == pub(BOB)
    assert scheduler.SetTimer(2000 + half, watch) in signed
    # The timer set while the bytes were awaited fires: too early to send the receipt again
    stale = w.r.timer(watch, 1110 + half)
    assert stale == [scheduler.SetTimer(2000 + half, watch)]
    # Half a timeout after it went, the receipt goes again
    again = w.r.timer(watch, 2000 + half)
    assert [to for to, _ in _sent(again, protocol.Receipt)] == [pub(BOB)]
    assert w.r.job(w.job_id).replicas[0].state == scheduler.ReplicaState.COMMITTED


def test_a_result_accepted_short_waits_for_its_key_when_a_late_bid_comes() -> None:
    # Budget 2: BOB's result is in, DAVE's run crashes, no award is left. BOB gets its
    # sealed receipt and the job waits for its key; a bid from the topic changes nothing.
    w = World([BOB, DAVE], floors={pub(DAVE): 1100})
    w.submit(spec(b"short", redundancy=2, expiry=60, deadline_ms=3_000_000))
    w.sync(1000)
    w.deliver(pub(BOB), DATA, 1100)
    crashed = w.p[pub(DAVE)].job_finished(
        w.job_id, 1200, outcome="crashed", output=None, usage=USAGE, message="out of memory"
    )
    out = w.pump(crashed, 1201)
    assert [to for to, _ in _sent(out, protocol.Receipt)] == [pub(BOB)]
    assert not _done(out)
    # ERIN saw the job on the topic and bids late
    erin = scheduler.Provider(dataclasses.replace(w.p[pub(BOB)].config, key=ERIN))
    erin.follow_ledger(w.c.height, w.c.state.escrow, 1300)
    (bid,) = [
        e.message
        for e in erin.receive(w.r.job(w.job_id).signed.raw, 1300)
        if isinstance(e, scheduler.Send)
    ]
    late = w.r.receive(bid.raw, 1310)
    assert not _done(late) and not _sent(late, protocol.Award)
    # BOB's claim publishes its key: decided with its output
    done_out = _claim_and_sync(w, out, 1400)
    (done,) = _done(done_out)
    assert done.status == scheduler.JobStatus.UNVERIFIED
    assert done.output is not None and done.output.data == DATA
    escrow = w.c.state.escrow(w.job_id)
    assert escrow is not None and escrow.paid_to(pub(BOB)) > 0


def test_a_block_showing_the_escrow_of_a_job_not_held_here_opens_nothing() -> None:
    w = World([BOB])
    w.submit(spec(b"not-held", redundancy=1, expiry=60, deadline_ms=3_000_000))
    escrow = w.c.state.escrow(w.job_id)
    assert escrow is not None
    assert w.r.keys_published(b"\x07" * 32, escrow, 1000) == []
