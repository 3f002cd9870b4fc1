"""What the ordering and replication machines ask their driver to do."""

from __future__ import annotations

from dataclasses import dataclass

from protocol import Signed

from ._block import Block, EquivocationProof
from ._state import State


@dataclass(frozen=True, slots=True)
class Commit:
    """Persist ``block`` and ``state`` (one store transaction), then announce the block."""

    block: Signed[Block]
    state: State


@dataclass(frozen=True, slots=True)
class FetchBlocks:
    """Ask ``peer`` for up to ``limit`` blocks from ``from_height`` on."""

    peer: bytes
    from_height: int
    limit: int


@dataclass(frozen=True, slots=True)
class ProofFound:
    """Two different validly signed blocks at one height: keep and show the proof."""

    proof: EquivocationProof


@dataclass(frozen=True, slots=True)
class PeerMisbehaved:
    """``peer`` sent a bad block; the driver lowers its score. Our state is unchanged."""

    peer: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class TxDropped:
    """A transaction the mempool admitted left it without entering a block (refused when
    the block was made, expired while waiting, or behind such a one of its sender's, which
    ``reason`` then says): tell its sender, whose next sequence number is free again."""

    sender: bytes
    seq: int
    tx_id: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class SetTimer:
    """Call the machine's ``tick`` at ``at_ms`` (virtual or wall time, the driver's)."""

    at_ms: int


Effect = Commit | FetchBlocks | ProofFound | PeerMisbehaved | TxDropped | SetTimer
