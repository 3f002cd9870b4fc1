"""Unsequenced claims (review rounds 12 and 13, R12-1, R13-3): a claim signed with
``seq = UNSEQUENCED`` takes no sequence number of its sender's. A requester that closes
its escrow in the block the provider's claim lands in (a settle paying its own keys, or
claims of its own keys draining it) gets that claim refused, and nothing else: the
provider's other claims and transactions in the block still apply. A sequenced claim
refused there left a gap that dropped every later transaction of the provider's, so a
few cheap sybil requesters made honest requesters' claims miss their ``claim_by``."""

from __future__ import annotations

import contextlib

import nacl.signing
import pytest

import ledger
from ledger import tx
from protocol import Signed, Transaction

from ..keys import key, pub
from .helpers import (
    ALICE,
    BOB,
    CAROL,
    CHAIN,
    COORD,
    JOB,
    Chain,
    award,
    bid,
    job_spec,
    receipt,
    settle,
)

DAVE = key("dave")
EVE = key("eve")  # holds nothing
KEY = bytes(range(32))
JOB2 = job_spec(CAROL, b"job-2").id


def _claim(
    provider: nacl.signing.SigningKey,
    *,
    owner: nacl.signing.SigningKey = ALICE,
    job: bytes = JOB,
    fee: int = 0,
    seq: int = ledger.UNSEQUENCED,
    expiry: int = 20,
) -> Signed[Transaction]:
    return tx.claim(
        provider,
        CHAIN,
        seq,
        job_id=job,
        award=award(owner, provider, 100, job=job),
        receipt=receipt(owner, provider, job=job, key=KEY, at_once=True, claim_by=15),
        expiry_height=expiry,
        unseal_key=KEY,
        fee=fee,
    )


def _locked(c: Chain, payees: int = 2) -> None:
    """ALICE's escrow of JOB and CAROL's of JOB2, 300 each, 100 a payee."""
    c.ok(c.lock(ALICE, 300, claim_at=16, expire_at=18, per_payee=100, payees=payees))
    lock2 = tx.lock(
        CAROL,
        CHAIN,
        c.seq(CAROL),
        job_id=JOB2,
        amount=300,
        claim_height=16,
        escrow_expiry=18,
        max_per_payee=100,
        max_payees=payees,
        spec=job_spec(CAROL, b"job-2").raw,
        expiry_height=c.height + 10,
    )
    c.ok(lock2)


def test_an_unsequenced_claim_takes_no_sequence_number_and_applies_once() -> None:
    c = Chain.new()
    _locked(c)
    c.ok(_claim(BOB))
    assert c.state.next_seq(pub(BOB)) == 0
    assert c.state.balance(pub(BOB)) == 1_000_100
    # Its replay, the same bytes or signed again, is refused by the escrow.
    c.rejects(_claim(BOB), ledger.EscrowError)
    c.rejects(_claim(BOB, fee=1), ledger.EscrowError)
    # A number below, or any other kind without a number, is no claim's.
    transfer = tx.transfer(
        BOB, CHAIN, ledger.UNSEQUENCED, to=pub(CAROL), amount=1, expiry_height=20
    )
    c.rejects(transfer, ledger.SequenceError)
    c.ok(c.transfer(BOB, CAROL, 1))  # its sequence number 0 is still free
    assert c.state.next_seq(pub(BOB)) == 1
    # A sequenced claim still takes its number (chains signed before stay valid).
    c.ok(_claim(BOB, owner=CAROL, job=JOB2, seq=1))
    assert c.state.next_seq(pub(BOB)) == 2


def _coordinator(c: Chain) -> ledger.Producer:
    return ledger.Producer(COORD, c.state, interval_ms=1_000, now_ms=0)


def _voided_in_block(seq_of_claims: bool) -> tuple[ledger.State, list[ledger.TxDropped]]:
    """BOB claims from ALICE's escrow and CAROL's and sends a transfer; ALICE, paying a
    fee that puts it first, settles her escrow to DAVE (a key of hers, with its Bid) in
    the same block."""
    c = Chain.new()
    _locked(c)
    producer = _coordinator(c)
    void = tx.settle(
        ALICE,
        CHAIN,
        c.seq(ALICE),
        job_id=JOB,
        payouts={pub(DAVE): 100},
        bids={pub(DAVE): bid(DAVE, 100)},
        expiry_height=20,
        fee=5,
    )
    producer.submit(void.raw)
    seqs = (0, 1, 2) if seq_of_claims else (ledger.UNSEQUENCED, ledger.UNSEQUENCED, 0)
    producer.submit(_claim(BOB, seq=seqs[0]).raw)
    producer.submit(_claim(BOB, owner=CAROL, job=JOB2, seq=seqs[1]).raw)
    transfer = tx.transfer(BOB, CHAIN, seqs[2], to=pub(CAROL), amount=1, expiry_height=20)
    producer.submit(transfer.raw)
    commit = producer.produce()
    assert ledger.apply_block(c.state, commit.block.raw).root == commit.state.root
    return commit.state, producer.take_dropped()


