"""The machines driven by hand: bad input, refusals, and single transitions."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import fields, replace
from typing import TypeVar

import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ledger
import protocol
from protocol import (
    Award,
    Bid,
    JobSpec,
    NoBid,
    Receipt,
    Result,
    Unseal,
    Usage,
    content_hash,
    sign,
    unseal_output,
)
from protocol._examples import example_signed
from scheduler import (
    AbortJob,
    BidOutcome,
    CancelTimer,
    ClaimWithReceipt,
    Deliver,
    Effect,
    JobDone,
    JobPhase,
    JobRejected,
    JobStatus,
    LockEscrow,
    Misbehaved,
    NotifyUser,
    Provider,
    ProviderConfig,
    Publish,
    ReplicaState,
    Reputation,
    Requester,
    RequesterConfig,
    RunJob,
    Send,
    SetTimer,
    TimerKey,
    TimerKind,
    UnknownJob,
    WorkPhase,
)
from scheduler._provider import AWARD_HOLD_BLOCKS, RESERVE_WAIT_BLOCKS
from scheduler._requester_jobs import KEY_DUE_BLOCKS

from ..keys import key
from ._harness import CHAIN, CLASS, START_MS, Sim, commitment, honest_output

T = TypeVar("T")
USAGE = Usage(cpu_ms=1, wall_ms=1, peak_memory_kb=1, gpu_ms=0)


def _pair(
    escrow: Callable[[JobSpec, bytes], ledger.Escrow | None] | None = None,
) -> tuple[Sim, Requester, Provider, nacl.signing.SigningKey]:
    """A requester and a provider whose ledger shows ``escrow(spec, requester)`` for each of
    the requester's jobs (by default the escrow it asks for: an award runs only on one)."""
    sim = Sim(42)
    rkey = sim.key()
    pkey = sim.key()
    req = Requester(RequesterConfig(key=rkey, chain_id=CHAIN, commitment=commitment))
    shown = escrow or (lambda spec, owner: _covering_escrow(spec, owner, prov))

    def escrow_of(job_id: bytes) -> ledger.Escrow | None:
        job = req.jobs.get(job_id)
        return None if job is None else shown(job.spec, req.me)

    cfg = ProviderConfig(key=pkey, chain_id=CHAIN, capability_classes=(CLASS,), escrow_of=escrow_of)
    prov = Provider(cfg)
    return sim, req, prov, rkey


def _of(effects: Sequence[object], kind: type[T]) -> list[T]:
    return [e for e in effects if isinstance(e, kind)]


def test_the_typed_vocabulary_is_the_spec_strings() -> None:
    """States and effect vocabulary are StrEnums whose values are specs/marketplace.md's
    strings: JSON views, and drivers comparing with plain strings, see no change."""
    assert list(JobPhase) == ["locking", "collecting", "executing", "settling", "closed"]
    assert list(ReplicaState) == ["running", "committed", "delivered", "failed"]
    assert list(WorkPhase) == [
        "bidding", "awarded", "running", "delivered", "receipted", "claimed", "closed"
    ]  # fmt: skip
    assert list(JobStatus) == ["verified", "unverified", "failed"]
    assert list(TimerKind) == ["bids", "watch", "deadline", "bid", "heartbeat", "resend"]
    assert list(BidOutcome) == ["won", "lost", "declined"]
    assert json.dumps({JobPhase.LOCKING: WorkPhase.CLAIMED}) == '{"locking": "claimed"}'
    assert TimerKey(TimerKind.BIDS, b"j") == TimerKey("bids", b"j")  # type: ignore[arg-type]


def test_submit_refuses_bad_specs() -> None:
    sim, req, _, _ = _pair()
    other = sim.add_requester()
    with pytest.raises(JobRejected, match="requester"):
        req.submit(sim.spec(other), sim.now)
    me = sim.add_requester()
    mine = Requester(RequesterConfig(key=me.key, chain_id=CHAIN, commitment=commitment))
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
    req = Requester(
        RequesterConfig(key=node.key, chain_id=CHAIN, commitment=commitment, claim_window_blocks=7)
    )
    spec = sim.spec(node, redundancy=2, max_retries=3, max_price=1_000)
    job_id, fx = req.submit(spec, sim.now)
    (lock,) = _of(fx, LockEscrow)
    assert lock.amount == 5_000 and lock.max_per_payee == 1_000 and lock.max_payees == 5
    assert lock.claim_height == spec.escrow_expiry_height - 7
    (pub,) = _of(fx, Publish)  # announced at once, while the lock is on its way
    assert pub.topic == CLASS and pub.message.id == job_id
    (locked,) = req.escrow_locked(job_id, sim.now)  # the window is still open: no award
    assert isinstance(locked, NotifyUser) and locked.event == "locked"
    assert req.job(job_id).phase == "collecting"
    assert req.escrow_locked(job_id, sim.now) == []  # only once


