"""Review round 70: block space ranked by fee density, passed-over candidates that no
longer end a block, the producer checking the ledger's invariants, and mints refused
before the u64 count of the credits ever minted overflows (F1, F2, F3)."""

from __future__ import annotations

import dataclasses

import pytest

import ledger
import protocol
from ledger import tx
from ledger._budget import BlockBudget

from ..keys import key, pub
from .helpers import CHAIN, COORD, RECEIPT_KEY, award, bid, receipt, result, signed_block
from .test_block_budget import small_spec

R, P = key("r70-requester"), key("r70-provider")


def _flooded(attackers: int, *, min_fee: int, settle_fee: int) -> tuple[ledger.Producer, bytes]:
    """The review's scenario (F1), with as few attackers as base needed: each attacker
    locks an escrow of its own in block 1, then sends one settle paying 64 sybil keys
    1 micro-credit each (65 checks) at ``settle_fee``; a provider's sealed claim at
    ``min_fee`` must be in by the next block (its ``claim_by``). Returns the producer
    and the claim's id."""
    att = [key(f"r70-att-{i}") for i in range(attackers)]
    syb = [key(f"r70-syb-{i}") for i in range(64)]
    funds = {pub(k): 100_000 for k in att} | {pub(R): 100_000}
    g = ledger.make_genesis(CHAIN, [pub(COORD)], funds, min_fee=min_fee)
    producer = ledger.Producer(COORD, ledger.State.from_genesis(g), interval_ms=500, now_ms=0)
    rspec = small_spec(R, 1)
    producer.submit(
        tx.lock(
            R, CHAIN, 0, job_id=rspec.id, amount=1000, claim_height=90, escrow_expiry=100,
            max_per_payee=1000, max_payees=1, spec=rspec.raw, expiry_height=50, fee=min_fee,
        ).raw
    )  # fmt: skip
    specs = {}
    for i, a in enumerate(att):
        specs[pub(a)] = s = small_spec(a, 1000 + i)
        producer.submit(
            tx.lock(
                a, CHAIN, 0, job_id=s.id, amount=64, claim_height=1, escrow_expiry=100,
                max_per_payee=1, max_payees=64, spec=s.raw, expiry_height=50, fee=min_fee,
            ).raw
        )  # fmt: skip
    assert len(producer.produce().block.message.txs) == attackers + 1
    for a in att:
        s = specs[pub(a)]
        payouts = {pub(q): 1 for q in syb}
        bids = {pub(q): bid(q, 1, job=s.id) for q in syb}
        producer.submit(
            tx.settle(
                a, CHAIN, 1, job_id=s.id, payouts=payouts, bids=bids, expiry_height=50,
                fee=settle_fee,
            ).raw
        )  # fmt: skip
    h = producer.state.height
    claim = tx.claim(
        P, CHAIN, ledger.UNSEQUENCED, job_id=rspec.id,
        award=award(R, P, 1000, job=rspec.id),
        receipt=receipt(R, P, job=rspec.id, at_once=True, claim_by=h + 1),
        unseal_key=RECEIPT_KEY, expiry_height=h + 20, fee=min_fee,
    )  # fmt: skip
    producer.submit(claim.raw)
    return producer, claim.id


@dataclasses.dataclass(slots=True)
class Counting(BlockBudget):
    """A block's budget that counts the candidates looked at."""

    looked: int = 0

    def fits(self, raw: bytes, payload: ledger.Payload) -> bool:
        self.looked += 1
        return BlockBudget.fits(self, raw, payload)


def _next_block(producer: ledger.Producer) -> ledger.Commit:
    before = producer.state
    commit = producer.produce()
    assert ledger.apply_block(before, commit.block.raw).root == commit.state.root
    return commit


def test_a_claim_at_min_fee_outranks_settles_a_fee_above() -> None:
    """F1: 95 settles of 64 payouts at ``min_fee + 1`` filled the block's checks 31 at a
    time (fee per transaction) and the 64 passed over ended it: the sealed claim at
    ``min_fee`` (3 checks) expired unpaid. By fee density the claim comes first: a settle
    takes 65/3 of its share of the block for 6/5 of its fee."""
    producer, claim = _flooded(95, min_fee=5, settle_fee=6)
    commit = _next_block(producer)
    assert claim in {protocol.content_hash(raw) for raw in commit.block.message.txs}
    assert commit.state.balance(pub(P)) == 1000 - 5
    settles = [r for r in commit.block.message.txs if protocol.content_hash(r) != claim]
    assert len(settles) == 31  # 31 x 65 + 3 of the 2,048 checks


def test_settles_passed_over_no_longer_end_the_block() -> None:
    """F1: settles that outbid the claim by density (fee 200 > 65/3 x 5) take 31 x 65
    checks; 64 more no longer fit and were passed over, which ended the block with 33
    checks left: the claim (3) now takes its place in them."""
    producer, claim = _flooded(95, min_fee=5, settle_fee=200)
    commit = _next_block(producer)
    txs = {protocol.content_hash(raw) for raw in commit.block.message.txs}
    assert claim in txs and len(txs) == 32


