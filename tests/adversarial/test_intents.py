"""Adversarial review of money intents (e59e42e): a coordinator that lies about our
transactions (a false drop report), and a stranger that pretends to be one. The intent book
runs against real ledger states (the chain driver of tests/ledger)."""

from __future__ import annotations

import random

import trio

import ledger
import protocol
from ledger import tx
from node.ledger import Intent, IntentBook, LedgerService, Resolved, Submit
from node.ledger._service import DROPPED_PROTOCOL
from node.net import MemoryHub, RemoteError

from ..keys import key, pub
from ..ledger.helpers import ALICE, BOB, CHAIN, COORD, JOB, Chain, genesis, settle

PRICE = 100


def test_a_false_drop_report_of_a_settle_pays_no_provider_twice() -> None:
    """The coordinator says our settle was dropped but keeps it and puts it in a block
    later, after the book has signed the settle again with a fresh sequence number: the
    second one is refused by the ledger (the escrow is closed), BOB is paid once, the
    intent resolves applied and no third settle is signed."""
    c = Chain.new()
    c.ok(c.lock(ALICE, 300, claim_at=5, expire_at=60, per_payee=PRICE))  # block 1 (seq 0)
    first = settle(ALICE, CHAIN, 1, job_id=JOB, payouts={pub(BOB): PRICE}, expiry_height=40)
    payload = ledger.verify_tx(first.raw, CHAIN).payload
    book = IntentBook(pub(ALICE))
    intent = Intent.of(payload, c.height)
    assert [type(a) for a in book.add(intent)] == [Submit]
    book.signed(intent.key, seq=1, tx_expiry=40)
    book.refused(intent.key, "dropped from the block: (a lie)", c.height)  # the lie
    resigned: list[protocol.Signed[protocol.Transaction]] = []
    for _ in range(10):
        c.ok()
        for action in book.on_block(c.state):
            assert isinstance(action, Submit), action
            seq = c.seq(ALICE) + 1  # the first settle still holds next_seq's number
            resigned.append(tx.make(ALICE, CHAIN, seq, payload, expiry_height=c.height + 30))
            book.signed(intent.key, seq=seq, tx_expiry=c.height + 30)
        if resigned:
            break
    assert len(resigned) == 1  # signed again once its retry came
    c.ok(first)  # the coordinator's kept copy lands
    c.rejects(resigned[0], ledger.EscrowError)  # the second: the escrow is closed
    assert c.state.balance(pub(BOB)) == 1_000_000 + PRICE
    c.ok()
    actions = book.on_block(c.state)
    assert [(type(a), getattr(a, "applied", None)) for a in actions] == [(Resolved, True)]
    assert len(book) == 0


async def test_a_stranger_cannot_report_our_transactions_dropped() -> None:
    """Only a genesis coordinator reports drops: a stranger's notice naming our pending
    transaction is refused, counted, and reaches no callback (no refusal, no gap filler)."""
    g = genesis()
    hub = MemoryHub(CHAIN, rng=random.Random(9))
    mallory = key("mallory")
    async with (
        hub.open(key("replica")) as replica_net,
        hub.open(mallory) as mallory_net,
        trio.open_nursery() as nursery,
    ):
        replica = LedgerService(replica_net, g, sources=[pub(COORD)])
        await nursery.start(replica.run)
        heard: list[tuple[bytes, int, str]] = []
        replica.on_dropped.append(lambda *a: heard.append(a))
        misbehaved: list[str] = []
        replica.on_misbehaved.append(lambda peer, why: misbehaved.append(why))
        notice = protocol.pack([[b"\x01" * 32, 0, "dropped"]])
        refused = False
        try:
            await mallory_net.request(pub(key("replica")), DROPPED_PROTOCOL, notice)
        except RemoteError:
            refused = True
        assert refused and heard == []
        assert any("is no coordinator" in why for why in misbehaved)
        nursery.cancel_scope.cancel()
