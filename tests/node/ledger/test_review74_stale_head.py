"""Review round 74, R74-A: a stranger that answered one block fetch with a made-up head
(2**63-1) and one genuine block kept that head for good; from then on each announcement it
made of an old genuine block started a fetch from it, which it answered with 64 old
genuine blocks, each decoded and checked under the service lock, never counted (50
announcements, 3,250 decodes). A non-source's head is now noted only from blocks it
showed."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import trio

import ledger
import ledger._replica
import protocol
from node.ledger import LedgerService, StoreThread, blocks_topic
from node.ledger._wire import BLOCKS_PROTOCOL, MAX_HEIGHT
from node.net import MemoryHub

from ...keys import key, pub
from ...ledger.helpers import CHAIN, COORD, genesis

N = 120


def _blocks(n: int) -> list[bytes]:
    producer = ledger.Producer(COORD, ledger.State.from_genesis(genesis()), interval_ms=1, now_ms=0)
    return [producer.produce().block.raw for _ in range(n)]


async def test_a_made_up_head_buys_a_stranger_no_fetches_of_old_blocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    decodes = [0]
    real = ledger._replica.decode_block

    def counting(raw: bytes, g: ledger.Genesis) -> object:
        decodes[0] += 1
        return real(raw, g)

    monkeypatch.setattr(ledger._replica, "decode_block", counting)
    blocks = _blocks(N)
    head = N - 5
    served = [50]  # the coordinator's head: the victim lags until it moves on
    hub = MemoryHub(CHAIN, rng=random.Random(1))
    store = StoreThread(lambda: ledger.LedgerStore.open(tmp_path / "l.sqlite3", genesis()))
    mallory = key("r74 mallory")
    fetches = [0]

    async def coordinator(peer: bytes, request: bytes) -> bytes:
        start, limit = protocol.unpack(request)
        top = served[0]
        return protocol.pack([top, blocks[start - 1 : min(top, start - 1 + min(limit, 256))]])

    async def stranger(peer: bytes, request: bytes) -> bytes:
        fetches[0] += 1
        _, limit = protocol.unpack(request)
        if fetches[0] == 1:
            return protocol.pack([MAX_HEIGHT, [blocks[head - 1]]])  # a made-up head
        return protocol.pack([MAX_HEIGHT, blocks[: min(limit, 64)]])  # 64 old blocks

    try:
        with trio.fail_after(60):
            async with (
                hub.open(key("r74 victim")) as vnet,
                hub.open(COORD) as cnet,
                hub.open(mallory) as mnet,
                trio.open_nursery() as nursery,
            ):
                cnet.set_handler(BLOCKS_PROTOCOL, coordinator)
                mnet.set_handler(BLOCKS_PROTOCOL, stranger)
                service = LedgerService(
                    vnet,
                    genesis(),
                    store=store,
                    sources=[pub(COORD)],
                    interval_ms=500,
                    sync_interval_ms=1000,
                )
                await nursery.start(service.run)
                await service.wait_height(50)
                # the victim lags: the stranger relays a genuine new block, and is asked
                await mnet.publish(blocks_topic(CHAIN), protocol.pack([head, blocks[head - 1]]))
                while not fetches[0]:
                    await trio.sleep(0.05)
                await trio.sleep(0.2)
                served[0] = head
                await service.wait_height(head)
                assert service.replica.head_of(pub(mallory)) <= head  # not the made-up head
                before_fetches, before_decodes = fetches[0], decodes[0]
                for i in range(20):  # at the head: old genuine blocks announced
                    await mnet.publish(blocks_topic(CHAIN), protocol.pack([1, blocks[i]]))
                    await trio.sleep(0.2)
                assert fetches[0] == before_fetches  # the tree before: 20, 1,300 decodes
                assert decodes[0] - before_decodes <= 20
                nursery.cancel_scope.cancel()
    finally:
        store.close()