def test_a_claim_voided_in_its_block_takes_nothing_else_of_the_provider() -> None:
    state, dropped = _voided_in_block(seq_of_claims=False)
    paid = state.escrow(JOB2)
    assert paid is not None and pub(BOB) in paid.claimed  # CAROL's escrow paid BOB
    voided = state.escrow(JOB)
    assert voided is not None and not voided.is_open and pub(BOB) not in voided.claimed
    assert state.next_seq(pub(BOB)) == 1  # the transfer applied
    assert state.balance(pub(BOB)) == 1_000_000 + 100 - 1
    assert [d.sender for d in dropped] == [pub(BOB)]
    assert "closed" in dropped[0].reason or "settled" in dropped[0].reason


def test_before_a_sequenced_claim_voided_in_its_block_dropped_the_provider_s_others() -> None:
    """What unsequenced claims mend: the same block with sequenced claims pays BOB nothing."""
    state, dropped = _voided_in_block(seq_of_claims=True)
    paid = state.escrow(JOB2)
    assert paid is not None and pub(BOB) not in paid.claimed
    assert state.next_seq(pub(BOB)) == 0
    assert len(dropped) == 3 and all(d.sender == pub(BOB) for d in dropped)
    assert sum(d.reason.startswith(ledger.DROPPED_BEHIND) for d in dropped) == 2


def test_the_pool_takes_one_claim_per_provider_and_escrow_and_payees_per_escrow() -> None:
    c = Chain.new()
    _locked(c)
    pool = ledger.Mempool(CHAIN)
    first = pool.add(_claim(BOB).raw, c.state)
    with pytest.raises(ledger.MempoolRejected, match="already pending"):
        pool.add(_claim(BOB, expiry=21).raw, c.state)  # same fee: no replacement
    pool.add(_claim(BOB, fee=1).raw, c.state)  # a higher fee replaces it
    assert first.id not in pool and len(pool) == 1
    # EVE holds nothing: an unsequenced claim needs no funds (fee 0 here).
    pool.add(_claim(EVE).raw, c.state)
    with pytest.raises(ledger.MempoolRejected, match="as many claims pending as payees"):
        pool.add(_claim(DAVE).raw, c.state)  # max_payees is 2
    # Only a claim the next block would take: not someone else's award, not a closed one.
    stolen = tx.claim(
        DAVE,
        CHAIN,
        ledger.UNSEQUENCED,
        job_id=JOB2,
        award=award(CAROL, BOB, 100, job=JOB2),
        receipt=receipt(CAROL, BOB, job=JOB2, key=KEY, at_once=True, claim_by=15),
        expiry_height=20,
        unseal_key=KEY,
    )
    with pytest.raises(ledger.BadEvidence):
        pool.add(stolen.raw, c.state)
    # The block takes both; BOB's next sequence number is untouched.
    c.ok(*(v.signed for v in pool.select(c.state, 10)))
    pool.prune(c.state)
    assert len(pool) == 0 and c.state.next_seq(pub(BOB)) == 0
    with pytest.raises(ledger.EscrowError, match="already claimed"):
        pool.add(_claim(BOB, fee=2).raw, c.state)


def test_a_claim_whose_escrow_closed_is_dropped_with_the_reason() -> None:
    c = Chain.new()
    _locked(c)
    producer = _coordinator(c)
    producer.submit(_claim(BOB).raw)
    producer.submit(_claim(CAROL).raw)
    close = settle(ALICE, CHAIN, 1, job_id=JOB, payouts={pub(DAVE): 100}, expiry_height=20)
    c.ok(close)  # closed on the chain, in a block the coordinator did not make
    # Found when the pool is pruned against the new state ...
    gone = producer.mempool.prune(c.state)
    assert [(v.sender, reason) for v, reason in gone] == [
        (pub(BOB), "its escrow was closed before the claim was in a block"),
        (pub(CAROL), "its escrow was closed before the claim was in a block"),
    ]
    assert len(producer.mempool) == 0
    # ... or refused when a block is made: alone, remembered, reported with its number.
    c = Chain.new()
    _locked(c)
    producer = _coordinator(c)
    claim = _claim(BOB)
    producer.submit(claim.raw)
    producer.submit(close.raw)  # ALICE's settle comes first: fee 0, but smaller
    producer.submit(c.transfer(BOB, CAROL, 1).raw)
    commit = producer.produce()
    assert len(commit.block.message.txs) == 2 and claim.raw not in commit.block.message.txs
    dropped = producer.take_dropped()
    assert [(d.sender, d.seq) for d in dropped] == [(pub(BOB), ledger.UNSEQUENCED)]
    with pytest.raises(ledger.MempoolRejected, match=ledger.REFUSED_AT_BLOCK) as refused:
        producer.submit(claim.raw)
    assert "already closed" in str(refused.value)  # why, for one that missed the report


