"""Following the chain: each new block's news for the node's machines (an escrow locked or
closed, the height), its metrics, transaction queue and restart recovery."""

from __future__ import annotations

from typing import TYPE_CHECKING

import ledger
import scheduler

if TYPE_CHECKING:
    from ._node import Node


class LedgerWatch:
    """Tells a node's parts what each block it commits changed."""

    def __init__(self, node: Node) -> None:
        self._node = node

    async def run(self) -> None:
        """Follow the node's ledger until cancelled."""
        service = self._node.ledger
        height = service.state.height
        # What a previous run left (a claim, a kept receipt) is carried on from the chain as
        # the node starts: waiting for the next block sent a sealed receipt's claim one block
        # later, past its claim_by when restarted a block before it (review round 61, R61-1)
        self._node.recovery.on_block(service.state, self._node.now_ms())
        while True:
            await service.wait_height(height + 1)
            state = service.state
            height = state.height
            self.on_block(state)

    def on_block(self, state: ledger.State) -> None:
        """Tell the machines what the new block changed about their escrows."""
        node = self._node
        now = node.now_ms()
        node.metrics.height.set(state.height)
        node.metrics.balance.set(state.balance(node.me))
        node.txq.on_block()
        if node.requester is not None:
            self._requester_block(node.requester, state, now)
        if node.provider is not None:
            node.provider.note_head(node.ledger.replica.best_source_head())
            effects = node.provider.follow_ledger(state.height, state.escrow, now)
            node.effects.execute("provider", effects)
        node.recovery.on_block(state, now)

    def _requester_block(self, req: scheduler.Requester, state: ledger.State, now: int) -> None:
        node = self._node
        closed = [
            job_id
            for job_id in req.jobs
            if (e := state.escrow(job_id)) is not None
            and not e.is_open
            and req.escrow_is_ours(job_id, e)
        ]
        # Through the market's guard: the keys that claims published open outputs that
        # providers sent, so a peer's bytes are handled here too.
        node.market.feed(
            "requester", None, lambda: req.follow_ledger(state.height, state.escrow, now)
        )
        for job_id in closed:
            node.job_closed(job_id)
        self._restored_block(state)

    def _restored_block(self, state: ledger.State) -> None:
        """Jobs read back after a restart: closed once the chain holds no open escrow of
        theirs and no money intent of theirs is still being carried out (a lock that may
        yet land, a settle or refund on its way)."""
        node = self._node
        open_intents = {job_id for job_id, _ in node.recovery.intents.book.intents}
        for job_id, record in list(node.jobs.items()):
            if not record.restored or record.closed or job_id in open_intents:
                continue
            escrow = state.escrow(job_id)
            if escrow is None or not escrow.is_open:
                node.job_closed(job_id)
