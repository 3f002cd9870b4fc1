"""Adversarial review of the coordinators' reported head (e59e42e): a source (a genesis
coordinator other than the one that takes our transactions, or one that lies) reports a
head far above the chain's, and our transactions' expiries count from it."""

from __future__ import annotations

import trio

import ledger
from node.ledger import TxQueue, TxRequest
from node.ledger._service import MAX_HEIGHT
from node.ledger._txqueue import TX_LIFETIME_BLOCKS

from ..keys import key, pub
from ..ledger.helpers import ALICE, BOB, CHAIN, COORD, genesis

LIAR = pub(key("liar"))


async def _submit_with_head(claimed_head: int) -> tuple[list[str], list[int], ledger.Producer]:
    """ALICE's node, in step with the honest coordinator (height 0), whose replica noted
    ``claimed_head`` from the liar (what LedgerService._fetch does with a response's head
    when it carries any block, an old genuine one included), puts one transfer."""
    producer = ledger.Producer(
        COORD, ledger.State.from_genesis(genesis()), interval_ms=100, now_ms=0
    )
    replica = ledger.Replica(producer.state)
    replica.add_source(pub(COORD))
    replica.add_source(LIAR)
    replica.note_head(pub(COORD), producer.state.height)
    replica.note_head(LIAR, claimed_head)
    expiries: list[int] = []

    async def submit(raw: bytes) -> bytes:  # the honest coordinator's mempool decides
        expiries.append(ledger.verify_tx(raw, CHAIN).tx.expiry_height)
        return producer.mempool.add(raw, producer.state).id

    queue = TxQueue(
        ALICE,
        lambda: producer.state,
        submit,
        chain_id=CHAIN,
        head=replica.best_source_head,
    )
    refusals: list[str] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(queue.run)
            queue.put(TxRequest(ledger.Transfer(pub(BOB), 1), refusals.append))
            while queue.submitted + queue.rejected < 1:
                await trio.sleep(0.002)
            nursery.cancel_scope.cancel()
    return refusals, expiries, producer


async def test_a_lying_head_cannot_get_every_transaction_of_ours_refused() -> None:
    """Before the fix: expiry = 2^63 - 1 + 30, the honest mempool refuses it ('more than
    1000 blocks ahead'); every lock failed at once and every settle, refund and claim gave
    up after 8 refusals, for as long as the node ran (a noted head never goes down)."""
    refusals, expiries, producer = await _submit_with_head(MAX_HEIGHT)
    assert refusals == []
    assert len(producer.mempool) == 1
    # and the lie buys at most the mempool's horizon: a lost transaction is re-signed
    # after at most MAX_EXPIRY_AHEAD blocks, never 'never'
    assert expiries == [producer.state.height + ledger.MAX_EXPIRY_AHEAD]


async def test_an_honest_head_ahead_of_a_catching_up_node_still_counts() -> None:
    """The reason expiries count from the head (a node catching up signs with the
    coordinator's height, not its stale one) is kept below the cap."""
    _refusals, expiries, _producer = await _submit_with_head(500)
    assert expiries == [500 + TX_LIFETIME_BLOCKS]
