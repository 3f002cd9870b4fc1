"""The sans-I/O machines: mempool, producer and replica, driven directly."""

from __future__ import annotations

import pytest

import ledger
from ledger import tx

from ..keys import key, pub
from .helpers import (
    ALICE,
    BOB,
    CAROL,
    CHAIN,
    COORD,
    JOB,
    RECEIPT_KEY,
    Chain,
    award,
    genesis,
    receipt,
    signed_block,
)


def state() -> ledger.State:
    return ledger.State.from_genesis(genesis(min_fee=1))


def transfer(k, seq, fee, amount=1, expiry=50):  # type: ignore[no-untyped-def]
    return tx.transfer(
        k, CHAIN, seq, to=pub(CAROL), amount=amount, fee=fee, expiry_height=expiry
    ).raw


def test_mempool_orders_by_fee_keeping_each_senders_sequence() -> None:
    s = state()
    pool = ledger.Mempool(CHAIN)
    pool.add(transfer(ALICE, 0, fee=2), s)
    pool.add(transfer(ALICE, 1, fee=9), s)
    pool.add(transfer(BOB, 0, fee=5), s)
    pool.add(transfer(CAROL, 0, fee=1), s)
    picked = [(v.sender, v.tx.seq) for v in pool.select(s, 10)]
    assert picked == [(pub(BOB), 0), (pub(ALICE), 0), (pub(ALICE), 1), (pub(CAROL), 0)]
    assert [(v.sender, v.tx.seq) for v in pool.select(s, 2)] == picked[:2]


def test_mempool_refuses_duplicates_replays_and_junk() -> None:
    s = state()
    pool = ledger.Mempool(CHAIN, max_ahead=4)
    raw = transfer(ALICE, 0, fee=2)
    pool.add(raw, s)
    with pytest.raises(ledger.MempoolRejected, match="already in the mempool"):
        pool.add(raw, s)
    with pytest.raises(ledger.MempoolRejected, match="higher fee"):
        pool.add(transfer(ALICE, 0, fee=2, amount=5), s)
    pool.add(transfer(ALICE, 0, fee=3, amount=5), s)  # replaces with a higher fee
    assert len(pool) == 1
    with pytest.raises(ledger.MempoolRejected, match="ahead"):
        pool.add(transfer(ALICE, 4, fee=3), s)
    with pytest.raises(ledger.FeeTooLow):
        pool.add(transfer(BOB, 0, fee=0), s)
    with pytest.raises(ledger.MalformedTransaction):
        pool.add(
            tx.transfer(BOB, "other", 0, to=pub(CAROL), amount=1, fee=1, expiry_height=9).raw, s
        )
    producer = ledger.Producer(COORD, s, interval_ms=10, now_ms=0, mempool=pool)
    commit = producer.produce()
    assert commit.state.next_seq(pub(ALICE)) == 1 and len(pool) == 0
    with pytest.raises(ledger.SequenceError, match="replay"):
        pool.add(transfer(ALICE, 0, fee=3, amount=5), commit.state)
    with pytest.raises(ledger.ExpiredTransaction):
        pool.add(transfer(BOB, 0, fee=1, expiry=1), commit.state)


def test_unfunded_keys_cannot_fill_the_mempool() -> None:
    # Attack 6: 20,000 transactions from 318 keys that never received credits, each ahead
    # of its account's sequence and valid for ever. None is admitted; honest ones still are.
    s = ledger.State.from_genesis(genesis())  # min_fee 0: the spam costs nothing to sign
    pool = ledger.Mempool(CHAIN)
    refused = 0
    for i in range(20_000):
        spammer = key(f"spam-{i % 318}")
        # Half valid for ever (refused for the expiry bound), half valid for a while
        # (refused because the account never received credits).
        forever = i % 2 == 0
        expiry = 2**64 - 1 if forever else 50
        raw = tx.transfer(
            spammer, CHAIN, 1 + i // 318, to=pub(CAROL), amount=1, expiry_height=expiry
        ).raw
        why = "blocks ahead" if forever else "holds no credits"
        with pytest.raises(ledger.MempoolRejected, match=why):
            pool.add(raw, s)
        refused += 1
    assert refused == 20_000 and len(pool) == 0
    pool.add(transfer(ALICE, 0, fee=0), s)
    producer = ledger.Producer(COORD, s, interval_ms=10, now_ms=0, mempool=pool)
    assert producer.produce().state.next_seq(pub(ALICE)) == 1


