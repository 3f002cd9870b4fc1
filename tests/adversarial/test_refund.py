"""Adversarial review of money intents (e59e42e), daemon level: a refund that the
coordinator refuses for a while (a mempool kept full by other accounts' transactions, or a
coordinator that censors) must still close the escrow once refunds are taken again: every
escrow closes while its owner's node runs."""

from __future__ import annotations

import trio

import ledger
from node.daemon import Node
from node.ledger._intents import MAX_REFUSALS, RETRY_BLOCKS
from node.ledger._service import TX_PROTOCOL
from node.net import RemoteError
from sandbox import tiny_model_path

from ..node.daemon._cluster import CHAIN, Cluster, cluster, tiny_inputs


def _refuse_refunds(node: Node, refusals: int) -> list[str]:
    """The coordinator, as ``node`` sees it, refuses its first ``refusals`` refunds (a
    definite answer, as a full mempool gives); returns the kinds it saw."""
    request = node.net.request
    seen: list[str] = []

    async def refusing(peer: bytes, protocol_id: str, data: bytes, **kw: object) -> bytes:
        if protocol_id == TX_PROTOCOL:
            kind = ledger.verify_tx(data, CHAIN).tx.kind
            seen.append(kind)
            if kind == "refund" and seen.count("refund") <= refusals:
                raise RemoteError("transaction rejected: the mempool is full")
        return await request(peer, protocol_id, data, **kw)  # type: ignore[arg-type]

    node.net.request = refusing  # type: ignore[method-assign]
    return seen


async def _blocks_until_closed(cl: Cluster, job_id: bytes, limit: int) -> bool:
    for _ in range(limit):
        e = cl.coordinator_state().escrow(job_id)
        if e is not None and not e.is_open:
            return True
        await cl.settle_blocks(1)
    return False


async def test_a_refund_refused_for_a_while_is_made_once_refunds_are_taken() -> None:
    """Before the fix: the requester machine asks for a job's refund once
    (Requester.block: refunded_at); its intent gave up after MAX_REFUSALS definite refusals,
    and the orphan scan skips escrows of jobs the requester still holds (SETTLING), so the
    escrow stayed open while the node ran ('refunds tried 8 times', 100 blocks later)."""
    model = tiny_model_path().read_bytes()
    with trio.fail_after(120):
        async with cluster(1, slow=(0,), deadline_ms=2_000) as cl:
            req = cl.requester
            seen = _refuse_refunds(req, MAX_REFUSALS)
            job_id = await req.submit_job(model, tiny_inputs(), redundancy=1)
            # refusals stop after MAX_REFUSALS tries, RETRY_BLOCKS apart; then plenty more
            limit = 200 + MAX_REFUSALS * RETRY_BLOCKS + 100
            closed = await _blocks_until_closed(cl, job_id, limit)
            assert seen.count("refund") >= MAX_REFUSALS  # the refusals did happen
            assert closed, f"escrow still open; refunds tried {seen.count('refund')} times"
