"""The machines driven by hand: bad input, refusals, and single transitions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TypeVar

import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import Award, Bid, Receipt, Result, Usage, sign
from protocol._examples import example_signed
from scheduler import (
    AbortJob,
    Deliver,
    Effect,
    JobRejected,
    LockEscrow,
    Misbehaved,
    Provider,
    ProviderConfig,
    Publish,
    Requester,
    RequesterConfig,
    RunJob,
    Send,
    SetTimer,
    UnknownJob,
)

from ._harness import CHAIN, CLASS, START_MS, Sim, honest_output

T = TypeVar("T")
USAGE = Usage(cpu_ms=1, wall_ms=1, peak_memory_kb=1, gpu_ms=0)


def _pair() -> tuple[Sim, Requester, Provider, nacl.signing.SigningKey]:
    sim = Sim(42)
    rkey = sim.key()
    pkey = sim.key()
    req = Requester(RequesterConfig(key=rkey, chain_id=CHAIN))
    prov = Provider(ProviderConfig(key=pkey, chain_id=CHAIN, capability_classes=(CLASS,)))
    return sim, req, prov, rkey


def _of(effects: Sequence[object], kind: type[T]) -> list[T]:
    return [e for e in effects if isinstance(e, kind)]


def test_submit_refuses_bad_specs() -> None:
    sim, req, _, _ = _pair()
    other = sim.add_requester()
    with pytest.raises(JobRejected, match="requester"):
        req.submit(sim.spec(other), sim.now)
    me = sim.add_requester()
    mine = Requester(RequesterConfig(key=me.key, chain_id=CHAIN))
    spec = sim.spec(me)
    with pytest.raises(JobRejected, match="deadline"):
        mine.submit(replace(spec, deadline_ms=sim.now + 10), sim.now)
    mine.block(spec.escrow_expiry_height - 5, sim.now)  # the chain has moved on
    with pytest.raises(JobRejected, match="escrow_expiry_height"):
        mine.submit(spec, sim.now)
    mine.height = 0
    mine.submit(spec, sim.now)
    with pytest.raises(JobRejected, match="nonce"):
        mine.submit(spec, sim.now)
    with pytest.raises(UnknownJob):
        mine.job(bytes(32))
    with pytest.raises(UnknownJob):
        mine.forget(mine.submit(replace(spec, nonce=bytes(16)), sim.now)[0])


def test_lock_amount_and_heights() -> None:
    sim, _, _, _ = _pair()
    node = sim.add_requester()
    req = Requester(RequesterConfig(key=node.key, chain_id=CHAIN, claim_window_blocks=7))
    spec = sim.spec(node, redundancy=2, max_retries=3, max_price=1_000)
    job_id, fx = req.submit(spec, sim.now)
    (lock,) = _of(fx, LockEscrow)
    assert lock.amount == 5_000 and lock.max_per_payee == 1_000 and lock.max_payees == 5
    assert lock.claim_height == spec.escrow_expiry_height - 7
    announce = req.escrow_locked(job_id, sim.now)
    (pub,) = _of(announce, Publish)
    assert pub.topic == CLASS and pub.message.id == job_id
    assert req.escrow_locked(job_id, sim.now) == []  # only once


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=600))
def test_garbage_never_raises(data: bytes) -> None:
    _, req, prov, _ = _pair()
    for fx in (req.receive(data, START_MS), prov.receive(data, START_MS)):
        assert all(isinstance(e, Misbehaved) for e in fx)


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_mutated_messages_never_raise(data: st.DataObject) -> None:
    _, req, prov, _ = _pair()
    raw = bytearray(data.draw(st.sampled_from([s.raw for s in example_signed()])))
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    for fx in (req.receive(bytes(raw), START_MS), prov.receive(bytes(raw), START_MS)):
        assert all(isinstance(e, Misbehaved) for e in fx)


def test_message_for_another_chain_is_refused() -> None:
    _, req, prov, _ = _pair()
    raw = example_signed()[1].raw  # a JobSpec on the test-vector chain
    (fx,) = prov.receive(raw, START_MS)
    assert isinstance(fx, Misbehaved) and "chain" in fx.reason
    assert req.receive(raw, START_MS)[0].reason.startswith("unexpected message type")  # type: ignore[union-attr]


def _run_to_award(
    sim: Sim, req: Requester, prov: Provider, rkey: nacl.signing.SigningKey
) -> tuple[bytes, Award, list[Effect]]:
    node = type("N", (), {"pub": bytes(rkey.verify_key)})
    spec = sim.spec(node, redundancy=1, max_retries=1)  # type: ignore[arg-type]
    job_id, _ = req.submit(spec, sim.now, providers=[prov.me])
    (sent,) = _of(req.escrow_locked(job_id, sim.now), Send)
    (bid_send,) = _of(prov.receive(sent.message.raw, sim.now), Send)
    assert isinstance(bid_send.message.message, Bid)
    req.receive(bid_send.message.raw, sim.now + 10)
    from scheduler import TimerKey

    fx = req.timer(TimerKey("bids", job_id), sim.now + spec.bid_window_ms)
    (award_send,) = [e for e in _of(fx, Send) if isinstance(e.message.message, Award)]
    fx2 = prov.receive(award_send.message.raw, sim.now + 400)
    return job_id, award_send.message.message, fx2


def test_award_runs_and_result_gets_a_receipt() -> None:
    sim, req, prov, rkey = _pair()
    job_id, _award, fx = _run_to_award(sim, req, prov, rkey)
    assert _of(fx, RunJob)
    assert _of(fx, SetTimer)
    assert prov.active == 1
    assert req.may_fetch(job_id, prov.me)
    assert not req.may_fetch(job_id, bytes(32))
    assert not req.may_fetch(bytes(32), prov.me)
    spec = req.job(job_id).spec
    out = honest_output(spec)
    (deliver,) = _of(
        prov.job_finished(job_id, sim.now + 900, outcome="ok", output=out, usage=USAGE), Deliver
    )
    # Output bytes that do not match the result's hash: no receipt, counted against the peer.
    bad = req.receive(deliver.result.raw, sim.now + 950, output=b"other")
    assert _of(bad, Misbehaved) and not _of(bad, Send)
    good = req.receive(deliver.result.raw, sim.now + 960, output=deliver.output)
    (receipt,) = [e for e in _of(good, Send) if isinstance(e.message.message, Receipt)]
    assert receipt.message.message.result_hash == deliver.result.id
    assert req.job(job_id).done is not None and req.job(job_id).done.status == "verified"  # type: ignore[union-attr]
    assert not req.may_fetch(job_id, prov.me)  # decided: nothing more to serve
    # A resent result (our receipt was lost) gets the same receipt again.
    again = req.receive(deliver.result.raw, sim.now + 970, output=deliver.output)
    assert [e.message.raw for e in _of(again, Send)] == [receipt.message.raw]
    assert prov.receive(receipt.message.raw, sim.now + 980) != []
    assert prov.get(job_id).phase == "receipted"


def test_forged_award_is_refused() -> None:
    sim, req, prov, rkey = _pair()
    _job_id, award, _ = _run_to_award(sim, req, prov, rkey)
    forged = sign(replace(award, price=award.price + 1), rkey, CHAIN)
    # Already running: a second, different award for the job is misbehaviour.
    assert _of(prov.receive(forged.raw, sim.now + 500), Misbehaved)


def test_run_past_the_award_deadline_is_aborted() -> None:
    sim, req, prov, rkey = _pair()
    job_id, award, _ = _run_to_award(sim, req, prov, rkey)
    from scheduler import TimerKey

    fx = prov.timer(TimerKey("heartbeat", job_id), award.deadline_ms)
    assert _of(fx, AbortJob)
    assert prov.active == 0
    late = prov.job_finished(job_id, award.deadline_ms + 1, outcome="ok", output=None, usage=USAGE)
    assert late == []


def test_failed_run_is_reported_and_replaced() -> None:
    sim, req, prov, rkey = _pair()
    job_id, _award, _ = _run_to_award(sim, req, prov, rkey)
    fx = prov.job_finished(job_id, sim.now + 900, outcome="memory_limit", output=None, usage=USAGE)
    (deliver,) = _of(fx, Deliver)
    assert deliver.result.message.outcome == "memory_limit"
    res = req.receive(deliver.result.raw, sim.now + 950, output=None)
    assert req.job(job_id).replicas[0].state == "failed"
    assert not [e for e in _of(res, Send) if isinstance(e.message.message, Receipt)]


def test_result_for_a_replica_not_awarded_is_misbehaviour() -> None:
    sim, req, prov, rkey = _pair()
    job_id, _award, _ = _run_to_award(sim, req, prov, rkey)
    stranger = nacl.signing.SigningKey(bytes([7]) * 32)
    out = honest_output(req.job(job_id).spec)
    res = Result(
        job_id,
        bytes(stranger.verify_key),
        0,
        "ok",
        "",
        out.commitment,
        out.hash,
        len(out.data),
        out.determinism_class,
        USAGE,
        sim.now,
    )
    fx = req.receive(sign(res, stranger, CHAIN).raw, sim.now + 1, output=out.data)
    assert _of(fx, Misbehaved)
