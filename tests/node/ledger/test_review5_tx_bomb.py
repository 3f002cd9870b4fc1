"""Review round 5, R5-2: "transactions" of nested msgpack arrays on ``/aimx/ledger/tx/1``.

A 1 MiB tree of two-item arrays cost a coordinator ~0.4 s of its trio loop to decode (and
re-encode) before it was refused as no signed message, and nothing was counted against the
peer: one key kept a coordinator from producing blocks. Now the protocol is mounted at the
largest transaction (``ledger.MAX_TX_BYTES``) plus a little, ``verify_tx`` refuses anything
longer before decoding, a malformed transaction is counted against the peer that sent it,
and a forwarding node checks a transaction before sending it on (so it is counted there,
at the first hop, and the coordinator never blames an honest forwarder).
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

import ledger
import protocol
from node.ledger import LedgerService
from node.ledger._wire import TX_PROTOCOL
from node.net import MemoryHub, MemoryNetwork, MessageTooLarge, RemoteError

from ...keys import key, pub
from ...ledger.helpers import ALICE, CHAIN, COORD, genesis

MALLORY = key("mallory")


def _tree(nbytes: int) -> bytes:
    """The largest binary tree of two-item msgpack arrays (leaves 0) of at most ``nbytes``:
    one Python list per two bytes when decoded."""
    depth = 0
    while (1 << (depth + 2)) - 1 <= nbytes:
        depth += 1
    node = b"\x00"
    for _ in range(depth):
        node = b"\x92" + node + node
    return node


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


@asynccontextmanager
async def _coordinator_forwarder_and_mallory(
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[tuple[LedgerService, LedgerService, MemoryNetwork, list[int]]]:
    """A coordinator's ledger service, a node forwarding to it, Mallory's network, and a
    list that grows by the size of each transaction the coordinator's mempool was handed."""
    seen: list[int] = []
    real_verify = ledger.verify_tx  # what ledger._mempool calls

    def counting_verify(raw: bytes, chain_id: str) -> ledger.VerifiedTx:
        seen.append(len(raw))
        return real_verify(raw, chain_id)

    monkeypatch.setattr("ledger._mempool.verify_tx", counting_verify)
    g = genesis()
    hub = MemoryHub(CHAIN, rng=random.Random(5))
    async with (
        hub.open(COORD) as coord_net,
        hub.open(key("forwarder")) as fwd_net,
        hub.open(MALLORY) as evil,
        trio.open_nursery() as nursery,
    ):
        coord = LedgerService(coord_net, g, producer_key=COORD, interval_ms=1000)
        await nursery.start(coord.run)
        fwd = LedgerService(fwd_net, g, sources=[pub(COORD)], sync_interval_ms=1000)
        await nursery.start(fwd.run)
        await fwd.wait_height(1)
        yield coord, fwd, evil, seen
        nursery.cancel_scope.cancel()


def test_verify_tx_refuses_a_transaction_over_max_tx_bytes_before_decoding() -> None:
    bomb = _tree(1 << 20)
    with pytest.raises(ledger.MalformedTransaction, match="exceeds the 81920-byte limit"):
        ledger.verify_tx(bomb, CHAIN)
    # what a block holds is what is admitted: a maximal one is still decoded (and refused
    # for its shape, cheaply)
    small = _tree(ledger.MAX_TX_BYTES)
    with pytest.raises(ledger.MalformedTransaction, match="invalid transaction"):
        ledger.verify_tx(small, CHAIN)


async def test_a_one_mib_tree_on_tx_1_is_refused_by_its_length_before_the_handler_sees_it(
    clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with _coordinator_forwarder_and_mallory(monkeypatch) as (coord, _fwd, evil, seen):
        rejected = coord.net.counters.requests_rejected
        with pytest.raises(MessageTooLarge):
            await evil.request(pub(COORD), TX_PROTOCOL, _tree(1 << 20), timeout=5)
        assert seen == []  # never reached the mempool, never decoded
        assert coord.net.counters.requests_rejected == rejected + 1


async def test_a_malformed_transaction_is_counted_against_the_peer_that_sent_it(
    clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with _coordinator_forwarder_and_mallory(monkeypatch) as (coord, _fwd, evil, _seen):
        bomb = _tree(ledger.MAX_TX_BYTES)
        for n in range(1, 4):
            with pytest.raises(RemoteError, match="transaction rejected: invalid transaction"):
                await evil.request(pub(COORD), TX_PROTOCOL, bomb, timeout=5)
            assert coord.counters.misbehaving.get(pub(MALLORY)) == n
        # an honest refusal (a replay, a low balance) is no misbehaviour
        good = ledger.tx.transfer(ALICE, CHAIN, 0, to=pub(MALLORY), amount=1, expiry_height=50)
        await evil.request(pub(COORD), TX_PROTOCOL, good.raw, timeout=5)
        with pytest.raises(RemoteError, match="transaction rejected"):
            await evil.request(pub(COORD), TX_PROTOCOL, good.raw, timeout=5)
        assert coord.counters.misbehaving.get(pub(MALLORY)) == 3


async def test_a_forwarding_node_counts_a_malformed_transaction_and_does_not_send_it_on(
    clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with _coordinator_forwarder_and_mallory(monkeypatch) as (coord, fwd, evil, seen):
        bomb = _tree(ledger.MAX_TX_BYTES)
        with pytest.raises(RemoteError, match="transaction rejected: invalid transaction"):
            await evil.request(fwd.net.local_peer, TX_PROTOCOL, bomb, timeout=5)
        assert fwd.counters.misbehaving.get(pub(MALLORY)) == 1  # at the first hop
        assert seen == []  # the coordinator never had it
        assert coord.counters.misbehaving == {}  # nor blamed the forwarder
        # a well-formed one is still forwarded and admitted
        good = ledger.tx.transfer(ALICE, CHAIN, 0, to=pub(MALLORY), amount=1, expiry_height=50)
        answer = await evil.request(fwd.net.local_peer, TX_PROTOCOL, good.raw, timeout=5)
        assert protocol.unpack(answer) == [good.id]
        assert seen == [len(good.raw)]