def _spec_for(sim: Sim, rkey: nacl.signing.SigningKey, **kw: int) -> JobSpec:
    node = type("N", (), {"pub": bytes(rkey.verify_key)})
    return sim.spec(node, **kw)  # type: ignore[arg-type]


def _awards(effects: Sequence[Effect]) -> list[Award]:
    return [e.message.message for e in _of(effects, Send) if isinstance(e.message.message, Award)]


def _providers(sim: Sim, n: int) -> list[Provider]:
    return [
        Provider(ProviderConfig(key=sim.key(), chain_id=CHAIN, capability_classes=(CLASS,)))
        for _ in range(n)
    ]


def _submit_to(
    sim: Sim, req: Requester, rkey: nacl.signing.SigningKey, provs: list[Provider]
) -> tuple[bytes, dict[bytes, bytes]]:
    """Submit a redundancy-1 job naming ``provs``; its id and the announcement each got."""
    spec = _spec_for(sim, rkey, redundancy=1, max_retries=1)
    job_id, fx = req.submit(spec, sim.now, providers=[p.me for p in provs])
    return job_id, {e.peer: e.message.raw for e in _of(fx, Send)}


def test_nothing_is_awarded_before_the_lock_is_confirmed() -> None:
    sim, req, prov, rkey = _pair()
    spec = _spec_for(sim, rkey, redundancy=1, max_retries=1)
    job_id, fx = req.submit(spec, sim.now, providers=[prov.me])
    (sent,) = _of(fx, Send)
    (bid,) = _of(prov.receive(sent.message.raw, sim.now + 5), Send)
    # Every named provider answered, the window is over: still no award without the lock.
    assert _awards(req.receive(bid.message.raw, sim.now + 10)) == []
    assert _awards(req.timer(TimerKey(TimerKind.BIDS, job_id), sim.now + spec.bid_window_ms)) == []
    assert not req.may_fetch(job_id, prov.me)
    assert not req.awarded_to(prov.me)  # a bidder sends no output: no large frame
    (award,) = _awards(req.escrow_locked(job_id, sim.now + spec.bid_window_ms + 50))
    assert award.provider == prov.me and req.may_fetch(job_id, prov.me)
    assert req.awarded_to(prov.me) and not req.awarded_to(bytes(32))


def test_the_window_closes_once_every_named_provider_answered() -> None:
    sim, req, _, rkey = _pair()
    provs = _providers(sim, 2)
    job_id, sends = _submit_to(sim, req, rkey, provs)
    assert _awards(req.escrow_locked(job_id, sim.now + 5)) == []
    (first,) = _of(provs[0].receive(sends[provs[0].me], sim.now + 6), Send)
    assert _awards(req.receive(first.message.raw, sim.now + 8)) == []  # one still to answer
    (second,) = _of(provs[1].receive(sends[provs[1].me], sim.now + 7), Send)
    fx = req.receive(second.message.raw, sim.now + 9)
    assert len(_awards(fx)) >= 1  # long before the window's end
    assert any(isinstance(e, CancelTimer) and e.key.kind == "bids" for e in fx)


def test_only_refusals_do_not_close_the_window_early() -> None:
    sim, req, _, rkey = _pair()
    full = Provider(
        ProviderConfig(key=sim.key(), chain_id=CHAIN, capability_classes=("other.class",))
    )
    spec = _spec_for(sim, rkey, redundancy=1, max_retries=1)
    job_id, fx = req.submit(spec, sim.now, providers=[full.me])
    req.escrow_locked(job_id, sim.now + 5)
    (sent,) = _of(fx, Send)
    (nobid,) = _of(full.receive(sent.message.raw, sim.now + 6), Send)
    assert req.receive(nobid.message.raw, sim.now + 8) == []
    assert req.job(job_id).phase == "collecting"  # the window runs on: others may still bid