def test_a_full_pool_evicts_an_unsequenced_claim_alone() -> None:
    c = Chain.new()
    _locked(c)
    pool = ledger.Mempool(CHAIN, max_size=3)
    pool.add(c.transfer(BOB, CAROL, 1).raw, c.state)
    pool.add(_claim(BOB, owner=CAROL, job=JOB2).raw, c.state)
    pool.add(_claim(EVE).raw, c.state)
    pool.add(c.transfer(ALICE, CAROL, 1, fee=1).raw, c.state)
    evicted = pool.take_evicted()
    assert len(evicted) == 1 and evicted[0].unsequenced
    assert len(pool) == 3
    # What is left is taken by the next block, BOB's transfer included.
    produced = c.ok(*(v.signed for v in pool.select(c.state, 10)))
    assert len(produced.included) == 3


def test_a_claim_pays_its_fee_out_of_its_payout() -> None:
    """On a chain whose minimum fee is above 0, a provider holding nothing (EVE) can still
    claim: the fee comes out of the payout. More than balance and payout together is
    refused, by the pool and by the block."""
    c = Chain.new(min_fee=5)
    lock = tx.lock(
        ALICE,
        CHAIN,
        0,
        job_id=JOB,
        amount=300,
        claim_height=16,
        escrow_expiry=18,
        max_per_payee=100,
        max_payees=2,
        spec=job_spec(ALICE).raw,
        expiry_height=10,
        fee=5,
    )
    c.ok(lock)
    pool = ledger.Mempool(CHAIN)
    with pytest.raises(ledger.MempoolRejected, match="payout 100 cannot pay the fee 101"):
        pool.add(_claim(EVE, fee=101).raw, c.state)
    c.rejects(_claim(EVE, fee=101), ledger.InsufficientFunds)
    pool.add(_claim(EVE, fee=5).raw, c.state)
    fees = c.state.fees
    c.ok(*(v.signed for v in pool.select(c.state, 10)))
    assert c.state.balance(pub(EVE)) == 95 and c.state.fees == fees + 5
    # A fee its payout pays is no pledge against the balance: BOB (1,000,000) may pledge
    # his whole balance in other fees and still claim.
    pool = ledger.Mempool(CHAIN)
    transfer = tx.transfer(
        BOB, CHAIN, 0, to=pub(CAROL), amount=1, fee=1_000_000, expiry_height=c.height + 5
    )
    pool.add(transfer.raw, c.state)
    pool.add(_claim(BOB, fee=100).raw, c.state)
    with pytest.raises(ledger.MempoolRejected, match="on top of the fees"):
        pool.add(_claim(BOB, fee=101).raw, c.state)  # 1 over its payout: no room


