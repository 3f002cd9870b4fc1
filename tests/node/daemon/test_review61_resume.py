"""Review round 61, R61-1: a claim kept from before a restart was sent again only at the
first block after the daemon started, and at its sealed receipt's ``claim_by`` it was
still sent, to be refused: a provider restarted a block before ``claim_by`` lost the
payment it had earned. The chain as the node starts is acted on at once now."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import trio

import ledger
from node.daemon._ledger_watch import LedgerWatch
from node.daemon._recovery import MoneyIntents

from ...keys import pub
from ...ledger.helpers import ALICE, BOB, JOB, RECEIPT_KEY, award, receipt

CLAIM_BY = 104


class _Chain:
    def __init__(self, height: int) -> None:
        self.height = height
        self.escrow_ = ledger.Escrow(pub(ALICE), 1000, 1000, 150, 200, 1000, 1)

    def next_seq(self, account: bytes) -> int:
        return 0

    def escrow(self, job_id: bytes) -> ledger.Escrow | None:
        return self.escrow_ if job_id == JOB else None

    def balance(self, account: bytes) -> int:
        return 0


def _node(height: int, sent: list[int]) -> Any:
    """A provider's node as far as its money intents and ledger watch see it."""
    node = SimpleNamespace(me=pub(BOB), requester=None, provider=None, now_ms=lambda: 0)
    state = SimpleNamespace(state=_Chain(height))

    async def wait_height(h: int) -> None:
        await trio.sleep_forever()

    node.ledger = SimpleNamespace(state=state.state, wait_height=wait_height)
    node.txq = SimpleNamespace(
        reserve=lambda seq, expiry, raw, request: None, on_block=lambda: None, fee=lambda: 0
    )
    node.put_tx = lambda request: sent.append(node.ledger.state.height)
    return node


async def test_a_kept_claim_goes_out_as_the_node_starts(tmp_path: Path) -> None:
    claim = ledger.Claim(
        JOB,
        award(ALICE, BOB, 100),
        receipt(ALICE, BOB, at_once=True, claim_by=CLAIM_BY),
        RECEIPT_KEY,
    )
    sent: list[int] = []
    first = MoneyIntents(_node(100, sent), tmp_path / "intents.sqlite3")
    first.add(claim)  # the daemon is killed before its claim is in a block
    first.store.close()
    assert sent == [100]
    # back a block before claim_by, its replica at the tip: a claim sent now lands in time
    node = _node(CLAIM_BY - 1, sent)
    intents = MoneyIntents(node, tmp_path / "intents.sqlite3")
    node.recovery = SimpleNamespace(on_block=lambda state, now: intents.on_block(state))
    intents.load()
    with trio.move_on_after(0.2):
        await LedgerWatch(node).run()
    assert sent == [100, CLAIM_BY - 1]  # the tree before: nothing until block 104, then lost
    intents.store.close()