def test_lost_bids_stop_counting_as_load_after_their_window() -> None:
    sim, _, _, rkey = _pair()
    cfg = ProviderConfig(
        key=sim.key(), chain_id=CHAIN, capability_classes=(CLASS,), max_concurrency=1, overbook=1
    )
    prov = Provider(cfg)

    def answer(at: int) -> object:
        spec = _spec_for(sim, rkey, redundancy=1, max_retries=1)
        signed = sign(spec, rkey, CHAIN)
        (fx,) = _of(prov.receive(signed.raw, at), Send)
        return fx.message.message

    window = _spec_for(sim, rkey).bid_window_ms
    assert isinstance(answer(sim.now), Bid)
    busy = answer(sim.now + 1)  # the first bid's window is open: an award may come
    assert not isinstance(busy, Bid) and busy.reason == "busy"  # type: ignore[attr-defined]
    # Nobody awarded the first bid within its window: lost, though it stays valid.
    assert isinstance(answer(sim.now + window + 1), Bid)
    assert prov.bidding == 2 and prov.pending(sim.now + window + 1) == 1


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
    sim: Sim,
    req: Requester,
    prov: Provider,
    rkey: nacl.signing.SigningKey,
    spec: JobSpec | None = None,
) -> tuple[bytes, Award, list[Effect]]:
    spec = spec or _spec_for(sim, rkey, redundancy=1, max_retries=1)
    job_id, fx = req.submit(spec, sim.now, providers=[prov.me])
    assert _awards(req.escrow_locked(job_id, sim.now)) == []
    (sent,) = _of(fx, Send)
    (bid_send,) = _of(prov.receive(sent.message.raw, sim.now), Send)
    assert isinstance(bid_send.message.message, Bid)
    fx = req.receive(bid_send.message.raw, sim.now + 10)  # the only one named: awarded now
    (award_send,) = [e for e in _of(fx, Send) if isinstance(e.message.message, Award)]
    fx2 = prov.receive(award_send.message.raw, sim.now + 400)
    return job_id, award_send.message.message, fx2


def _covering_escrow(spec: JobSpec, owner: bytes, prov: Provider) -> ledger.Escrow:
    """The requester's escrow for ``spec`` as the ledger shows it once locked."""
    window = prov.config.claim_window_blocks
    budget = spec.max_price * (spec.redundancy + spec.max_retries)
    base: dict[str, object] = {
        "owner": owner,
        "locked": budget,
        "remaining": budget,
        "claim_height": spec.escrow_expiry_height - window,
        "expiry_height": spec.escrow_expiry_height,
        "max_per_payee": spec.max_price,
        "max_payees": 1,
    }
    return ledger.Escrow(**base)  # type: ignore[arg-type]


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
    # Fair exchange: the Result (the output commitment) goes with the output sealed under
    # a one-time key that only the provider knows yet.
    (commit,) = _of(
        prov.job_finished(job_id, sim.now + 900, outcome="ok", output=out, usage=USAGE), Deliver
    )
    res = commit.result.message
    assert commit.output and out.data not in commit.output
    assert res.output_hash == content_hash(commit.output) and res.key_hash != bytes(32)
    assert prov.get(job_id).phase == "delivered"
    # Sealed bytes that are not the announced blob: counted, and no receipt for them.
    bad = req.receive(commit.result.raw, sim.now + 940, output=b"other")
    assert _of(bad, Misbehaved) and not _of(bad, Send)
    taken = req.receive(commit.result.raw, sim.now + 950, output=commit.output)
    (receipt,) = [e for e in _of(taken, Send) if isinstance(e.message.message, Receipt)]
    r = receipt.message.message
    assert r.result_hash == commit.result.id and r.output_commitment == res.output_commitment
    assert r.sealed and r.key_hash == res.key_hash  # a verified winner's: claimable at once
    assert req.job(job_id).done is None  # verified by commitment; the key is still due
    # The receipt is what a claim needs, on an escrow that can pay it: the ledger shows
    # the requester's escrow, with room for the award and the job's own expiry (the award
    # ran only on it), but not our place reserved in it (the ``reserve`` we asked for as
    # the run started): once RESERVE_WAIT_BLOCKS passed without it, the claim goes, with
    # the key that opens the sealed bytes.
    escrow = _covering_escrow(spec, bytes(rkey.verify_key), prov)
    effects = prov.receive(receipt.message.raw, sim.now + 955)
    effects += prov.follow_ledger(RESERVE_WAIT_BLOCKS - 1, {job_id: escrow}.get, sim.now + 956)
    assert not _of(effects, ClaimWithReceipt) and prov.get(job_id).phase == "receipted"
    effects += prov.follow_ledger(RESERVE_WAIT_BLOCKS, {job_id: escrow}.get, sim.now + 956)
    (claim,) = _of(effects, ClaimWithReceipt)
    assert claim.receipt.raw == receipt.message.raw and unseal_output(claim.key, commit.output)
    assert not [e for e in _of(effects, Send) if isinstance(e.message.message, Unseal)]
    assert prov.get(job_id).phase == "claimed"
    # The receipt again, while the claim lands: nothing more.
    assert prov.receive(receipt.message.raw, sim.now + 957) == []
    # A resent result (our receipt was lost) gets the same receipt again.
    again = req.receive(commit.result.raw, sim.now + 958, output=commit.output)
    assert [e.message.raw for e in _of(again, Send)] == [receipt.message.raw]
    # The claim's block publishes the key: the requester reads it from the escrow and
    # opens the output (the Unseal that follows the payment may be lost).
    claimed = replace(escrow, unsealed=((prov.me, claim.key),), claimed=(prov.me,))
    opened = req.follow_ledger(RESERVE_WAIT_BLOCKS + 1, {job_id: claimed}.get, sim.now + 960)
    done = req.job(job_id).done
    assert done is not None and done.status == "verified" and done.output == out
    assert not [e for e in _of(opened, Send) if isinstance(e.message.message, Receipt)]
    assert not req.may_fetch(job_id, prov.me)  # decided: nothing more to serve
    # Paid by its claim: its work ends, and no Unseal goes (the claim's block carried the
    # key, which the requester reads: one message less per job).
    paid = prov.paid(job_id, _award.price, sim.now + 5_000)
    assert not [e for e in _of(paid, Send) if isinstance(e.message.message, Unseal)]
    assert job_id not in prov.work
    # A key for a replica already opened changes nothing.
    late = Unseal(job_id, prov.me, 0, commit.result.id, claim.key)
    assert req.receive(sign(late, prov.config.key, CHAIN).raw, sim.now + 5_001) == []


