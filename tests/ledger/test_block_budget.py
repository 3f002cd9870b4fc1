"""A block's budgets (specs/ledger.md, "Blocks"): at most ``MAX_BLOCK_BYTES`` signed and
``MAX_BLOCK_SIGNATURE_CHECKS`` signature checks to validate. The producer stops taking
candidates before a block would pass either (what does not fit waits for the next block,
never dropped), and a replica refuses a block over either, even one a coordinator signed.
"""

from __future__ import annotations

import dataclasses

import nacl.signing
import pytest

import ledger
import protocol
from ledger import tx
from node.ledger._wire import MAX_RESPONSE_BLOCK_BYTES, MAX_RESPONSE_BYTES
from node.net import MAX_FRAME_BYTES

from ..keys import key, pub
from .helpers import CHAIN, COORD, bid

INTERVAL_MS = 500


def max_spec(owner: nacl.signing.SigningKey, n: int) -> protocol.Signed[protocol.JobSpec]:
    """One of the largest JobSpecs a lock carries: 64 inputs with 128-character names."""

    def name(i: int) -> str:
        return (f"i{n}x{i}x" + "A" * 128)[:128]

    spec = protocol.JobSpec(
        requester=pub(owner),
        nonce=n.to_bytes(16, "big"),
        runtime="onnx",
        model_hash=bytes(32),
        model_size=1,
        inputs=tuple(
            protocol.InputRef(name=name(i), hash=bytes([i]) * 32, size=2**63 - 1) for i in range(64)
        ),
        requirements=protocol.Requirements(
            device="cpu",
            execution_provider="CPUExecutionProvider",
            min_memory_mb=1,
            capability_class="onnx.cpu.m8",
        ),
        graph_opt_level="extended",
        threads=1,
        max_price=1,
        redundancy=1,
        max_retries=0,
        verification=protocol.VerificationPolicy(
            mode="exact", rtol_e9=0, atol_e9=0, spot_check_permille=0
        ),
        created_ms=0,
        bid_window_ms=1,
        deadline_ms=1,
        escrow_expiry_height=100,
    )
    return protocol.sign(spec, owner, CHAIN)


def small_spec(owner: nacl.signing.SigningKey, n: int) -> protocol.Signed[protocol.JobSpec]:
    """A JobSpec with no input (a settle's job: its size does not matter here)."""
    spec = dataclasses.replace(max_spec(owner, n).message, inputs=())
    return protocol.sign(spec, owner, CHAIN)


def lock(
    owner: nacl.signing.SigningKey,
    seq: int,
    spec: protocol.Signed[protocol.JobSpec],
    amount: int,
) -> bytes:
    return tx.lock(
        owner,
        CHAIN,
        seq,
        job_id=spec.id,
        amount=amount,
        claim_height=1,
        escrow_expiry=100,
        max_per_payee=1,
        max_payees=64,
        spec=spec.raw,
        expiry_height=90,
    ).raw


def accounts(label: str, n: int) -> list[nacl.signing.SigningKey]:
    return [key(f"{label}-{i}") for i in range(n)]


def chain_of(funded: list[nacl.signing.SigningKey]) -> ledger.State:
    """A chain with defaults (min_fee 0, 4,096 transactions a block) funding ``funded``."""
    g = ledger.make_genesis(CHAIN, [pub(COORD)], {pub(k): 100_000 for k in funded})
    return ledger.State.from_genesis(g)


def produce_until_empty(
    producer: ledger.Producer, now_ms: int
) -> tuple[list[ledger.Commit], list[ledger.TxDropped], int]:
    commits: list[ledger.Commit] = []
    dropped: list[ledger.TxDropped] = []
    while len(producer.mempool):
        now_ms += INTERVAL_MS
        for e in producer.tick(now_ms):
            if isinstance(e, ledger.Commit):
                commits.append(e)
            elif isinstance(e, ledger.TxDropped):
                dropped.append(e)
        assert len(commits) < 50, "the mempool does not drain"
    return commits, dropped, now_ms


def checks_of(block: protocol.Signed[ledger.Block]) -> int:
    return sum(
        ledger.signature_checks(ledger.verify_tx(raw, CHAIN).payload) for raw in block.message.txs
    )


