"""Review round 58, F3: any key's Bid for a running job made the requester rank its bids
again, judging the outputs in to do so: in tolerance mode each 226-byte Bid cost a decode
and compare of every delivered output (23 ms a Bid with 3 MiB outputs), even with every
replica the job wants live. Such a Bid changes nothing, and compares nothing, now. F4:
a lock confirmed after the deadline is told, and refunded at its expiry."""

from __future__ import annotations

import random
from dataclasses import replace

import nacl.signing

from protocol import (
    Bid,
    VerificationPolicy,
    sign,
)
from scheduler import NotifyUser, Output, Refund, Requester, RequesterConfig, TimerKey, TimerKind
from scheduler._pricing import Reputation

from ._harness import CHAIN, DETERMINISM, START_MS, commitment, sealed_result
from .test_review3_provider import _spec

VETERAN = Reputation(score_permille=950, settled_jobs=50, failures=0, stake=5_000_000)
NEWCOMER = Reputation(score_permille=500, settled_jobs=0)


def _key(i: int) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(bytes([i]) * 32)


def _bid(k: nacl.signing.SigningKey, job_id: bytes, price: int, at: int) -> bytes:
    bid = Bid(
        job_id=job_id,
        provider=bytes(k.verify_key),
        price=price,
        est_finish_ms=at + 1_000,
        determinism_class=DETERMINISM,
        bench_score=1_000,
        expires_ms=at + 30_000,
    )
    return sign(bid, k, CHAIN).raw


def _deliver(req: Requester, k: nacl.signing.SigningKey, job_id: bytes, data: bytes) -> None:
    [replica] = [r.index for r in req.job(job_id).replicas if r.provider == bytes(k.verify_key)]
    result, sealed, unseal = sealed_result(job_id, k, replica, data)
    req.receive(result, START_MS + 700, output=sealed)
    req.receive(unseal, START_MS + 710)


def three_veterans_running(
    first_key: int, rng_seed: int
) -> tuple[Requester, bytes, list[nacl.signing.SigningKey], list[int]]:
    """A requester's tolerance job of redundancy 3 awarded to three veterans, its
    compares counted: the requester, the job id, the veterans and the compares."""
    veterans = [_key(first_key + i) for i in range(3)]
    known = {bytes(k.verify_key) for k in veterans}
    compares: list[int] = []

    def compare(a: Output, b: Output, policy: VerificationPolicy) -> bool:
        compares.append(1)
        return a.data == b.data

    me = _key(first_key - 29)
    req = Requester(
        RequesterConfig(
            key=me,
            chain_id=CHAIN,
            commitment=commitment,
            compare=compare,
            reputation=lambda who: VETERAN if who in known else NEWCOMER,
            rng=random.Random(rng_seed),
        )
    )
    spec = _spec("requester", START_MS).message
    tolerance = replace(spec.verification, mode="tolerance", rtol_e9=1_000, atol_e9=1_000)
    spec = replace(spec, requester=bytes(me.verify_key), redundancy=3, verification=tolerance)
    job_id, _ = req.submit(spec, START_MS, providers=sorted(known))
    req.escrow_locked(job_id, START_MS)
    for i, k in enumerate(veterans):
        req.receive(_bid(k, job_id, 100, START_MS), START_MS + 1 + i)
    req.timer(TimerKey(TimerKind.BIDS, job_id), START_MS + 600)
    return req, job_id, veterans, compares


def test_a_strangers_bid_for_a_job_with_every_replica_live_compares_nothing() -> None:
    req, job_id, veterans, compares = three_veterans_running(30, 7)
    # two outputs in, and they disagree; the third replica runs
    _deliver(req, veterans[0], job_id, b"one")
    _deliver(req, veterans[1], job_id, b"two")
    assert len(req.job(job_id).live()) == 3
    compares.clear()
    for i in range(20):  # strangers' bids, and one stranger's again and again
        req.receive(_bid(_key(100 + i), job_id, 999, START_MS + 800), START_MS + 800 + i)
        req.receive(_bid(_key(100), job_id, 999, START_MS + 900 + i), START_MS + 900 + i)
    assert compares == []  # the tree before: a compare of the outputs in for each


def test_a_lock_confirmed_after_the_deadline_is_told_and_refunded_at_expiry() -> None:
    """Round 58, F4: the user read "escrow lock not confirmed" and was told nothing more
    while the job's whole budget stayed locked until the escrow's expiry."""
    me = _key(1)
    req = Requester(RequesterConfig(key=me, chain_id=CHAIN, commitment=commitment))
    spec = replace(_spec("requester", START_MS).message, requester=bytes(me.verify_key))
    job_id, _ = req.submit(spec, START_MS)
    req.timer(TimerKey(TimerKind.DEADLINE, job_id), spec.deadline_ms)
    told = req.escrow_locked(job_id, spec.deadline_ms + 1_000)
    expiry = spec.escrow_expiry_height
    assert [e.detail for e in told if isinstance(e, NotifyUser)] == [
        f"locked after the job failed; the escrow is refunded at its expiry, block {expiry}"
    ]  # the tree before: nothing
    assert not [e for e in req.block(expiry - 1, spec.deadline_ms + 2_000) if isinstance(e, Refund)]
    assert [e for e in req.block(expiry, spec.deadline_ms + 3_000) if isinstance(e, Refund)]