def test_a_requester_that_settles_to_its_own_bidders_first_never_gets_the_key() -> None:
    """Review finding F4: a requester holding the output settled, before the claim window,
    paying bidders of its own instead of the provider that delivered. Now it holds only
    the sealed bytes when it can do that: the provider publishes the key with its claim,
    and a settle that lands first closes the escrow to the claim, so the key never goes
    (the ledger half: tests/ledger/test_sealed_claims.py)."""
    sim, req, prov, rkey = _pair()
    job_id, _award, _ = _run_to_award(sim, req, prov, rkey)
    spec = req.job(job_id).spec
    out = honest_output(spec)
    (commit,) = _of(
        prov.job_finished(job_id, sim.now + 900, outcome="ok", output=out, usage=USAGE), Deliver
    )
    taken = req.receive(commit.result.raw, sim.now + 950, output=commit.output)
    (receipt,) = [e for e in _of(taken, Send) if isinstance(e.message.message, Receipt)]
    effects = prov.receive(receipt.message.raw, sim.now + 951)
    escrow = _covering_escrow(spec, bytes(rkey.verify_key), prov)
    effects += prov.follow_ledger(RESERVE_WAIT_BLOCKS, {job_id: escrow}.get, sim.now + 952)
    assert _of(effects, ClaimWithReceipt)  # no place reserved: the key goes with the claim
    sybil = bytes(sim.key().verify_key)
    settled = replace(
        escrow, status=ledger.EscrowStatus.SETTLED, remaining=0, paid=((sybil, escrow.locked),)
    )
    effects = prov.follow_ledger(RESERVE_WAIT_BLOCKS + 1, {job_id: settled}.get, sim.now + 953)
    effects += prov.timer(TimerKey(TimerKind.RESEND, job_id), sim.now + 5_000)
    assert not [e for e in _of(effects, Send) if isinstance(e.message.message, Unseal)]
    assert job_id not in prov.work  # ended unpaid: "escrow closed without paying us"
    # All the requester holds is the sealed blob: no key on the ledger, none sent.
    assert out.data not in commit.output and req.job(job_id).done is None


