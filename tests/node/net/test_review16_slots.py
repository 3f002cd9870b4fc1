"""Review round 16, A1, A2a, A2b: what a few keys could do below the guard that counts
misbehaviour. Holding every inbound request slot (A1) or DHT slot (A2a) open and idle shut
the node's protocols to everyone else, uncounted; an ADD_PROVIDER holding 419,410 addresses
under any key grew the node's memory by 47 MiB a second (A2b). Slots are now shared
fairly (node/net/_fair_slots.py) and the provider store is bounded."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
import trio
import varint
from libp2p.kad_dht.pb.kademlia_pb2 import Message
from multiaddr import Multiaddr

from node.net._fair_slots import FairSlots
from node.net._framing import FrameReader, request_frame
from node.net._libp2p_dht import (
    DHT_INBOUND_STREAMS,
    DHT_STREAMS_PER_PEER,
    KAD_PROTOCOL,
    MAX_PROVIDER_ADDRS,
    provider_key,
)
from node.net._libp2p_transport import peer_id_of
from node.net.libp2p_host import Libp2pConfig, Libp2pNetwork, open_libp2p_network

from ...keys import key
from .helpers import CHAIN

LOOPBACK = ("/ip4/127.0.0.1/tcp/0",)
ECHO = "/aimx/test/echo/1"
RECORD = "/aimx/record/1"  # mounted on every node


async def echo(peer: bytes, data: bytes) -> bytes:
    return data


@asynccontextmanager
async def node(n: int, **config: Any) -> AsyncIterator[Libp2pNetwork]:
    async with open_libp2p_network(
        key(n), Libp2pConfig(chain_id=CHAIN, listen=LOOPBACK, **config)
    ) as net:
        yield net


# --- the slots alone ---------------------------------------------------------------------


async def test_a_full_table_gives_a_newcomer_the_oldest_idle_slot_of_the_largest_holder() -> None:
    slots = FairSlots(4, 4)
    flood = [slots.enter(b"a") for _ in range(3)]
    other = slots.enter(b"b")
    assert None not in flood and other is not None and len(slots) == 4
    flood[0].idle = False  # busy: kept
    newcomer = slots.enter(b"c")
    assert newcomer is not None and flood[1] is not None
    assert flood[1].evicted and flood[1].scope.cancel_called and not flood[0].evicted
    assert (slots.held_by(b"a"), slots.held_by(b"b"), slots.held_by(b"c")) == (2, 1, 1)
    assert slots.enter(b"b") is not None  # b holds 1, a holds 2: a gives its idle one
    assert (slots.held_by(b"a"), slots.held_by(b"b"), slots.held_by(b"c")) == (1, 2, 1)
    flood[1].scope.cancel()
    slots.leave(flood[1])  # a taken slot was released when taken: leaving it again is no-op
    assert len(slots) == 4 and slots.evicted == 2


async def test_a_peer_takes_only_from_one_holding_more_and_never_a_busy_slot() -> None:
    slots = FairSlots(2, 2)
    assert slots.enter(b"x") is not None and slots.enter(b"y") is not None
    assert slots.enter(b"x") is None  # y holds no more than x
    busy = FairSlots(1, 1)
    held = busy.enter(b"x")
    assert held is not None
    held.idle = False
    assert busy.enter(b"y") is None  # x holds more, but its stream is serving
    held.idle = True
    assert busy.enter(b"y") is not None and held.evicted


async def test_one_peer_holds_at_most_its_share() -> None:
    slots = FairSlots(8, 2)
    assert slots.enter(b"a") is not None and slots.enter(b"a") is not None
    assert slots.enter(b"a") is None
    assert len(slots) == 2


# --- A1: request streams ------------------------------------------------------------------


async def _hold(attacker: Libp2pNetwork, victim: Libp2pNetwork, held: list[int]) -> None:
    """One stream on /aimx/record/1 kept alive with an empty request now and then (served,
    so nothing counts against the key); a slot lost is opened again."""
    while True:
        try:
            stream = await attacker._host.new_stream(peer_id_of(victim.local_peer), [RECORD])
            reader = FrameReader(stream.read)
            held[0] += 1
            try:
                while True:
                    await stream.write(request_frame(b""))
                    await reader.read_response(1 << 20)
                    await trio.sleep(0.5)
            finally:
                held[0] -= 1
        except Exception:
            await trio.sleep(0.05)


async def test_keys_holding_every_request_slot_do_not_shut_out_a_newcomer() -> None:
    with trio.fail_after(60):
        async with (
            node(161, max_inbound_streams=24) as victim,
            node(162) as a,
            node(163) as b,
            node(164) as honest,
        ):
            victim.set_handler(ECHO, echo)
            blamed: list[str] = []
            victim.on_misbehaved.append(lambda peer, why: blamed.append(why))
            held = [0]
            async with trio.open_nursery() as flood:
                for attacker in (a, b):
                    await attacker.connect(victim.addresses()[0])
                    for _ in range(20):
                        flood.start_soon(_hold, attacker, victim, held)
                for _ in range(100):
                    if len(victim._streams._slots) >= 24:
                        break
                    await trio.sleep(0.05)
                assert len(victim._streams._slots) == 24  # every slot held by the flood
                await honest.connect(victim.addresses()[0])
                answers = [
                    await honest.request(victim.local_peer, ECHO, b"%d" % i) for i in range(5)
                ]
                assert answers == [b"%d" % i for i in range(5)]
                assert victim._streams._slots.evicted >= 1
                assert held[0] > 0  # the flood keeps the rest
                flood.cancel_scope.cancel()
            assert blamed == []


# --- A2a: DHT streams ---------------------------------------------------------------------


def _find_node() -> bytes:
    m = Message()
    m.type = Message.MessageType.FIND_NODE
    m.key = os.urandom(32)
    raw = m.SerializeToString()
    return bytes(varint.encode(len(raw))) + raw


async def _dht_query(src: Libp2pNetwork, dst: Libp2pNetwork) -> bool:
    try:
        with trio.fail_after(5):
            stream = await src._host.new_stream(peer_id_of(dst.local_peer), [KAD_PROTOCOL])
            await stream.write(_find_node())
            answered = bool(await stream.read(65536))
            await stream.close()
            return answered
    except Exception:
        return False


async def test_keys_holding_every_dht_slot_idle_do_not_stop_a_newcomers_queries() -> None:
    flooders = DHT_INBOUND_STREAMS // DHT_STREAMS_PER_PEER
    with trio.fail_after(90):
        async with AsyncExitStack() as stack:
            victim = await stack.enter_async_context(node(170))
            honest = await stack.enter_async_context(node(171))
            attackers = [await stack.enter_async_context(node(172 + i)) for i in range(flooders)]
            held = []
            for attacker in attackers:
                await attacker.connect(victim.addresses()[0])
                for _ in range(DHT_STREAMS_PER_PEER):  # opened, then nothing sent
                    held.append(
                        await attacker._host.new_stream(
                            peer_id_of(victim.local_peer), [KAD_PROTOCOL]
                        )
                    )
            await trio.sleep(0.5)
            await honest.connect(victim.addresses()[0])
            await trio.sleep(0.3)
            assert [await _dht_query(honest, victim) for _ in range(5)] == [True] * 5


# --- A2b: the provider store --------------------------------------------------------------


def _add_provider(key_bytes: bytes, provider: Any, addrs: int) -> bytes:
    one = Multiaddr("/ip4/1.2.3.4/tcp/4001").to_bytes()
    m = Message()
    m.type = Message.MessageType.ADD_PROVIDER
    m.key = key_bytes
    p = m.providerPeers.add()
    p.id = provider.to_bytes()
    p.addrs.extend([one] * addrs)
    raw = m.SerializeToString()
    return bytes(varint.encode(len(raw))) + raw


@pytest.mark.parametrize("addrs", [4_000, 300_000])
async def test_an_add_provider_keeps_few_addresses_and_only_provider_keys(addrs: int) -> None:
    with trio.fail_after(60):
        async with node(180) as victim, node(181) as attacker:
            await attacker.connect(victim.addresses()[0])
            me = attacker._host.get_id()
            ours = bytes.fromhex(provider_key(CHAIN, "onnx.cpu.m1"))
            junk = b"k" + os.urandom(40)
            for key_bytes in (ours, junk):
                stream = await attacker._host.new_stream(
                    peer_id_of(victim.local_peer), [KAD_PROTOCOL]
                )
                try:
                    await stream.write(_add_provider(key_bytes, me, addrs))
                    with trio.move_on_after(2):
                        await stream.read(65536)
                except Exception:
                    pass  # reset: an oversized message
            store = victim.dht.provider_store.providers
            assert junk not in store
            if addrs * 10 < 64 << 10:  # fits the inbound message limit: kept, bounded
                (entry,) = store[ours].values()
                assert len(entry.provider_info.addrs) == MAX_PROVIDER_ADDRS
            else:  # 4 MiB: not even read
                assert ours not in store
