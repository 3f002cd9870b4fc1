"""Blocks and equivocation proofs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar

from protocol import Bin, ListOf, Message, UInt, unpack

#: Largest transaction accepted into a block (envelope included).
MAX_TX_BYTES = 80 * 1024
#: Largest signed block, in bytes: a consensus rule (a block over it is refused; the
#: producer stops taking transactions before one would pass it, ``_budget.py``). The one
#: place this limit is stated. A block reaches a replica as one byte string inside a fetch
#: answer, and the wire format takes byte strings of at most 1 MiB (protocol's
#: ``MAX_BIN_LEN``): so 1 MiB less 64 KiB of room. A fetch answer's limit
#: (node/ledger/_wire.py ``MAX_RESPONSE_BLOCK_BYTES``) is derived from it and stays under
#: a network frame (4 MiB), so every valid block can be fetched.
MAX_BLOCK_BYTES = (1 << 20) - (64 << 10)
#: Most transactions in one block (a genesis may lower it).
MAX_BLOCK_TXS = 4096


@dataclass(frozen=True, slots=True)
class Block(Message):
    """A block: signed by the coordinator that produced it.

    ``txs`` are the signed transactions' wire bytes, in order; ``state_root`` is the root
    of the state after applying them; the block id is the BLAKE2b-256 of the signed bytes.
    """

    TAG: ClassVar[str] = "aimx/block/1"
    SIGNER_FIELD: ClassVar[str | None] = "producer"

    height: Annotated[int, UInt(min=1)]
    prev_hash: Annotated[bytes, Bin(32)]
    producer: Annotated[bytes, Bin(32)]
    state_root: Annotated[bytes, Bin(32)]
    txs: Annotated[tuple[bytes, ...], ListOf(Bin(max=MAX_TX_BYTES), max=MAX_BLOCK_TXS)]


@dataclass(frozen=True, slots=True)
class EquivocationProof:
    """Two different blocks at one height, each validly signed by a genesis coordinator."""

    height: int
    first: bytes
    second: bytes

    @property
    def producers(self) -> tuple[bytes, bytes]:
        """The signers of the two blocks (the same key when one coordinator equivocated)."""
        return (
            unpack(self.first, max_bytes=MAX_BLOCK_BYTES)[3],
            unpack(self.second, max_bytes=MAX_BLOCK_BYTES)[3],
        )