def _delivered(
    sim: Sim, req: Requester, prov: Provider, rkey: nacl.signing.SigningKey
) -> tuple[bytes, Award, Deliver]:
    """A job of ``req`` awarded to ``prov``, run, and its Result with the sealed output
    delivered (not yet taken by the requester)."""
    job_id, award, _ = _run_to_award(sim, req, prov, rkey)
    out = honest_output(req.job(job_id).spec)
    (commit,) = _of(
        prov.job_finished(job_id, sim.now + 900, outcome="ok", output=out, usage=USAGE), Deliver
    )
    return job_id, award, commit


def _unseals(effects: Sequence[Effect]) -> list[Unseal]:
    return [e.message.message for e in _of(effects, Send) if isinstance(e.message.message, Unseal)]


def _plain_receipt(
    sim: Sim, req: Requester, prov: Provider, rkey: nacl.signing.SigningKey, commit: Deliver
) -> tuple[Receipt, JobSpec, ledger.Escrow]:
    """A plain receipt (``at_once`` 0) for the delivered result, the job, and its escrow."""
    res = commit.result.message
    plain = Receipt(
        res.job_id, bytes(rkey.verify_key), prov.me, res.replica, commit.result.id,
        res.output_commitment, res.key_hash, 0, 0, sim.now,
    )  # fmt: skip
    spec = req.job(res.job_id).spec
    return plain, spec, _covering_escrow(spec, bytes(rkey.verify_key), prov)


def test_a_plain_receipt_in_exact_mode_gets_no_key_before_pay() -> None:
    """Review of the sealed exchange (its F1): a requester answered a verified winner with a
    plain receipt, got the key at once, and settled with its own keys. In exact mode a
    plain receipt now gets the key only with the provider's claim (in the claim window)
    or once paid its price."""
    sim, req, prov, rkey = _pair()
    job_id, award, commit = _delivered(sim, req, prov, rkey)
    plain, _spec, escrow = _plain_receipt(sim, req, prov, rkey, commit)
    effects = prov.receive(sign(plain, rkey, CHAIN).raw, sim.now + 950)
    effects += prov.follow_ledger(1, {job_id: escrow}.get, sim.now + 951)
    effects += prov.timer(TimerKey(TimerKind.RESEND, job_id), sim.now + 5_000)
    effects += prov.receive(sign(plain, rkey, CHAIN).raw, sim.now + 6_000)
    assert not _unseals(effects) and not _of(effects, ClaimWithReceipt)
    assert not _of(effects, Misbehaved) and prov.get(job_id).phase == "receipted"  # held
    # Paid less than its price (a settle at a cheaper bid of its own): still no key.
    assert not _unseals(prov.paid(job_id, award.price - 1, sim.now + 7_000))


def test_a_plain_receipt_is_claimed_with_its_key_in_the_claim_window() -> None:
    sim, req, prov, rkey = _pair()
    job_id, _award, commit = _delivered(sim, req, prov, rkey)
    res = commit.result.message
    plain, spec, escrow = _plain_receipt(sim, req, prov, rkey, commit)
    prov.receive(sign(plain, rkey, CHAIN).raw, sim.now + 950)
    prov.follow_ledger(1, {job_id: escrow}.get, sim.now + 951)
    window = escrow.expiry_height - prov.config.claim_window_blocks
    (claim,) = _of(prov.block(window, spec.deadline_ms), ClaimWithReceipt)
    assert protocol.key_hash(claim.key) == res.key_hash  # the claim publishes the key
    assert unseal_output(claim.key, commit.output) == honest_output(spec).data


def test_a_result_without_a_sealed_output_gets_no_receipt() -> None:
    """Review of the sealed exchange (its F3): a Result naming no key turned the winner's
    receipt into one no key could ever open, claimable in the claim window."""
    for change in ({"key_hash": bytes(32)}, {"output_size": 0}):
        sim, req, prov, rkey = _pair()
        job_id, _award, commit = _delivered(sim, req, prov, rkey)
        forged = sign(replace(commit.result.message, **change), prov.config.key, CHAIN)  # type: ignore[arg-type]
        fx = req.receive(forged.raw, sim.now + 950, output=commit.output)
        assert _of(fx, Misbehaved)
        assert not [e for e in _of(fx, Send) if isinstance(e.message.message, Receipt)]
        assert req.job(job_id).replicas[0].state == ReplicaState.FAILED


