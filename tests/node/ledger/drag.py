"""The block loop of the drag tests (``test_review8_drag.py``, ``test_review9_drag.py``): a
provider's claims dropped in blocks, and its sealed claim for an honest requester's job
that must still land by its ``claim_by``."""

from __future__ import annotations

from collections.abc import Callable

import nacl.signing
import trio

import ledger
import protocol
from ledger import tx
from node.ledger import TxQueue, TxRequest

from ...ledger.helpers import award, receipt


def feed_block(producer: ledger.Producer, queue: TxQueue, provider: bytes) -> ledger.Commit:
    """Produce a block and tell ``queue`` what it did: the drops of ``provider``'s
    transactions (as the coordinator reports them), then the block."""
    commit = producer.produce()
    for drop in producer.take_dropped():
        if drop.sender == provider:
            queue.dropped(drop.tx_id, drop.seq, drop.reason)
    queue.on_block()
    return commit


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
        commit = feed_block(producer, queue, provider)
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
    state = lambda: producer.state  # noqa: E731
    return TxQueue(key, state, submit, chain_id=chain, retry_s=(0.05, 0.2))


def sealed_claim(
    requester: nacl.signing.SigningKey,
    provider: nacl.signing.SigningKey,
    job_id: bytes,
    unseal: bytes,
    claim_by: int,
    price: int = 100,
) -> ledger.Claim:
    """``provider``'s claim of ``price`` with ``requester``'s Award and sealed Receipt."""
    return ledger.Claim(
        job_id=job_id,
        award=award(requester, provider, price, job=job_id),
        receipt=receipt(
            requester, provider, job=job_id, key=unseal, at_once=True, claim_by=claim_by
        ),
        key=unseal,
    )


def lock_job(
    producer: ledger.Producer,
    owner: nacl.signing.SigningKey,
    seq: int,
    spec: protocol.Signed[protocol.JobSpec],
    *,
    expiry: int = 100,
    price: int = 100,
    payees: int = 1,
) -> bytes:
    """Submit ``owner``'s lock of ``price`` for ``spec`` (claims open at height 80, or a
    block before ``expiry``); its job id."""
    producer.submit(
        tx.lock(
            owner,
            producer.state.genesis.chain_id,
            seq,
            job_id=spec.id,
            amount=price,
            claim_height=min(expiry - 1, 80),
            escrow_expiry=expiry,
            max_per_payee=price,
            max_payees=payees,
            spec=spec.raw,
            expiry_height=30,
        ).raw
    )
    return spec.id
