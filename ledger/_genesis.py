"""The genesis document: chain id, coordinator keys, initial balances and chain parameters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from protocol import Bin, ListOf, Nested, ProtocolError, Record, Text, UInt, content_hash, pack
from protocol import unpack as _unpack

from ._errors import GenesisError

GENESIS_TAG = "aimx/genesis/1"
#: Total supply may never exceed this (so every amount fits in an unsigned 64-bit integer).
MAX_SUPPLY = 1 << 62


@dataclass(frozen=True, slots=True)
class Allocation(Record):
    """An initial balance."""

    account: Annotated[bytes, Bin(32)]
    amount: Annotated[int, UInt(min=1, max=MAX_SUPPLY)]


@dataclass(frozen=True, slots=True)
class Genesis(Record):
    """Everything a node needs to start the chain at height 0.

    ``unbonding_delay`` and ``reputation_half_life`` are in blocks; ``min_fee`` is the least
    fee of any transaction; ``max_block_txs`` bounds a block.
    """

    chain_id: Annotated[str, Text(max=64, pattern=r"[A-Za-z0-9_.:\-]{1,64}")]
    coordinators: Annotated[tuple[bytes, ...], ListOf(Bin(32), max=16, unique=True)]
    balances: Annotated[tuple[Allocation, ...], ListOf(Nested(Allocation), max=4096)]
    min_fee: Annotated[int, UInt(max=MAX_SUPPLY)]
    unbonding_delay: Annotated[int, UInt(min=1, max=1 << 32)]
    reputation_half_life: Annotated[int, UInt(min=1, max=1 << 32)]
    max_block_txs: Annotated[int, UInt(min=1, max=4096)]

    def hash(self) -> bytes:
        """The genesis hash: the ``prev_hash`` of block 1."""
        return content_hash(self.encode())

    def encode(self) -> bytes:
        return pack([GENESIS_TAG, self.wire()])

    @classmethod
    def decode(cls, data: bytes) -> Genesis:
        try:
            value: Any = _unpack(data)
            if type(value) is not list or len(value) != 2 or value[0] != GENESIS_TAG:
                raise GenesisError(f"not a genesis document (expected tag {GENESIS_TAG})")
            genesis = cls.from_wire(value[1])
        except ProtocolError as exc:
            raise GenesisError(f"invalid genesis document: {exc}") from None
        genesis.check()
        return genesis

    def check(self) -> None:
        """Raise :class:`GenesisError` unless the document is usable."""
        if not self.coordinators:
            raise GenesisError("genesis needs at least one coordinator key")
        seen = {a.account for a in self.balances}
        if len(seen) != len(self.balances):
            raise GenesisError("genesis lists an account twice in its balances")
        if sum(a.amount for a in self.balances) > MAX_SUPPLY:
            raise GenesisError(f"genesis balances exceed the maximum supply {MAX_SUPPLY}")


def make_genesis(
    chain_id: str,
    coordinators: list[bytes] | tuple[bytes, ...],
    balances: dict[bytes, int] | None = None,
    *,
    min_fee: int = 0,
    unbonding_delay: int = 100,
    reputation_half_life: int = 10_000,
    max_block_txs: int = 4096,
) -> Genesis:
    """Build and check a genesis document (balances sorted by account)."""
    try:
        genesis = Genesis(
            chain_id=chain_id,
            coordinators=tuple(coordinators),
            balances=tuple(Allocation(k, v) for k, v in sorted((balances or {}).items())),
            min_fee=min_fee,
            unbonding_delay=unbonding_delay,
            reputation_half_life=reputation_half_life,
            max_block_txs=max_block_txs,
        )
    except ProtocolError as exc:
        raise GenesisError(f"invalid genesis: {exc}") from None
    genesis.check()
    return genesis