def test_a_sealed_receipts_key_is_awaited_for_blocks_not_seconds() -> None:
    """Review of the sealed exchange (its F4): the key comes with the claim's block, and
    with slow blocks every honest winner was failed as withholding it, and paid."""
    sim, req, prov, rkey = _pair()
    job_id, _award, commit = _delivered(sim, req, prov, rkey)
    req.block(10, sim.now + 900)
    req.receive(commit.result.raw, sim.now + 950, output=commit.output)  # sealed receipt
    rep = req.job(job_id).replicas[0]
    watch = TimerKey(TimerKind.WATCH, job_id, 0)
    half = req.config.heartbeat_timeout_ms // 2
    at = sim.now + 950
    for _ in range(6):  # far longer than the three half timeouts: no block came
        at += half
        req.timer(watch, at)
    assert rep.state == ReplicaState.COMMITTED
    req.block(10 + KEY_DUE_BLOCKS, at)
    fx = req.timer(watch, at + half)
    assert (
        rep.state == ReplicaState.FAILED and rep.reason == "withheld its output after the receipt"
    )
    assert _of(fx, NotifyUser)


def test_a_deadline_before_the_winners_claim_lands_waits_for_its_key() -> None:
    """Review of the sealed exchange (its F5): the deadline decided the job while the
    verified winner's claim was on its way; the winner was paid and the output, whose key
    the claim published, never handed over. The decision now waits for the key (the
    settle limit still forces it)."""
    sim, req, prov, rkey = _pair()
    job_id, _award, commit = _delivered(sim, req, prov, rkey)
    req.receive(commit.result.raw, sim.now + 950, output=commit.output)  # sealed receipt
    spec = req.job(job_id).spec
    fx = req.timer(TimerKey(TimerKind.DEADLINE, job_id), spec.deadline_ms)
    assert not _of(fx, JobDone) and req.job(job_id).done is None
    res = commit.result.message
    key = protocol.output_key(prov.config.key, job_id, res.replica, res.output_commitment)
    escrow = _covering_escrow(spec, bytes(rkey.verify_key), prov)
    claimed = replace(escrow, unsealed=((prov.me, key),), claimed=(prov.me,))
    fx = req.follow_ledger(3, {job_id: claimed}.get, spec.deadline_ms + 400)
    done = req.job(job_id).done
    assert done is not None and done.status == "verified"
    assert done.output == honest_output(spec)


def test_a_provider_never_bids_a_price_a_claim_cannot_pay() -> None:
    """Review of the sealed exchange (its F6): a price floor of 0 made bids at 0, whose
    claims the ledger refuses; the key never came and every such winner was failed."""
    sim = Sim(43)
    rkey = sim.key()
    prov = Provider(
        ProviderConfig(key=sim.key(), chain_id=CHAIN, capability_classes=(CLASS,), price_floor=0)
    )
    spec = sign(_spec_for(sim, rkey), rkey, CHAIN)
    (bid,) = _of(prov.receive(spec.raw, sim.now), Send)
    assert isinstance(bid.message.message, Bid) and bid.message.message.price >= 1


def test_a_plain_receipt_gets_the_key_at_once_and_again_until_the_work_ends() -> None:
    """Results judged by bytes (tolerance mode) are receipted before any verdict: a plain
    receipt, claimable only in the claim window; the key goes at once, so the requester
    can compare the outputs, and is resent at doubling intervals until the work ends."""
    sim, req, prov, rkey = _pair()
    prov.config = replace(prov.config, tolerance_jobs=True)  # refused by default
    spec = _spec_for(sim, rkey, redundancy=1, max_retries=1)
    tolerant = replace(
        spec, verification=replace(spec.verification, mode="tolerance", rtol_e9=1_000)
    )
    job_id, _award, _ = _run_to_award(sim, req, prov, rkey, spec=tolerant)
    out = honest_output(req.job(job_id).spec)
    (commit,) = _of(
        prov.job_finished(job_id, sim.now + 900, outcome="ok", output=out, usage=USAGE), Deliver
    )
    taken = req.receive(commit.result.raw, sim.now + 950, output=commit.output)
    (receipt,) = [e for e in _of(taken, Send) if isinstance(e.message.message, Receipt)]
    assert not receipt.message.message.sealed
    effects = prov.receive(receipt.message.raw, sim.now + 955)
    escrow = _covering_escrow(req.job(job_id).spec, bytes(rkey.verify_key), prov)
    effects += prov.follow_ledger(1, {job_id: escrow}.get, sim.now + 956)
    assert not _of(effects, ClaimWithReceipt)  # a plain receipt waits for the claim window
    (unseal,) = [e for e in _of(effects, Send) if isinstance(e.message.message, Unseal)]
    # A key that is not the result's is misbehaviour; the right one opens the output.
    forged = sign(replace(unseal.message.message, key=bytes(32)), prov.config.key, CHAIN)
    assert _of(req.receive(forged.raw, sim.now + 957), Misbehaved)
    req.receive(unseal.message.raw, sim.now + 958)
    done = req.job(job_id).done
    assert done is not None and done.status == "verified" and done.output == out
    # The key again now and then until the work ends; the receipt again sends it at most
    # once per resend interval.
    resend = TimerKey(TimerKind.RESEND, job_id)
    assert [type(e) for e in prov.timer(resend, sim.now + 2_000)] == [Send, SetTimer]
    assert prov.receive(receipt.message.raw, sim.now + 2_001) == []
    assert len(prov.receive(receipt.message.raw, sim.now + 2_000 + 1_000)) == 1
    assert _of(prov.paid(job_id, 1, sim.now + 5_000), CancelTimer)
    assert job_id not in prov.work