def test_fresh_keys_claims_on_a_few_owners_escrows_cannot_keep_an_honest_claim_out() -> None:
    """Review round 14, R14-2: fresh keys holding nothing, each with a fee-0 claim a few
    bytes smaller than an honest one on escrows of the attacker's (self-awarded), filled
    the pool. The honest claim was refused as full (no sender held more than it would),
    evicted by the next junk claim once in (it was then the biggest sender), and ranked
    behind every smaller first-round claim. Claims now count against their escrow's
    owner, who funds the locks: the owner's share is evicted, and its claims take one
    round of the block at a time."""
    owners = [key(f"r14-2 owner {i}") for i in range(2)]
    honest_owner, honest = key("r14-2 honest requester"), key("r14-2 honest provider")
    funds = {pub(o): 10**6 for o in (*owners, honest_owner)}
    genesis = ledger.make_genesis(CHAIN, [pub(COORD)], funds)
    producer = ledger.Producer(
        COORD,
        ledger.State.from_genesis(genesis),
        interval_ms=100,
        now_ms=0,
        mempool=ledger.Mempool(CHAIN, max_size=200),
    )

    def lock(owner: nacl.signing.SigningKey, seq: int, label: bytes, payees: int) -> bytes:
        spec = job_spec(owner, label)
        producer.submit(
            tx.lock(
                owner,
                CHAIN,
                seq,
                job_id=spec.id,
                amount=100 * payees,
                claim_height=90,
                escrow_expiry=99,
                max_per_payee=100,
                max_payees=payees,
                spec=spec.raw,
                expiry_height=50,
            ).raw
        )
        return spec.id

    theirs = [
        (o, lock(o, i, b"r14-2 %d %d" % (n, i), 64)) for n, o in enumerate(owners) for i in range(2)
    ]
    job = lock(honest_owner, 0, b"r14-2 honest", 1)
    producer.produce()

    def claim(
        owner: nacl.signing.SigningKey, provider: nacl.signing.SigningKey, job: bytes, unseal: bytes
    ) -> bytes:
        return tx.claim(
            provider,
            CHAIN,
            ledger.UNSEQUENCED,
            job_id=job,
            award=award(owner, provider, 1 if owner is not honest_owner else 100, job=job),
            receipt=receipt(owner, provider, job=job, key=unseal, at_once=True, claim_by=90),
            expiry_height=60,
            unseal_key=unseal,
        ).raw

    junk = [
        claim(o, key(f"r14-2 sybil {i}"), j, b"k")
        for i, (o, j) in enumerate(theirs[i // 64] for i in range(256))
    ]
    for raw in junk[:200]:
        producer.submit(raw)
    assert len(producer.mempool) == 200
    mine = claim(honest_owner, honest, job, KEY)
    assert len(mine) > len(junk[0])
    honest_id = producer.submit(mine).id  # before: "the mempool is full"
    for raw in junk[200:]:  # the next junk claims evict each other's owners', not it
        with contextlib.suppress(ledger.MempoolRejected):
            producer.submit(raw)
    assert honest_id in producer.mempool and len(producer.mempool) == 200
    # It is in the block's first round: one claim per owner before any owner's second.
    first = [v.raw for v in producer.mempool.select(producer.state, 3)]
    assert mine in first


def test_within_an_owners_claims_the_higher_fee_goes_first() -> None:
    """Review round 15, R15-3: an owner's claims went by arrival alone, so a fee-10 claim
    behind a fee-0 one on the same owner's escrows ranked last of the block's candidates."""
    c = Chain.new()
    _locked(c, payees=3)
    pool = ledger.Mempool(CHAIN)
    pool.add(_claim(CAROL).raw, c.state)  # on ALICE's escrow, fee 0
    paying = pool.add(_claim(BOB, fee=10).raw, c.state)  # ALICE's too, later, fee 10
    pool.add(_claim(DAVE, owner=CAROL, job=JOB2).raw, c.state)  # another owner's, fee 0
    assert pool.select(c.state, 1) == [paying]


def test_a_resent_pending_transaction_costs_no_signature_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Review round 15, R15-6: nodes send their pending transactions again (a coordinator
    reconnected, the queue's probe); each resend cost a signature check."""
    import ledger._mempool as mempool_module

    c = Chain.new()
    _locked(c)
    pool = ledger.Mempool(CHAIN)
    raw = _claim(BOB).raw
    pool.add(raw, c.state)
    checks = 0
    verify = mempool_module.verify_tx

    def counted(data: bytes, chain: str) -> ledger.VerifiedTx:
        nonlocal checks
        checks += 1
        return verify(data, chain)

    monkeypatch.setattr(mempool_module, "verify_tx", counted)
    for _ in range(5):
        with pytest.raises(ledger.MempoolRejected, match="already in the mempool"):
            pool.add(raw, c.state)
    assert checks == 0


def test_claims_pending_on_an_escrow_may_not_take_more_than_it_holds() -> None:
    """Review round 15, R15-4: each claim's fee is backed by its payout, but 64 claims
    pending on one escrow all counted the same remaining credits: 32 locked let 2,000
    fee-paying claims evict fee-0 transactions, and the block refused 1,968 of them with
    no fee paid."""
    c = Chain.new()
    _locked(c, payees=4)  # ALICE's escrow holds 300, 100 a payee
    pool = ledger.Mempool(CHAIN)
    pool.add(_claim(BOB).raw, c.state)
    pool.add(_claim(CAROL).raw, c.state)
    pool.add(_claim(DAVE).raw, c.state)  # 300 of 300
    eve = tx.claim(
        EVE,
        CHAIN,
        ledger.UNSEQUENCED,
        job_id=JOB,
        award=award(ALICE, EVE, 1),
        receipt=receipt(ALICE, EVE, key=KEY, at_once=True, claim_by=15),
        expiry_height=20,
        unseal_key=KEY,
    )
    with pytest.raises(ledger.MempoolRejected, match="would take 300 of the 300"):
        pool.add(eve.raw, c.state)