def test_candidates_that_cannot_fit_are_set_aside_unseen() -> None:
    """The bound on the candidates looked at in vain holds without ending the block:
    with one check left, 200 locks (2 checks each) are never looked at, and the transfer
    behind them (1 check, a lower density) is the candidate given."""
    senders = [key(f"r70-lock-{i}") for i in range(200)]
    small = key("r70-small")
    g = ledger.make_genesis(CHAIN, [pub(COORD)], {pub(k): 1000 for k in [*senders, small]})
    state = ledger.State.from_genesis(g)
    pool = ledger.Mempool(CHAIN)
    for i, k in enumerate(senders):
        s = small_spec(k, 2000 + i)
        pool.add(
            tx.lock(
                k, CHAIN, 0, job_id=s.id, amount=1, claim_height=1, escrow_expiry=100,
                max_per_payee=1, max_payees=1, spec=s.raw, expiry_height=50, fee=9,
            ).raw,
            state,
        )  # fmt: skip
    transfer = tx.transfer(small, CHAIN, 0, to=pub(COORD), amount=1, expiry_height=50, fee=1)
    pool.add(transfer.raw, state)

    room = Counting(
        BlockBudget.for_block(1, CHAIN).bytes_used, ledger.MAX_BLOCK_SIGNATURE_CHECKS - 1
    )
    assert [v.id for v in pool.candidates(state, room)] == [transfer.id]
    assert room.looked == 1
    # Without a budget the order is the plain one: the locks (9 for 2 checks) first.
    assert [v.id for v in pool.select(state, 300)][-1] == transfer.id


def test_passed_over_for_bytes_sets_aside_the_larger_ones_only() -> None:
    """Candidates passed over for their bytes (their checks fit) count: after 64, every
    bucket that may not fit the bytes left is set aside, not the block ended, and a
    smaller candidate behind them is still given."""
    senders = [key(f"r70-big-{i}") for i in range(100)]
    small = key("r70-small")
    g = ledger.make_genesis(CHAIN, [pub(COORD)], {pub(k): 1000 for k in [*senders, small]})
    state = ledger.State.from_genesis(g)
    pool = ledger.Mempool(CHAIN)
    sizes = []
    for i, k in enumerate(senders):
        s = small_spec(k, 3000 + i)
        signed = tx.lock(
            k, CHAIN, 0, job_id=s.id, amount=1, claim_height=1, escrow_expiry=100,
            max_per_payee=1, max_payees=1, spec=s.raw, expiry_height=50, fee=9,
        )  # fmt: skip
        pool.add(signed.raw, state)
        sizes.append(ledger._budget.tx_block_bytes(signed.raw))
    transfer = tx.transfer(small, CHAIN, 0, to=pub(COORD), amount=1, expiry_height=50, fee=0)
    pool.add(transfer.raw, state)
    left = min(sizes) - 1  # no lock fits, each one's power of two does
    assert {n.bit_length() for n in sizes} == {left.bit_length()}
    room = Counting(ledger.MAX_BLOCK_BYTES - left)
    assert [v.id for v in pool.candidates(state, room)] == [transfer.id]
    assert room.looked == 64 + 1  # then the locks' bucket is set aside unseen


def test_an_owners_claims_passed_over_for_bytes_are_set_aside_after_64() -> None:
    """Round 72, R72-2: an owner's claims come up one at a time, each in a bucket made
    anew (the last one emptied), so the sweep after 64 passed over found no bucket to set
    aside and every claim too large was looked at (6,000 in one block)."""
    owner = key("r72-owner")
    g = ledger.make_genesis(CHAIN, [pub(COORD)], {pub(owner): 10**9})
    state = ledger.State.from_genesis(g)
    specs = [small_spec(owner, 9000 + i) for i in range(4)]
    locks = [
        ledger.verify_tx(
            tx.lock(
                owner, CHAIN, i, job_id=s.id, amount=600, claim_height=1, escrow_expiry=100,
                max_per_payee=10, max_payees=64, spec=s.raw, expiry_height=50,
            ).raw,
            CHAIN,
        )
        for i, s in enumerate(specs)
    ]  # fmt: skip
    state = ledger.apply_block(state, ledger.produce_block(state, COORD, locks).block.raw)
    pool = ledger.Mempool(CHAIN)
    sizes = []
    for i, s in enumerate(specs):
        for j in range(50):
            p = key(f"r72-claimer-{i}-{j}")
            c = tx.claim(
                p, CHAIN, ledger.UNSEQUENCED, job_id=s.id, award=award(owner, p, 10, job=s.id),
                receipt=receipt(owner, p, job=s.id), unseal_key=RECEIPT_KEY, expiry_height=50,
            )  # fmt: skip
            pool.add(c.raw, state)
            sizes.append(ledger._budget.tx_block_bytes(c.raw))
    left = min(sizes) - 1  # no claim fits; each one's power of two does
    assert {n.bit_length() for n in sizes} == {left.bit_length()}
    room = Counting(ledger.MAX_BLOCK_BYTES - left)
    assert list(pool.candidates(state, room)) == []
    assert room.looked == 64  # the tree before: 200