@pytest.mark.parametrize(
    ("terms", "why"),
    [
        ({}, ""),  # no escrow at all (attack: award, never lock)
        ({"expiry_height": -12}, "expires at"),  # claims would come too late to land
        ({"claim_height": +5}, "opens claims"),
        ({"max_per_payee": 1}, "cannot pay"),
        ({"owner": b"\x01" * 32}, "is not the requester's"),
    ],
)
def test_no_run_for_an_escrow_that_cannot_pay_the_award(terms: dict[str, object], why: str) -> None:
    # Review of issue 14: a requester that awards without an escrow, or locks one whose
    # terms defeat the claim (an earlier expiry, a late claim window, too small a cap),
    # received the output all the same, and the receipt could never be claimed. Review
    # h23 (W1): the provider ran such awards, so a stranger filled its slots for nothing.
    # Now the award runs only on an escrow the ledger shows covering it: one that cannot
    # is declined at once (misbehaviour), none is held for a few blocks, then declined.
    def shown(spec: JobSpec, owner: bytes) -> ledger.Escrow | None:
        if not terms:
            return None
        fields: dict[str, object] = {
            "owner": owner,
            "locked": spec.max_price,
            "remaining": spec.max_price,
            "claim_height": spec.escrow_expiry_height - prov.config.claim_window_blocks,
            "expiry_height": spec.escrow_expiry_height,
            "max_per_payee": spec.max_price,
            "max_payees": 1,
        }
        for name, change in terms.items():  # heights move by the change; others are set
            height = name.endswith("_height") and isinstance(change, int)
            fields[name] = fields[name] + change if height else change  # type: ignore[operator]
        return ledger.Escrow(**fields)  # type: ignore[arg-type]

    sim, req, prov, rkey = _pair(shown)
    job_id, _award, fx = _run_to_award(sim, req, prov, rkey)
    at = sim.now + 400
    for height in range(1, AWARD_HOLD_BLOCKS + 1):
        assert not _of(fx, RunJob) and prov.active == 0
        if job_id not in prov.work:
            break
        assert prov.get(job_id).phase == "awarded"  # held: our view may be a block behind
        at += 500
        fx += prov.follow_ledger(height, prov.config.escrow_of, at)
    (nobid,) = [e.message.message for e in _of(fx, Send) if isinstance(e.message.message, NoBid)]
    assert nobid.reason == "busy" and (why or "no escrow") in nobid.detail
    assert job_id not in prov.work and not _of(fx, RunJob)
    assert bool(why) == any(why in m.reason for m in _of(fx, Misbehaved))
    # The requester replaces a declined award at once.
    req.receive(sign(nobid, prov.config.key, CHAIN).raw, at + 1)
    assert req.job(job_id).replicas[0].state == ReplicaState.FAILED


def test_forged_award_is_refused() -> None:
    sim, req, prov, rkey = _pair()
    _job_id, award, _ = _run_to_award(sim, req, prov, rkey)
    forged = sign(replace(award, price=award.price + 1), rkey, CHAIN)
    # Already running: a second, different award for the job is misbehaviour.
    assert _of(prov.receive(forged.raw, sim.now + 500), Misbehaved)