def follow(replica_state: ledger.State, commits: list[ledger.Commit]) -> ledger.Replica:
    """A pure replica fed each block as a fetch answer carries it (the answer's own limit
    included); it must apply every one."""
    replica = ledger.Replica(replica_state)
    for c in commits:
        answer = protocol.pack([c.block.message.height, [c.block.raw]])
        (raw,) = protocol.unpack(answer, max_bytes=MAX_RESPONSE_BYTES)[1]
        effects = replica.on_blocks(pub(COORD), [raw])
        assert [type(e) for e in effects] == [ledger.Commit], effects
    return replica


def test_a_block_never_exceeds_its_byte_budget_and_a_replica_follows_every_block() -> None:
    # C1: 300 locks carrying maximal JobSpecs (11.6 KB each, 3.3 MiB in all) submitted in
    # one interval made one block no replica could fetch; they now land over several
    # blocks, each within the byte budget, none dropped, and a replica takes every one.
    owners = accounts("c1", 6)
    state = chain_of(owners)
    producer = ledger.Producer(COORD, state, interval_ms=INTERVAL_MS, now_ms=0)
    n = 0
    for owner in owners:
        for seq in range(50):
            producer.submit(lock(owner, seq, max_spec(owner, n), amount=1))
            n += 1
    commits, dropped, _ = produce_until_empty(producer, 0)
    assert dropped == []
    sizes = [len(c.block.raw) for c in commits]
    assert len([c for c in commits if c.block.message.txs]) >= 2, sizes
    assert all(size <= ledger.MAX_BLOCK_BYTES for size in sizes), sizes
    assert sum(len(c.block.message.txs) for c in commits) == 300
    replica = follow(state, commits)
    assert replica.state.root == producer.state.root
    assert replica.state.height == producer.state.height


def test_a_fetch_answer_always_holds_a_block_of_the_largest_size_within_a_frame() -> None:
    assert MAX_RESPONSE_BLOCK_BYTES >= ledger.MAX_BLOCK_BYTES
    assert MAX_RESPONSE_BYTES <= MAX_FRAME_BYTES
    # a block travels as one msgpack byte string, which the wire format caps at 1 MiB
    largest = protocol.pack([2**63, [bytes(ledger.MAX_BLOCK_BYTES)]])
    assert len(protocol.unpack(largest, max_bytes=MAX_RESPONSE_BYTES)[1][0]) == (
        ledger.MAX_BLOCK_BYTES
    )


def signed_by_coordinator(state: ledger.State, txs: list[bytes]) -> tuple[bytes, ledger.State]:
    """A block of ``txs``, every one valid, with the state root they give, signed by the
    coordinator: only a budget can make a replica refuse it."""
    height = state.height + 1
    draft = ledger.Draft(state, height)
    draft.mature()
    draft.prune()
    for raw in txs:
        ledger.apply_tx(draft, ledger.verify_tx(raw, CHAIN))
    after = draft.finish(b"")
    block = ledger.Block(
        height=height,
        prev_hash=state.last_block_hash,
        producer=pub(COORD),
        state_root=after.root,
        txs=tuple(txs),
    )
    return protocol.sign(block, COORD, CHAIN).raw, after


def test_a_replica_refuses_a_block_over_the_byte_budget_signed_by_the_coordinator() -> None:
    owners = accounts("c1-big", 2)
    state = chain_of(owners)
    txs = [
        lock(o, seq, max_spec(o, 100 * i + seq), amount=1)
        for i, o in enumerate(owners)
        for seq in range(44)
    ]
    raw, _ = signed_by_coordinator(state, txs)
    assert ledger.MAX_BLOCK_BYTES < len(raw) < 1 << 20  # over the budget, yet decodable
    replica = ledger.Replica(state)
    effects = replica.on_blocks(pub(COORD), [raw])
    assert [type(e) for e in effects] == [ledger.PeerMisbehaved]
    assert isinstance(effects[0], ledger.PeerMisbehaved)
    assert "byte limit of a block" in effects[0].reason
    assert replica.state.height == 0
    try:
        ledger.apply_block(state, raw)
    except ledger.BlockRejected as exc:
        assert "byte limit" in str(exc)
    else:
        raise AssertionError("an over-budget block was applied")


def bidders(n: int) -> list[nacl.signing.SigningKey]:
    return accounts("bidder", n)