def test_the_producer_refuses_a_transaction_that_breaks_an_invariant(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """F2: the producer checks the invariants as a replica does. A rule fault (here made
    on purpose: a transfer that also credits its sender 1) is found, its transaction
    refused and reported, the block made of the rest (which replicas accept), and the
    fault kept for the driver to log loudly. Before, the coordinator signed and adopted a
    state every replica refused."""
    a, b = key("r70-a"), key("r70-b")
    g = ledger.make_genesis(CHAIN, [pub(COORD)], {pub(a): 1000, pub(b): 1000})
    producer = ledger.Producer(COORD, ledger.State.from_genesis(g), interval_ms=500, now_ms=0)
    good = tx.transfer(a, CHAIN, 0, to=pub(b), amount=5, expiry_height=50)
    bad = tx.transfer(b, CHAIN, 0, to=pub(a), amount=7, expiry_height=50)
    later = tx.transfer(b, CHAIN, 1, to=pub(a), amount=1, expiry_height=50)
    for signed in (good, bad, later):
        producer.submit(signed.raw)
    apply_tx = ledger._apply.apply_tx

    def faulty(draft: ledger._draft.Draft, vtx: ledger.VerifiedTx) -> None:
        apply_tx(draft, vtx)
        if vtx.id == bad.id:
            account = draft.account(vtx.sender)
            draft.accounts[vtx.sender] = dataclasses.replace(account, balance=account.balance + 1)

    monkeypatch.setattr(ledger._apply, "apply_tx", faulty)
    before = producer.state
    effects = producer.tick(500)
    commit = next(e for e in effects if isinstance(e, ledger.Commit))
    assert [protocol.content_hash(r) for r in commit.block.message.txs] == [good.id]
    assert ledger.apply_block(before, commit.block.raw).root == commit.state.root
    dropped = {e.tx_id: e.reason for e in effects if isinstance(e, ledger.TxDropped)}
    assert dropped[bad.id].startswith(ledger.InvariantBroken.TEXT)
    assert dropped[later.id].startswith(ledger.DROPPED_BEHIND)
    faults = producer.take_faults()
    assert len(faults) == 2 and "credits not conserved" in faults[1]
    assert producer.take_faults() == []
    # Its same bytes are refused now, as any transaction refused when a block was made.
    with pytest.raises(ledger.MempoolRejected):
        producer.submit(bad.raw)


def test_a_mint_past_the_u64_count_of_minted_credits_is_refused() -> None:
    """F3: ``minted`` counts every mint, slashed credits included, as a u64. Four rounds
    of minting the supply's room, staking it and slashing it take it to 2^64 - 3,000;
    a fifth mint made ``produce_block`` raise (the totals leaf could not be encoded), at
    every later block. It is refused now, as a transaction, and the block made."""
    x = key("r70-x")
    state = ledger.State.from_genesis(ledger.make_genesis(CHAIN, [pub(COORD)], {pub(x): 1000}))

    def block(*signed: protocol.Signed[protocol.Transaction]) -> ledger.Produced:
        nonlocal state
        produced = ledger.produce_block(
            state, COORD, [ledger.verify_tx(s.raw, CHAIN) for s in signed]
        )
        state = ledger.apply_block(state, produced.block.raw)
        return produced

    for cycle in range(4):
        h, amount = state.height, ledger.MAX_SUPPLY - (state.minted - state.burned)
        spec = small_spec(x, 5000 + cycle)
        block(
            tx.mint(COORD, CHAIN, 2 * cycle, to=pub(x), amount=amount, expiry_height=h + 5),
            tx.lock(
                x, CHAIN, 2 * cycle, job_id=spec.id, amount=1, claim_height=h + 1,
                escrow_expiry=100, max_per_payee=1, max_payees=1, spec=spec.raw,
                expiry_height=h + 5,
            ),
            tx.stake(x, CHAIN, 2 * cycle + 1, amount=amount, expiry_height=h + 5),
        )  # fmt: skip
        evidence = [
            result(x, b"a", job=spec.id, replica=0),
            result(x, b"b", job=spec.id, replica=0),
        ]
        produced = block(
            tx.slash(
                COORD, CHAIN, 2 * cycle + 1, offender=pub(x), amount=amount,
                reason="conflicting_results", evidence=evidence, expiry_height=h + 5,
            )
        )  # fmt: skip
        assert not produced.rejected
    assert (1 << 64) - 1 - state.minted < 5000  # ledger._state.MAX_MINTED
    mint = tx.mint(COORD, CHAIN, 8, to=pub(x), amount=5000, expiry_height=state.height + 5)
    produced = block(mint)
    [(refused, exc)] = produced.rejected
    assert refused.id == mint.id and isinstance(exc, ledger.NotAuthorized)
    assert "u64" in str(exc)
    # A replica refuses a block holding it (whoever signed it): no state past the u64.
    raw = signed_block(state.height + 1, state.last_block_hash, txs=[mint.raw])
    with pytest.raises(ledger.BlockRejected, match="u64"):
        ledger.apply_block(state, raw)