def test_run_past_the_award_deadline_is_aborted() -> None:
    sim, req, prov, rkey = _pair()
    job_id, award, _ = _run_to_award(sim, req, prov, rkey)
    fx = prov.timer(TimerKey(TimerKind.HEARTBEAT, job_id), award.deadline_ms)
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
    stranger = key("stranger")
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
        bytes(32),
        out.determinism_class,
        USAGE,
        sim.now,
    )
    fx = req.receive(sign(res, stranger, CHAIN).raw, sim.now + 1, output=out.data)
    assert _of(fx, Misbehaved)


def test_newcomer_bids_alone_close_the_window_only_once_every_named_provider_answered() -> None:
    # (Round-3 review V1: redundancy + 1 newcomer bids used to close it, before an
    # established provider's bid, the probation replica's, could come.) Four named: the
    # announcement went to them alone, so nobody else can bid.
    sim, req, _, rkey = _pair()
    provs = _providers(sim, 4)
    job_id, sends = _submit_to(sim, req, rkey, provs)
    req.escrow_locked(job_id, sim.now + 5)
    bids = [_of(p.receive(sends[p.me], sim.now + 6), Send)[0].message.raw for p in provs]
    assert _awards(req.receive(bids[0], sim.now + 8)) == []  # one bid: wait for more
    assert _awards(req.receive(bids[1], sim.now + 9)) == []  # newcomers only: wait
    assert _awards(req.receive(bids[2], sim.now + 10)) == []
    assert _awards(req.receive(bids[3], sim.now + 11))  # every named provider answered


def test_the_topic_is_used_when_the_named_providers_may_not_be_all() -> None:
    sim, req, prov, rkey = _pair()
    # A few providers named: the lookup found the class's providers; they alone are asked.
    spec = _spec_for(sim, rkey, redundancy=1, max_retries=1)
    job_id, fx = req.submit(spec, sim.now, providers=[prov.me])
    assert not _of(fx, Publish) and [e.peer for e in _of(fx, Send)] == [prov.me]
    # Nobody answers: the next announcement goes to the topic too.
    req.escrow_locked(job_id, sim.now + 1)
    again = req.timer(TimerKey(TimerKind.BIDS, job_id), sim.now + spec.bid_window_ms)
    assert _of(again, Publish)
    assert _of(again, Send)
    # Many named (the network may be larger than the lookup's answer): the topic at once.
    many = [sim.key().verify_key.encode() for _ in range(req.config.direct_only_below)]
    spec2 = _spec_for(sim, rkey, redundancy=1, max_retries=1)
    _, fx2 = req.submit(spec2, sim.now, providers=many)
    assert _of(fx2, Publish)
    assert len(_of(fx2, Send)) == len(many)


def test_once_locked_one_bid_from_an_established_provider_is_enough() -> None:
    sim = Sim(7)
    rkey = sim.key()
    provs = _providers(sim, 3)
    veteran = provs[0].me

    def reputation(who: bytes) -> Reputation:
        return Reputation(800, 50, stake=1_000_000) if who == veteran else Reputation(800, 0)

    req = Requester(
        RequesterConfig(key=rkey, chain_id=CHAIN, commitment=commitment, reputation=reputation)
    )

    def bid(p: Provider, sends: dict[bytes, bytes]) -> bytes:
        (answer,) = _of(p.receive(sends[p.me], sim.now + 1), Send)
        return answer.message.raw

    # A newcomer's lone bid: probation wants a second one, so the window stays open.
    job_id, sends = _submit_to(sim, req, rkey, provs)
    req.escrow_locked(job_id, sim.now + 2)
    assert _awards(req.receive(bid(provs[1], sends), sim.now + 3)) == []
    # An established provider's lone bid, the escrow locked: awarded at once.
    job_id, sends = _submit_to(sim, req, rkey, provs)
    assert _awards(req.receive(bid(provs[0], sends), sim.now + 3)) == []  # not locked yet
    (award,) = _awards(req.escrow_locked(job_id, sim.now + 4))
    assert award.provider == veteran


def test_the_ledgers_provider_record_reads_as_a_reputation() -> None:
    """Every driver builds ``scheduler.Reputation(*state.provider_record(who))``: the two
    must name the same fields in the same order."""
    assert ledger.ProviderRecord._fields == tuple(f.name for f in fields(Reputation))
    state = Sim(1).ledger.state
    assert Reputation(*state.provider_record(bytes(32))) == Reputation(
        score_permille=min(1000, int(state.reputation(bytes(32)) * 1000)), settled_jobs=0
    )
