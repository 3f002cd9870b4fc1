"""Signing and submitting this node's ledger transactions, one at a time, in sequence order.

Every transaction of an account carries the next sequence number; the coordinator's
mempool holds a few ahead. So one task signs and submits them in order. A transaction the
coordinator refuses at once is reported to its ``on_reject``; one admitted but dropped when
the block was made leaves a gap: once the chain passes its expiry without taking it, the
local sequence number is reset from the ledger (the transactions after the gap are lost
with it, and the machines' own timeouts take over).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import nacl.signing
import trio

import ledger
from protocol import Signed, Transaction

log = logging.getLogger(__name__)

#: A submitted transaction is valid this many blocks.
TX_LIFETIME_BLOCKS = 30

Build = Callable[[int, int], Signed[Transaction]]
"""``build(seq, expiry_height) -> signed transaction``."""


@dataclass(frozen=True, slots=True)
class TxRequest:
    what: str
    build: Build
    on_reject: Callable[[str], None] | None = None


class TxQueue:
    """The node's transaction pipeline."""

    def __init__(
        self,
        key: nacl.signing.SigningKey,
        state: Callable[[], ledger.State],
        submit: Callable[[bytes], Awaitable[bytes]],
    ) -> None:
        self.me = bytes(key.verify_key)
        self._state = state
        self._submit = submit
        self._send, self._receive = trio.open_memory_channel[TxRequest](10_000)
        self._next_seq: int | None = None
        self._pending: dict[int, int] = {}  # seq -> expiry height
        self.submitted = 0
        self.rejected = 0
        self.lost = 0

    def put(self, request: TxRequest) -> None:
        try:
            self._send.send_nowait(request)
        except trio.WouldBlock:
            log.error("transaction queue full; dropping %s", request.what)
            self.rejected += 1

    def on_block(self) -> None:
        """Forget applied transactions; reset the sequence after a gap expired."""
        state = self._state()
        applied = state.next_seq(self.me)
        self._pending = {s: e for s, e in self._pending.items() if s >= applied}
        if any(e < state.height for e in self._pending.values()):
            self.lost += len(self._pending)
            log.warning("%d transactions were dropped by the ledger; resyncing", len(self._pending))
            self._pending.clear()
            self._next_seq = applied

    async def run(self) -> None:
        async with self._receive:
            async for request in self._receive:
                await self._one(request)

    async def _one(self, request: TxRequest) -> None:
        state = self._state()
        seq = max(self._next_seq or 0, state.next_seq(self.me))
        expiry = state.height + TX_LIFETIME_BLOCKS
        for attempt in range(2):
            signed = request.build(seq, expiry)
            try:
                await self._submit(signed.raw)
            except ledger.SequenceError as exc:
                if attempt == 0:
                    seq = self._state().next_seq(self.me)
                    continue
                self._rejected(request, str(exc))
                return
            except Exception as exc:  # refused, or no coordinator reachable
                self._rejected(request, str(exc))
                return
            self.submitted += 1
            self._pending[seq] = expiry
            self._next_seq = seq + 1
            return

    def _rejected(self, request: TxRequest, reason: str) -> None:
        self.rejected += 1
        log.warning("transaction %s refused: %s", request.what, reason)
        if request.on_reject is not None:
            request.on_reject(reason)