def test_mempool_bounds_sequence_gap_expiry_and_pending_per_account() -> None:
    s = ledger.State.from_genesis(genesis())
    pool = ledger.Mempool(CHAIN)
    for seq in range(ledger.MAX_AHEAD):  # a funded account: its next 64 are pending
        pool.add(transfer(ALICE, seq, fee=0), s)
    with pytest.raises(ledger.MempoolRejected, match="ahead"):
        pool.add(transfer(ALICE, ledger.MAX_AHEAD, fee=0), s)
    with pytest.raises(ledger.MempoolRejected, match="blocks ahead"):
        pool.add(transfer(BOB, 0, fee=0, expiry=ledger.MAX_EXPIRY_AHEAD + 1), s)
    pool.add(transfer(BOB, 0, fee=0, expiry=ledger.MAX_EXPIRY_AHEAD), s)
    # A fee the balance cannot pay is refused on entry, not left to wait.
    poor = key("poor")
    rich = ledger.make_genesis(CHAIN, [pub(COORD)], {pub(poor): 5, pub(ALICE): 10})
    with pytest.raises(ledger.MempoolRejected, match="cannot pay the fee"):
        pool.add(transfer(poor, 0, fee=6), ledger.State.from_genesis(rich))
    # A coordinator's mint needs no balance.
    pool.add(tx.mint(COORD, CHAIN, 0, to=pub(CAROL), amount=5, expiry_height=9).raw, s)


def test_unfunded_provider_may_claim_with_the_owners_award_only() -> None:
    c = Chain.new()
    c.ok(c.lock(ALICE, 300, claim_at=1, expire_at=20, per_payee=100, payees=1))
    fresh, other = key("fresh-provider"), key("fresh-other")
    pool = ledger.Mempool(CHAIN)

    def claim(who, signer):  # type: ignore[no-untyped-def]
        return tx.claim(
            who,
            CHAIN,
            0,
            job_id=JOB,
            award=award(signer, who, 100),
            receipt=receipt(signer, who),
            unseal_key=RECEIPT_KEY,
            expiry_height=c.height + 5,
        ).raw

    with pytest.raises(ledger.MempoolRejected, match="owner's Award"):
        pool.add(claim(fresh, BOB), c.state)  # an award from someone else
    pool.add(claim(fresh, ALICE), c.state)
    with pytest.raises(ledger.MempoolRejected, match="as many claims pending"):
        pool.add(claim(other, ALICE), c.state)  # the escrow pays one provider


def test_full_mempool_evicts_lowest_fee_only_for_a_higher_fee() -> None:
    s = state()
    pool = ledger.Mempool(CHAIN, max_size=2)
    pool.add(transfer(ALICE, 0, fee=2), s)
    pool.add(transfer(BOB, 0, fee=3), s)
    with pytest.raises(ledger.MempoolRejected, match="full"):
        pool.add(transfer(CAROL, 0, fee=2), s)
    pool.add(transfer(CAROL, 0, fee=4), s)
    assert {v.sender for v in pool.select(s, 10)} == {pub(BOB), pub(CAROL)}


def test_producer_ticks_on_the_callers_clock() -> None:
    p = ledger.Producer(COORD, state(), interval_ms=100, now_ms=1000)
    assert p.tick(1050) == [ledger.SetTimer(1100)]
    p.submit(transfer(ALICE, 0, fee=1))
    effects = p.tick(1100)
    commit = effects[0]
    assert isinstance(commit, ledger.Commit) and len(commit.block.message.txs) == 1
    assert effects[1] == ledger.SetTimer(1200)
    empty = p.tick(1200)[0]  # empty blocks too: heights are the ledger's clock
    assert isinstance(empty, ledger.Commit) and empty.state.height == 2
    with pytest.raises(ledger.LedgerError):
        ledger.Producer(ALICE, state(), interval_ms=100, now_ms=0)


def chain_of(n: int) -> tuple[ledger.State, list[bytes]]:
    s = state()
    blocks = []
    p = ledger.Producer(COORD, s, interval_ms=1, now_ms=0)
    for i in range(n):
        p.submit(transfer(ALICE, i, fee=1))
        blocks.append(p.produce().block.raw)
    return s, blocks


def test_producer_drops_a_refused_transaction_with_the_ones_behind_it() -> None:
    s = state()
    p = ledger.Producer(COORD, s, interval_ms=10, now_ms=0)
    p.submit(transfer(ALICE, 0, fee=1))
    overdraft = p.submit(transfer(ALICE, 1, fee=1, amount=2_000_000))  # admitted: no balance check
    behind = [p.submit(transfer(ALICE, seq, fee=1)) for seq in (2, 3)]
    effects = p.tick(10)
    commit = next(e for e in effects if isinstance(e, ledger.Commit))
    dropped = [e for e in effects if isinstance(e, ledger.TxDropped)]
    assert commit.state.next_seq(pub(ALICE)) == 1
    # 2 and 3 would wait behind the gap, holding places they never pay for: dropped too,
    # told apart by their reason (they did nothing wrong: signed again, they land).
    assert [(d.sender, d.seq, d.tx_id) for d in dropped] == [
        (pub(ALICE), 1, overdraft.id),
        (pub(ALICE), 2, behind[0].id),
        (pub(ALICE), 3, behind[1].id),
    ]
    assert "balance" in dropped[0].reason or "funds" in dropped[0].reason, dropped[0].reason
    assert all(d.reason.startswith(f"{ledger.DROPPED_BEHIND} 1,") for d in dropped[1:])
    assert len(p.mempool) == 0
    # The sender's next is free again: it fills the gap and sends the others again.
    for seq in (1, 2, 3):
        p.submit(tx.transfer(ALICE, CHAIN, seq, to=pub(BOB), amount=1, fee=1, expiry_height=50).raw)
    effects = p.tick(20)
    assert p.state.next_seq(pub(ALICE)) == 4
    assert not [e for e in effects if isinstance(e, ledger.TxDropped)]


