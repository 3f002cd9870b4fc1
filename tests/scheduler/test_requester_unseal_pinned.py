"""A requester's checks of the Unseal messages providers send, which the mutation run left
unpinned once a sealed claim's key came from the ledger: a key for a replica not awarded
to its signer, or for another result, is that provider's misbehaviour and opens nothing."""

from __future__ import annotations

import protocol
import scheduler

from ..keys import key, pub
from ..ledger.helpers import BOB
from ._world import World, spec

DATA = b"the real output " * 4
DAVE = key("dave")


def _delivered() -> tuple[World, scheduler.Deliver]:
    """BOB's result and sealed bytes are with the requester; its key is not."""
    w = World([BOB, DAVE], floors={pub(DAVE): 1100})
    w.submit(spec(b"unseal-pins", redundancy=2, expiry=60, deadline_ms=3_000_000))
    w.sync(1000)
    deliver = w.finished(pub(BOB), DATA, 1100)
    w.r.receive(deliver.result.raw, 1110, output=deliver.output)
    return w, deliver


def _unseal(w: World, signer: object, replica: int, result_hash: bytes) -> bytes:
    assert isinstance(signer, type(BOB))
    msg = protocol.Unseal(w.job_id, pub(signer), replica, result_hash, bytes(32))
    return protocol.sign(msg, signer, "aimx-test").raw


def _misbehaved(effects: list[scheduler.Effect]) -> list[str]:
    return [e.reason for e in effects if isinstance(e, scheduler.Misbehaved)]


def test_a_key_for_a_replica_not_awarded_to_its_signer_is_misbehaviour() -> None:
    w, deliver = _delivered()
    bobs = deliver.result.message.replica
    # DAVE signs a key for BOB's replica: not its replica
    effects = w.r.receive(_unseal(w, DAVE, bobs, deliver.result.id), 1200)
    assert _misbehaved(effects) == ["a key for a replica not awarded to it"]
    assert w.r.job(w.job_id).done is None


def test_a_key_for_another_result_is_misbehaviour() -> None:
    w, deliver = _delivered()
    bobs = deliver.result.message.replica
    effects = w.r.receive(_unseal(w, BOB, bobs, b"\x09" * 32), 1200)
    assert _misbehaved(effects) == ["a key for another result"]


def test_a_key_before_its_sealed_bytes_waits_and_opens_them_when_they_come() -> None:
    # (mutation run: `_on_key`'s "its sealed bytes have not come" went unnoticed)
    w = World([BOB, DAVE], floors={pub(DAVE): 1100})
    w.submit(spec(b"key-first", redundancy=2, expiry=60, deadline_ms=3_000_000))
    w.sync(1000)
    deliver = w.finished(pub(BOB), DATA, 1100)
    w.r.receive(deliver.result.raw, 1110, output=None)  # the Result alone: no bytes yet
    work = w.p[pub(BOB)].work[w.job_id]
    unseal = protocol.Unseal(
        w.job_id, pub(BOB), deliver.result.message.replica, deliver.result.id, work.key
    )
    raw = protocol.sign(unseal, BOB, "aimx-test").raw
    early = w.r.receive(raw, 1120)
    assert not _misbehaved(early)
    rep = w.r.job(w.job_id).replicas[deliver.result.message.replica]
    assert rep.state == scheduler.ReplicaState.COMMITTED  # waits, not failed
    w.r.receive(deliver.result.raw, 1130, output=deliver.output)  # the bytes come
    w.r.receive(raw, 1140)  # and the key again
    assert rep.state == scheduler.ReplicaState.DELIVERED


def test_a_key_for_a_replica_still_running_is_ignored() -> None:
    # (mutation run: `_on_unseal`'s "opened already, or failed" guard went unnoticed; a
    # running replica has no Result to hold the key against)
    w = World([BOB, DAVE], floors={pub(DAVE): 1100})
    w.submit(spec(b"key-while-running", redundancy=2, expiry=60, deadline_ms=3_000_000))
    w.sync(1000)
    job = w.r.job(w.job_id)
    running = next(r for r in job.replicas if r.provider == pub(BOB))
    assert running.state == scheduler.ReplicaState.RUNNING
    effects = w.r.receive(_unseal(w, BOB, running.index, b"\x09" * 32), 1200)
    assert effects == []
    assert running.state == scheduler.ReplicaState.RUNNING


def test_a_wrong_key_changes_nothing_but_the_senders_record() -> None:
    # A key that opens nothing is its sender's misbehaviour and nothing else: the replica
    # still waits for its key (it comes with the claim), and the job is not moved on.
    w = World([BOB])
    w.submit(spec(b"wrong-key", redundancy=2, expiry=60, deadline_ms=3_000_000))
    w.sync(1000)
    deliver = w.finished(pub(BOB), DATA, 1100)
    w.r.receive(deliver.result.raw, 1110, output=deliver.output)
    rep = w.r.job(w.job_id).replicas[deliver.result.message.replica]
    # waiting for a second replica: no receipt yet (one claimable at once paid a lone
    # cheat before anything was compared, round 29, K4), and a key may still come
    assert rep.state == scheduler.ReplicaState.COMMITTED and rep.receipt is None
    wrong = protocol.Unseal(w.job_id, pub(BOB), rep.index, deliver.result.id, b"\x05" * 32)
    effects = w.r.receive(protocol.sign(wrong, BOB, "aimx-test").raw, 1200)
    assert effects == [scheduler.Misbehaved(pub(BOB), "a key that is not its result's")]
    assert rep.state == scheduler.ReplicaState.COMMITTED
