"""The requester's side of the fair exchange, where the mutation run left checks unpinned:
which sealed outputs it takes (``expects_output``: the driver decrypts only those), and
that it signs a replica's Receipt once."""

from __future__ import annotations

import protocol
import scheduler

from ..keys import pub
from ..ledger.helpers import BOB
from ._world import World, spec

DATA = b"the real output " * 4


def _receipts(effects: list[scheduler.Effect]) -> list[protocol.Receipt]:
    return [
        e.message.message
        for e in effects
        if isinstance(e, scheduler.Send) and isinstance(e.message.message, protocol.Receipt)
    ]


def test_only_the_running_replicas_own_provider_has_its_output_taken() -> None:
    w = World([BOB])
    assert not w.r.expects_output(b"\x07" * 32, pub(BOB), 0)  # no such job
    w.submit(spec(b"expects", redundancy=1, expiry=60, deadline_ms=3_000_000))
    (rep,) = w.r.job(w.job_id).replicas
    assert rep.provider == pub(BOB)
    assert w.r.expects_output(w.job_id, pub(BOB), rep.index)  # awarded, running
    assert not w.r.expects_output(w.job_id, pub(BOB), rep.index + 1)  # not its replica
    assert not w.r.expects_output(w.job_id, b"\x05" * 32, rep.index)  # not its provider


def test_a_job_still_locking_takes_no_output() -> None:
    w = World([BOB])
    job_id, _ = w.r.submit(spec(b"locking", redundancy=1, expiry=60, deadline_ms=3_000_000), 0)
    assert w.r.job(job_id).phase == scheduler.JobPhase.LOCKING
    assert not w.r.expects_output(job_id, pub(BOB), 0)


def test_a_verified_replicas_receipt_is_signed_once() -> None:
    w = World([BOB])
    w.submit(spec(b"receipt-once", redundancy=1, expiry=60, deadline_ms=3_000_000))
    w.sync(1000)
    first = _receipts(w.deliver(pub(BOB), DATA, 1100))
    assert len(first) == 1 and first[0].at_once == 1  # sealed: the winner's
    assert first[0].claim_by > w.c.height
    # the deadline comes before the key: the receipts due then are already out
    again = w.r.timer(scheduler.TimerKey(scheduler.TimerKind.DEADLINE, w.job_id), 3_000_001)
    assert _receipts(again) == []


def test_a_receipt_wished_again_does_not_restart_the_wait_for_its_sealed_bytes() -> None:
    # (mutation run: `issue_receipt`'s "still waiting for its sealed bytes" went unnoticed;
    # each later progress of the job then reset the replica's watch and its resends, and a
    # winner that never sent its bytes was never failed while the job moved on)
    from ..keys import key

    dave = key("dave")
    w = World([BOB, dave], floors={pub(dave): 1100})
    w.submit(spec(b"wished-again", redundancy=2, expiry=60, deadline_ms=3_000_000))
    w.sync(1000)
    bobs = w.finished(pub(BOB), DATA, 1100)
    w.r.receive(bobs.result.raw, 1110, output=None)  # its Result, not its bytes
    daves = w.finished(pub(dave), DATA, 1100)
    w.pump(w.r.receive(daves.result.raw, 1120, output=daves.output), 1121)
    job = w.r.job(w.job_id)
    bob = job.replicas[bobs.result.message.replica]
    assert bob.want and bob.receipt is None  # wished for, waiting for its bytes
    waiting_since, nudges = bob.last_seen_ms, bob.nudges
    # DAVE's key comes: DAVE is delivered and the job progresses, wishing BOB's receipt again
    work = w.p[pub(dave)].work[w.job_id]
    replica = daves.result.message.replica
    unseal = protocol.Unseal(w.job_id, pub(dave), replica, daves.result.id, work.key)
    effects = w.r.receive(protocol.sign(unseal, dave, "aimx-test").raw, 1500)
    assert job.replicas[replica].state == scheduler.ReplicaState.DELIVERED
    watch = scheduler.TimerKey(scheduler.TimerKind.WATCH, w.job_id, bob.index)
    assert not [e for e in effects if isinstance(e, scheduler.SetTimer) and e.key == watch]
    assert (bob.last_seen_ms, bob.nudges) == (waiting_since, nudges)
