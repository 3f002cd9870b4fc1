"""A block's budgets: its size in bytes and the signature checks validating it costs.

Both are consensus rules (specs/ledger.md, "Blocks"): a block over either is refused
whole, and the producer stops taking candidates before one would be exceeded (what does
not fit waits in the mempool for the next block). Counts depend only on a transaction's
bytes and payload, never on the state, so producer and replica count alike.

- Bytes (:data:`~ledger._block.MAX_BLOCK_BYTES`, the signed block): a block must fit a
  replica's fetch answer and a network frame, or no replica could ever fetch it.
- Signature checks (:data:`MAX_BLOCK_SIGNATURE_CHECKS`): every replica checks each
  transaction's signature and each signed message its rules decode (``_rules.py``); a
  settle's 64 payout Bids cost 64 times a transfer, so a count of transactions alone
  does not bound the time a block takes to validate.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import protocol

from ._block import MAX_BLOCK_BYTES, Block
from ._payloads import Claim, Lock, Payload, Reserve, Settle, Slash

#: Most Ed25519 signature checks validating one block may cost (:func:`signature_checks`
#: summed over its transactions). At about 50-100 us a check, a full block's checks take
#: 0.1-0.2 s: well under the default 500 ms block interval, on the coordinator and on
#: every replica. Half of ``max_block_txs``' 4,096: a block of plain transfers (one check
#: each) holds at most 2,048.
MAX_BLOCK_SIGNATURE_CHECKS = 2048


#: Candidates a block producer passes over (they do not fit what is left of the block)
#: before it sets aside every candidate that may not fit (``_pool_order.py``), or, given
#: candidates in a plain order, before it takes the block as full (``produce_block``): a
#: bound on the candidates looked at in vain.
MAX_PASSED_OVER = 64


#: A lower bound on what any transaction adds to a block: its 64-byte signature and 32-byte
#: sender alone (a transfer is about 150 bytes).
MIN_TX_BLOCK_BYTES = 96


def signature_checks(payload: Payload) -> int:
    """The signature checks a transaction with ``payload`` costs to validate: its own, and
    one per signed message its rule decodes (``_rules.py``; a payload's counts are bounded
    by its record's limits, so one transaction costs at most 65)."""
    match payload:
        case Lock():
            return 2  # the JobSpec
        case Settle():
            return 1 + len(payload.payouts)  # each payout's Bid
        case Claim():
            return 3  # the Award and the Receipt
        case Reserve():
            return 2  # the Award
        case Slash():
            return 1 + len(payload.evidence)  # each evidence Result
        case _:
            return 1


#: Fee densities (:func:`fee_density`) are ``fee × DENSITY_SCALE // weight``: exact in
#: order, since a weight is below 2^28 (at most 65 checks × ``MAX_BLOCK_BYTES``, or an
#: 80 KiB transaction's bytes × ``MAX_BLOCK_SIGNATURE_CHECKS``), so two fees per weight
#: that differ do so by more than 2^-56, which this scale keeps apart.
DENSITY_SCALE = 1 << 64


def tx_weight(raw: bytes, payload: Payload) -> int:
    """The share of a block's budgets a transaction takes, the larger of the two: its
    checks over :data:`MAX_BLOCK_SIGNATURE_CHECKS` or its bytes over ``MAX_BLOCK_BYTES``,
    in units of ``1 / (MAX_BLOCK_SIGNATURE_CHECKS × MAX_BLOCK_BYTES)`` of a block (a
    transfer about 1/2,048, a claim 3/2,048, a settle of 64 payouts 65/2,048)."""
    return max(
        signature_checks(payload) * MAX_BLOCK_BYTES,
        tx_block_bytes(raw) * MAX_BLOCK_SIGNATURE_CHECKS,
    )


def fee_density(fee: int, raw: bytes, payload: Payload) -> int:
    """A transaction's fee per share of a block's budgets it takes (:func:`tx_weight`),
    scaled to an integer that orders as the exact quotient does: what a block producer
    ranks candidates by (``Mempool.candidates``). Not a consensus rule."""
    return fee * DENSITY_SCALE // tx_weight(raw, payload)


def _bin_header(n: int) -> int:
    """msgpack's header of an ``n``-byte byte string."""
    return 2 if n < 1 << 8 else 3 if n < 1 << 16 else 5


def tx_block_bytes(raw: bytes) -> int:
    """What a transaction of wire bytes ``raw`` adds to a block's size."""
    return len(raw) + _bin_header(len(raw))


def empty_block_bytes(height: int, chain_id: str) -> int:
    """An upper bound on the size of a signed block at ``height`` holding no transaction,
    with room for the longest header its transaction list may take (array 16)."""
    body = Block(
        height=height, prev_hash=bytes(32), producer=bytes(32), state_root=bytes(32), txs=()
    ).wire()
    envelope = [Block.TAG, chain_id, body, bytes(32), bytes(64)]
    return len(protocol.pack(envelope)) + 2


@dataclass(slots=True)
class BlockBudget:
    """What a block being built or checked has used of its budgets."""

    bytes_used: int
    checks_used: int = 0

    @classmethod
    def for_block(cls, height: int, chain_id: str) -> BlockBudget:
        return cls(empty_block_bytes(height, chain_id))

    def fits(self, raw: bytes, payload: Payload) -> bool:
        """Whether a transaction would still fit (nothing is taken)."""
        return (
            self.bytes_used + tx_block_bytes(raw) <= MAX_BLOCK_BYTES
            and self.checks_used + signature_checks(payload) <= MAX_BLOCK_SIGNATURE_CHECKS
        )

    def spent(self) -> bool:
        """Whether no transaction could fit any more (none is under ``MIN_TX_BLOCK_BYTES``)."""
        return (
            self.bytes_used + MIN_TX_BLOCK_BYTES > MAX_BLOCK_BYTES
            or self.checks_used >= MAX_BLOCK_SIGNATURE_CHECKS
        )

    def room(self) -> tuple[int, int]:
        """The signature checks and bytes still free."""
        return MAX_BLOCK_SIGNATURE_CHECKS - self.checks_used, MAX_BLOCK_BYTES - self.bytes_used

    def take(self, raw: bytes, payload: Payload) -> None:
        self.bytes_used += tx_block_bytes(raw)
        self.checks_used += signature_checks(payload)


def fits_a_block(raw: bytes, payload: Payload, chain_id: str) -> bool:
    """Whether a transaction fits an otherwise empty block (at the largest height): one
    that does not could never be in a block, so the mempool refuses it."""
    return BlockBudget(_largest_empty_block_bytes(chain_id)).fits(raw, payload)


@functools.lru_cache(maxsize=16)
def _largest_empty_block_bytes(chain_id: str) -> int:
    return empty_block_bytes((1 << 64) - 1, chain_id)