def self_paying_settle(
    owner: nacl.signing.SigningKey, seq: int, job: bytes, payees: list[nacl.signing.SigningKey]
) -> bytes:
    """A settle paying 1 to each of ``payees`` (the owner's own keys), each with its Bid."""
    payouts = {pub(p): 1 for p in payees}
    bids = {pub(p): bid(p, 1, job=job) for p in payees}
    return tx.settle(
        owner, CHAIN, seq, job_id=job, payouts=payouts, bids=bids, expiry_height=90
    ).raw


def test_120_self_paying_64_payout_settles_land_over_several_blocks_within_the_check_budget() -> (
    None
):
    # F4: 120 settles of 64 payouts cost 7,800 signature checks; in one block they stalled
    # the coordinator and every replica. They now spread over blocks within the budget.
    owners = accounts("f4", 4)
    payees = bidders(64)
    state = chain_of(owners)
    producer = ledger.Producer(COORD, state, interval_ms=INTERVAL_MS, now_ms=0)
    jobs: list[tuple[nacl.signing.SigningKey, int, bytes]] = []
    for owner in owners:
        for j in range(30):
            spec = small_spec(owner, len(jobs))
            producer.submit(lock(owner, j, spec, amount=64))
            jobs.append((owner, j, spec.id))
    locked, dropped, now = produce_until_empty(producer, 0)
    assert dropped == []
    for owner, j, job in jobs:
        producer.submit(self_paying_settle(owner, 30 + j, job, payees))
    settled, dropped, _ = produce_until_empty(producer, now)
    assert dropped == []
    assert sum(len(c.block.message.txs) for c in settled) == 120
    checks = [checks_of(c.block) for c in settled]
    assert len(settled) >= 4, checks  # 120 x 65 = 7,800 checks
    assert all(c <= ledger.MAX_BLOCK_SIGNATURE_CHECKS for c in checks), checks
    replica = follow(state, locked + settled)
    assert replica.state.root == producer.state.root


def test_a_replica_refuses_a_block_over_the_signature_check_budget_signed_by_the_coordinator() -> (
    None
):
    per_settle = 1 + 64
    over = ledger.MAX_BLOCK_SIGNATURE_CHECKS // per_settle + 1
    owners = accounts("f4-big", over // 32 + 1)  # 32 locks and 32 settles each
    payees = bidders(64)
    state = chain_of(owners)
    producer = ledger.Producer(COORD, state, interval_ms=INTERVAL_MS, now_ms=0)
    jobs = []
    for i in range(over):
        owner, seq = owners[i // 32], i % 32
        spec = small_spec(owner, 1000 + i)
        producer.submit(lock(owner, seq, spec, amount=64))
        jobs.append((owner, 32 + seq, spec.id))
    _, dropped, _ = produce_until_empty(producer, 0)
    assert dropped == []
    state = producer.state
    txs = [self_paying_settle(owner, seq, job, payees) for owner, seq, job in jobs]
    raw, _ = signed_by_coordinator(state, txs)
    assert len(raw) <= ledger.MAX_BLOCK_BYTES  # within the byte budget: only checks count
    replica = ledger.Replica(state)
    effects = replica.on_blocks(pub(COORD), [raw])
    assert [type(e) for e in effects] == [ledger.PeerMisbehaved]
    assert isinstance(effects[0], ledger.PeerMisbehaved)
    assert "signature checks" in effects[0].reason
    assert replica.state.height == state.height
    # the block just under it is taken
    fits, _ = signed_by_coordinator(state, txs[:-1])
    assert [type(e) for e in ledger.Replica(state).on_blocks(pub(COORD), [fits])] == [ledger.Commit]


def test_the_mempool_refuses_a_transaction_that_could_never_fit_a_block(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Today's payload limits keep every transaction under both budgets (at most 65 checks,
    # ~65 KiB); were a budget below one transaction's cost, the mempool would refuse it
    # rather than hold it for ever.
    owner = key("f4-one")
    payees = bidders(64)
    state = chain_of([owner])
    producer = ledger.Producer(COORD, state, interval_ms=INTERVAL_MS, now_ms=0)
    spec = small_spec(owner, 7)
    producer.submit(lock(owner, 0, spec, amount=64))
    produce_until_empty(producer, 0)
    settle = self_paying_settle(owner, 1, spec.id, payees)
    monkeypatch.setattr(ledger._budget, "MAX_BLOCK_SIGNATURE_CHECKS", 64)
    with pytest.raises(ledger.MempoolRejected, match="could never be in a block"):
        producer.submit(settle)
    monkeypatch.undo()
    producer.submit(settle)