def test_an_expired_transaction_takes_the_ones_behind_it() -> None:
    # One transaction a block: Bob's seq 0 (valid up to height 1) loses to Alice's higher
    # fee and expires; Bob's 1 and 2 behind it go with it, reported, not left to wait.
    s = ledger.State.from_genesis(genesis(min_fee=1, max_block_txs=1))
    p = ledger.Producer(COORD, s, interval_ms=10, now_ms=0)
    p.submit(transfer(ALICE, 0, fee=5))
    stale = p.submit(transfer(BOB, 0, fee=1, expiry=1))
    behind = [p.submit(transfer(BOB, seq, fee=1)) for seq in (1, 2)]
    effects = p.tick(10)
    dropped = [e for e in effects if isinstance(e, ledger.TxDropped)]
    assert [(d.sender, d.seq, d.tx_id) for d in dropped] == [
        (pub(BOB), 0, stale.id),
        (pub(BOB), 1, behind[0].id),
        (pub(BOB), 2, behind[1].id),
    ]
    assert "expired" in dropped[0].reason
    assert dropped[1].reason.startswith(f"{ledger.DROPPED_BEHIND} 0, which expired")
    assert len(p.mempool) == 0 and p.state.next_seq(pub(BOB)) == 0


def test_replica_fetches_gaps_and_applies_in_order() -> None:
    s, blocks = chain_of(6)
    peer = pub(key("peer"))
    r = ledger.Replica(s, batch=2)
    r.add_source(peer)
    assert r.tick(0)[0] == ledger.FetchBlocks(peer, 1, 2)
    assert r.on_blocks(peer, [blocks[2]]) == [ledger.FetchBlocks(peer, 1, 2)]
    effects = r.on_blocks(peer, blocks[0:2])
    assert [type(e) for e in effects] == [ledger.Commit, ledger.Commit, ledger.FetchBlocks]
    assert r.state.height == 2
    r.on_head(peer, 6)
    effects = r.on_blocks(peer, blocks[2:3])
    assert effects[-1] == ledger.FetchBlocks(peer, 4, 2)  # the peer has more
    r.on_blocks(peer, blocks[3:6])
    assert r.state.height == 6
    assert r.state.root == ledger.replay(s.genesis, blocks).root


def test_replica_rejects_bad_block_keeps_state_and_records_equivocation() -> None:
    s, blocks = chain_of(3)
    peer = pub(key("peer"))
    r = ledger.Replica(s)
    r.on_blocks(peer, blocks[:2])
    before = r.state
    wrong_root = signed_block(3, before.last_block_hash)
    [effect] = r.on_blocks(peer, [wrong_root])
    assert isinstance(effect, ledger.PeerMisbehaved) and "state root" in effect.reason
    assert r.state is before
    first = ledger.decode_block(blocks[0], s.genesis)
    twin = signed_block(2, first.id, state_root=b"\x01" * 32)
    [found] = r.on_blocks(peer, [twin])
    assert isinstance(found, ledger.ProofFound)
    assert found.proof == ledger.EquivocationProof(2, blocks[1], twin)
    assert r.on_blocks(peer, [twin]) == []  # kept once
    assert r.state is before
    r.on_blocks(peer, blocks[2:])
    assert r.state.height == 3


def test_replica_polls_only_when_announced_blocks_stopped() -> None:
    """A replica whose height went up since its last poll (announced blocks) skips the
    next poll; one that made no progress over an interval polls, and so does one that went
    back (a store fault)."""
    s, blocks = chain_of(4)
    peer = pub(key("peer"))
    r = ledger.Replica(s, sync_interval_ms=200)
    r.add_source(peer)
    fetch = ledger.FetchBlocks
    assert r.tick(0) == [fetch(peer, 1, 64), ledger.SetTimer(200)]
    assert r.tick(100) == [ledger.SetTimer(200)]
    r.on_blocks(peer, blocks[0:1])  # announced
    assert r.tick(200) == [ledger.SetTimer(400)]  # progress: no poll
    assert r.tick(400) == [fetch(peer, 2, 64), ledger.SetTimer(600)]  # none: poll
    r.on_blocks(peer, blocks[1:3])
    r.state = s  # the store refused the blocks: back to its height
    assert r.tick(600) == [fetch(peer, 1, 64), ledger.SetTimer(800)]
