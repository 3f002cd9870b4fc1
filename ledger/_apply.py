"""Blocks: decoding a signed block, applying it whole (every transaction by the rules of
``_rules.py``, then the ledger's invariants over what it changed, then its state root),
and producing the next one from candidate transactions. specs/ledger.md, "Blocks".
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import nacl.signing

import protocol
from protocol import ProtocolError, Signed

from ._admission import VerifiedTx, verify_tx
from ._block import MAX_BLOCK_BYTES, Block
from ._budget import MAX_BLOCK_SIGNATURE_CHECKS, BlockBudget, signature_checks
from ._draft import Draft
from ._errors import BlockRejected, MalformedTransaction, TransactionRejected
from ._genesis import Genesis
from ._rules import apply_tx
from ._state import State


def decode_block(raw: bytes, genesis: Genesis) -> Signed[Block]:
    """Decode a block and check its size, signature and producer (not its contents)."""
    _check_size(len(raw), None)
    try:
        block: Signed[Block] = protocol.decode(
            raw, genesis.chain_id, Block, max_bytes=MAX_BLOCK_BYTES
        )
    except ProtocolError as exc:
        raise BlockRejected(f"invalid block: {exc}") from None
    height = block.message.height
    if block.signer not in genesis.coordinators:
        raise BlockRejected("block is not signed by a genesis coordinator", height=height)
    if len(block.message.txs) > genesis.max_block_txs:
        raise BlockRejected(
            f"block holds {len(block.message.txs)} transactions; the chain allows "
            f"{genesis.max_block_txs}",
            height=height,
        )
    return block


def _check_size(size: int, height: int | None) -> None:
    if size > MAX_BLOCK_BYTES:
        raise BlockRejected(
            f"block of {size} bytes is over the {MAX_BLOCK_BYTES}-byte limit of a block",
            height=height,
        )


def apply_block(
    state: State,
    block: bytes | Signed[Block],
    *,
    verified: Sequence[VerifiedTx] | None = None,
) -> State:
    """Apply a signed block to ``state``, returning the new state; ``state`` is unchanged.

    Raises :class:`BlockRejected` for any fault, with the offending transaction's index
    and rejection; a block over its byte or signature-check budget (``_budget.py``) is
    refused too, before the checks past the budget are made. ``verified`` may pass the
    block's transactions already verified (by the producer that built it) so that no
    signature is checked twice.
    """
    signed = decode_block(block, state.genesis) if isinstance(block, bytes) else block
    b = signed.message
    _check_size(len(signed.raw), b.height)
    if b.height != state.height + 1:
        raise BlockRejected(
            f"block height {b.height} does not extend height {state.height}", height=b.height
        )
    if b.prev_hash != state.last_block_hash:
        raise BlockRejected(
            f"block {b.height} does not link to the last block (prev_hash mismatch)",
            height=b.height,
        )
    draft = Draft(state, b.height)
    draft.mature()
    draft.prune()
    chain = state.genesis.chain_id
    checks = 0
    for i, raw in enumerate(b.txs):
        try:
            if verified is not None:
                vtx = verified[i]
                if vtx.raw != raw:
                    raise MalformedTransaction("pre-verified transaction does not match")
            else:
                vtx = verify_tx(raw, chain)
            checks += signature_checks(vtx.payload)
            if checks > MAX_BLOCK_SIGNATURE_CHECKS:
                raise BlockRejected(
                    f"block {b.height} rejected: its transactions up to {i} cost {checks} "
                    f"signature checks, over the {MAX_BLOCK_SIGNATURE_CHECKS} of a block",
                    height=b.height,
                    index=i,
                )
            apply_tx(draft, vtx)
        except TransactionRejected as exc:
            raise BlockRejected(
                f"block {b.height} rejected: transaction {i}: {exc}",
                height=b.height,
                index=i,
                cause=exc,
            ) from None
    broken = draft.check_invariants()
    if broken is not None:
        raise BlockRejected(
            f"block {b.height} breaks a ledger invariant: {broken}", height=b.height
        )
    new = draft.finish(signed.id)
    if new.root != b.state_root:
        raise BlockRejected(
            f"block {b.height} names state root {b.state_root.hex()} but applying it gives "
            f"{new.root.hex()}",
            height=b.height,
        )
    return new


#: Senders a producer passes over (their next transaction does not fit what is left of the
#: block) before it takes the block as full: a bound on the candidates looked at in vain.
MAX_PASSED_OVER = 64


@dataclass(frozen=True, slots=True)
class Produced:
    """A block built by a producer, the state after it, and what was left out and why."""

    block: Signed[Block]
    state: State
    included: tuple[VerifiedTx, ...]
    rejected: tuple[tuple[VerifiedTx, TransactionRejected], ...]


def produce_block(
    state: State, key: nacl.signing.SigningKey, candidates: Iterable[VerifiedTx]
) -> Produced:
    """Build and sign the next block from ``candidates`` in order, skipping invalid ones.

    Candidates are taken until the block is full: ``max_block_txs`` transactions, or its
    byte or signature-check budget (``_budget.py``) spent. A candidate that would take the
    block over a budget is passed over, and its sender's later ones with it (they may not
    come before it; an unsequenced claim is passed over alone); after
    :data:`MAX_PASSED_OVER` senders so passed over the block is
    full. What is not taken is not looked at (a mempool keeps it for the next block)."""
    height = state.height + 1
    draft = Draft(state, height)
    draft.mature()
    draft.prune()
    included: list[VerifiedTx] = []
    rejected: list[tuple[VerifiedTx, TransactionRejected]] = []
    limit = state.genesis.max_block_txs
    budget = BlockBudget.for_block(height, state.genesis.chain_id)
    passed_over: set[bytes] = set()
    claims_passed_over = 0
    for vtx in candidates:
        if len(included) >= limit or budget.spent():
            break
        unsequenced = vtx.unsequenced  # comes before or after none of its sender's
        if vtx.sender in passed_over and not unsequenced:
            continue
        if not budget.fits(vtx.raw, vtx.payload):
            if unsequenced:
                claims_passed_over += 1  # alone, but as many as senders end the block
                if claims_passed_over >= MAX_PASSED_OVER:
                    break
                continue
            passed_over.add(vtx.sender)
            if len(passed_over) >= MAX_PASSED_OVER:
                break
            continue
        try:
            apply_tx(draft, vtx)
        except TransactionRejected as exc:
            rejected.append((vtx, exc))
            continue
        included.append(vtx)
        budget.take(vtx.raw, vtx.payload)
    new = draft.finish(b"")
    block = protocol.sign(
        Block(
            height=height,
            prev_hash=state.last_block_hash,
            producer=bytes(key.verify_key),
            state_root=new.root,
            txs=tuple(v.raw for v in included),
        ),
        key,
        state.genesis.chain_id,
    )
    assert len(block.raw) <= MAX_BLOCK_BYTES, "the budget bounds a block's size from above"
    new.last_block_hash = block.id
    return Produced(block, new, tuple(included), tuple(rejected))
