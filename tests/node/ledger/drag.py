"""The block loop of the drag tests (``test_review8_drag.py``, ``test_review9_drag.py``): a
provider's claims dropped in blocks, and its sealed claim for an honest requester's job
that must still land by its ``claim_by``."""

from __future__ import annotations

from collections.abc import Callable

import nacl.signing
import trio

import ledger
from node.ledger import TxQueue, TxRequest


async def blocks_with_an_honest_claim(
    producer: ledger.Producer,
    queue: TxQueue,
    provider: bytes,
    honest_job: bytes,
    honest_claim: Callable[[int], ledger.Claim],
    blocks: int = 8,
) -> tuple[int | None, int, list[str]]:
    """Produce ``blocks`` blocks a second apart, telling ``queue`` the drops of
    ``provider``'s transactions; after the first, the honest requester's sealed receipt
    comes (``claim_by`` 4 blocks on) and ``honest_claim(claim_by)`` is queued. Returns the
    height its claim landed at (None: it did not), its ``claim_by`` and why it was refused."""
    refused: list[str] = []
    claimed_at: int | None = None
    honest_by = 0
    for block in range(blocks):
        commit = producer.produce()
        for drop in producer.take_dropped():
            if drop.sender == provider:
                queue.dropped(drop.tx_id, drop.seq, drop.reason)
        queue.on_block()
        if block == 0:
            honest_by = producer.state.height + 4
            queue.put(TxRequest(honest_claim(honest_by), refused.append))
        escrow = producer.state.escrow(honest_job)
        assert escrow is not None
        if claimed_at is None and provider in escrow.claimed:
            claimed_at = commit.block.message.height
        await trio.sleep(1)
    return claimed_at, honest_by, refused


def queue_on(producer: ledger.Producer, key: nacl.signing.SigningKey) -> TxQueue:
    """A real transaction queue of ``key``'s submitting straight to ``producer``."""

    async def submit(raw: bytes) -> bytes:
        await trio.sleep(0.01)
        try:
            return producer.submit(raw).id
        except ledger.LedgerError as exc:
            raise ledger.TransactionRejected(f"transaction rejected: {exc}") from None

    chain = producer.state.genesis.chain_id
    return TxQueue(key, lambda: producer.state, submit, chain_id=chain, retry_s=(0.05, 0.2))
