"""Blocks: decoding a signed block, applying it whole (every transaction by the rules of
``_rules.py``, then the ledger's invariants over what it changed, then its state root),
and producing the next one from candidate transactions. specs/ledger.md, "Blocks".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import nacl.signing

import protocol
from protocol import ProtocolError, Signed

from ._admission import VerifiedTx, verify_tx
from ._block import MAX_BLOCK_BYTES, Block
from ._budget import MAX_BLOCK_SIGNATURE_CHECKS, MAX_PASSED_OVER, BlockBudget, signature_checks
from ._draft import Draft
from ._errors import (
    BlockRejected,
    InvariantBroken,
    LedgerError,
    MalformedTransaction,
    TransactionRejected,
)
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
    draft = _new_draft(state, b.height)
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


@dataclass(frozen=True, slots=True)
class Produced:
    """A block built by a producer, the state after it, and what was left out and why.
    ``faults``: the ledger invariants the producer found broken on the way (a fault in the
    rules, never a sender's: :func:`produce_block`), each with what it did about it."""

    block: Signed[Block]
    state: State
    included: tuple[VerifiedTx, ...]
    rejected: tuple[tuple[VerifiedTx, TransactionRejected], ...]
    faults: tuple[str, ...] = ()


#: Candidates for a block: in order, or made in order given the block's budget as it is
#: spent (``Mempool.candidates``: then only those that fit are given).
Candidates = Iterable[VerifiedTx] | Callable[[BlockBudget], Iterable[VerifiedTx]]


def produce_block(state: State, key: nacl.signing.SigningKey, candidates: Candidates) -> Produced:
    """Build and sign the next block from ``candidates`` in order, skipping invalid ones.

    Candidates are taken until the block is full: ``max_block_txs`` transactions, or its
    byte or signature-check budget (``_budget.py``) spent. ``candidates`` may be a function
    of the budget (a mempool's: it then gives only candidates that fit what is left, and
    passes over the others itself, ``_pool_order.py``). Given in a plain order, a
    candidate that would take the block over a budget is passed over, and its sender's
    later ones with it (they may not come before it; an unsequenced claim is passed over
    alone); after :data:`MAX_PASSED_OVER` senders so passed over the block is full. What is
    not taken is not looked at (a mempool keeps it for the next block).

    The ledger's invariants are then checked, as every replica checks them (``apply_block``):
    a block that breaks one would be refused by every replica while its producer built on
    it (review round 70, F2). If one breaks, the transactions taken are applied again one
    at a time, each followed by the check, and one after which it breaks is refused
    (:class:`InvariantBroken`) with what follows from that (its sender's later ones, for
    the gap): the block is made of the others, and each fault is named in
    :attr:`Produced.faults` for the driver to report loudly. If maturing and pruning alone
    break one, no block can be valid at this height: :class:`LedgerError` is raised and no
    block is made."""
    height = state.height + 1
    draft = _new_draft(state, height)
    included: list[VerifiedTx] = []
    rejected: list[tuple[VerifiedTx, TransactionRejected]] = []
    limit = state.genesis.max_block_txs
    budget = BlockBudget.for_block(height, state.genesis.chain_id)
    passed_over: set[bytes] = set()
    claims_passed_over = 0
    for vtx in candidates(budget) if callable(candidates) else candidates:
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
    faults: list[str] = []
    broken = draft.check_invariants()
    if broken is not None:
        draft, included, refused, faults = _without_faults(state, height, included, broken)
        rejected = refused + rejected  # a sender's earliest first (the producer's gaps)
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
    return Produced(block, new, tuple(included), tuple(rejected), tuple(faults))


def _new_draft(state: State, height: int) -> Draft:
    draft = Draft(state, height)
    draft.mature()
    draft.prune()
    return draft


def _without_faults(
    state: State, height: int, taken: list[VerifiedTx], broken: str
) -> tuple[Draft, list[VerifiedTx], list[tuple[VerifiedTx, TransactionRejected]], list[str]]:
    """``taken`` applied again one at a time, each followed by the invariants' check, and
    those after which one breaks refused: the draft of the rest, the rest, what was
    refused (in block order) and the faults found. Quadratic, but only where the rules
    are at fault."""
    draft = _new_draft(state, height)
    base = draft.check_invariants()
    if base is not None:
        raise LedgerError(
            f"block {height} cannot be made: maturing and pruning alone break a ledger "
            f"invariant ({base}); every replica would refuse any block at this height"
        )
    faults = [f"block {height} as first built breaks a ledger invariant: {broken}"]
    kept: list[VerifiedTx] = []
    refused: list[tuple[VerifiedTx, TransactionRejected]] = []
    for vtx in taken:
        try:
            apply_tx(draft, vtx)
        except TransactionRejected as exc:  # it followed one refused below
            refused.append((vtx, exc))
            continue
        fault = draft.check_invariants()
        if fault is None:
            kept.append(vtx)
            continue
        faults.append(f"transaction {vtx.id.hex()} refused: applied, it breaks {fault}")
        refused.append((vtx, InvariantBroken(f"{InvariantBroken.TEXT}: {fault}")))
        draft = _new_draft(state, height)  # without it: the ones kept, again
        for done in kept:
            apply_tx(draft, done)
    return draft, kept, refused, faults
