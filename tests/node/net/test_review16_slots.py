"""Review round 16, A1, A2a, A2b: what a few keys could do below the guard that counts
misbehaviour. Holding every inbound request slot (A1) or DHT slot (A2a) open and idle shut
the node's protocols to everyone else, uncounted; an ADD_PROVIDER holding 419,410 addresses
under any key grew the node's memory by 47 MiB a second (A2b). Slots are now shared
fairly (node/net/_fair_slots.py) and the provider store is bounded."""

from __future__ import annotations

import os
from contextlib import AsyncExitStack
from typing import Any

import pytest
import trio
import varint
from libp2p.kad_dht.pb.kademlia_pb2 import Message
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from multiaddr import Multiaddr

from node.net._fair_slots import FairSlots
from node.net._framing import FrameReader, request_frame
from node.net._libp2p_dht import (
    DHT_INBOUND_STREAMS,
    DHT_SLOT_MIN_AGE_S,
    DHT_STREAMS_PER_PEER,
    KAD_PROTOCOL,
    MAX_PROVIDER_ADDRS,
    provider_key,
)
from node.net._libp2p_transport import peer_id_of
from node.net.libp2p_host import Libp2pNetwork

from .helpers import CHAIN, node

ECHO = "/aimx/test/echo/1"
RECORD = "/aimx/record/1"  # mounted on every node


async def echo(peer: bytes, data: bytes) -> bytes:
    return data


# --- the slots alone ---------------------------------------------------------------------


async def test_a_full_table_gives_a_newcomer_the_oldest_idle_slot_of_the_largest_holder() -> None:
    slots = FairSlots(4, 4, stall_s=0.0, wait_s=0.0)
    flood = [slots.enter(b"a") for _ in range(3)]
    other = slots.enter(b"b")
    assert None not in flood and other is not None and len(slots) == 4
    flood[0].busy = True  # our handler answers on it: kept
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
    slots = FairSlots(2, 2, stall_s=0.0, wait_s=0.0)
    assert slots.enter(b"x") is not None and slots.enter(b"y") is not None
    assert slots.enter(b"x") is None  # y holds no more than x
    busy = FairSlots(1, 1, stall_s=0.0, wait_s=0.0)
    held = busy.enter(b"x")
    assert held is not None
    held.busy = True
    assert busy.enter(b"y") is None  # x holds more, but its stream is serving
    held.busy = False
    assert busy.enter(b"y") is not None and held.evicted


async def test_a_slot_younger_than_its_minimum_age_is_not_taken(autojump_clock: object) -> None:
    # R17-A4: keys reopening one DHT slot each rotated the table through honest queries
    # in flight; a DHT slot is now taken only once it is DHT_SLOT_MIN_AGE_S old.
    slots = FairSlots(1, 1, stall_s=2.0, wait_s=0.0)
    held = slots.enter(b"honest")
    assert held is not None
    held.exchanging = True
    await trio.sleep(1.0)
    assert slots.enter(b"flood") is None and not held.evicted
    await trio.sleep(1.5)
    assert slots.enter(b"flood") is not None and held.evicted


async def test_a_waiting_newcomer_is_served_before_a_flood_timed_to_the_slots_age(
    autojump_clock: object,
) -> None:
    # R18-2: keys reopening each slot the moment it came of age kept out 92-98 % of a
    # newcomer's streams. A newcomer now waits for a slot, ahead of later arrivals and of
    # waiters whose peers hold more.
    slots = FairSlots(2, 16, stall_s=2.0, wait_s=2.5)
    for flood in (b"flood-1", b"flood-2"):
        held = slots.enter(flood)
        assert held is not None
        held.exchanging = True  # a DHT stream: its age decides
    got: dict[bytes, float] = {}

    async def arrive(peer: bytes, at: float) -> None:
        await trio.sleep(at)
        slot = await slots.acquire(peer)
        if slot is not None:
            got[peer] = trio.current_time()
            slot.exchanging = True  # as the DHT's guard marks each

    async with trio.open_nursery() as nursery:
        nursery.start_soon(arrive, b"honest", 1.0)
        for i in range(8):  # spare flood keys arriving just before the slots come of age
            nursery.start_soon(arrive, b"spare-%d" % i, 1.9 + i * 0.001)
    # the first slot to come of age (at 2 s) went to the newcomer, waiting since 1 s
    assert min(got.values()) == got[b"honest"] and 2.0 <= got[b"honest"] < 2.1


async def test_a_peer_that_could_take_no_slot_does_not_wait_in_line() -> None:
    # R19-2: a key holding as many as the largest holder can take from nobody; its streams
    # waiting filled the line and every other new stream was refused at once.
    slots = FairSlots(2, 2, stall_s=0.0, wait_s=5.0)
    for peer in (b"a", b"b"):
        held = slots.enter(peer)
        assert held is not None
        held.busy = True
    start = trio.current_time()
    with trio.move_on_after(1):
        assert await slots.acquire(b"a") is None  # refused at once, not after 5 s
    assert trio.current_time() - start < 1 and not slots._waiting


async def test_one_peer_holds_at_most_its_share() -> None:
    slots = FairSlots(8, 2, stall_s=0.0, wait_s=0.0)
    assert slots.enter(b"a") is not None and slots.enter(b"a") is not None
    assert slots.enter(b"a") is None
    assert len(slots) == 2


# --- A1: request streams ------------------------------------------------------------------


TRICKLE_S = 1.0  # under the victim's frame_timeout below


async def _hold(
    attacker: Libp2pNetwork, victim: Libp2pNetwork, held: list[int], trickle: float
) -> None:
    """One stream on /aimx/record/1 kept alive with a request now and then (served, so
    nothing counts against the key); a slot lost is opened again. ``trickle``: each frame
    is sent as its first byte, a pause, then the rest with the next frame's first byte, so
    the stream is never between requests (round 17, R17-A1)."""
    frame = request_frame(b"0123456789")
    while True:
        try:
            stream = await attacker._host.new_stream(peer_id_of(victim.local_peer), [RECORD])
            reader = FrameReader(stream.read)
            held[0] += 1
            try:
                if trickle:
                    await stream.write(frame[:1])
                while True:
                    if trickle:
                        await trio.sleep(trickle)
                        await stream.write(frame[1:] + frame[:1])
                    else:
                        await stream.write(frame)
                    await reader.read_response(1 << 20)
                    if not trickle:
                        await trio.sleep(0.5)
            finally:
                held[0] -= 1
        except Exception:
            await trio.sleep(0.05)


@pytest.mark.parametrize(
    "trickle",
    [0.0, TRICKLE_S, 0.15],
    ids=["idle (round 16)", "trickled frames (round 17)", "pipelined tiny frames (round 19)"],
)
async def test_keys_holding_every_request_slot_do_not_shut_out_a_newcomer(trickle: float) -> None:
    with trio.fail_after(60):
        async with (
            node(161, max_inbound_streams=24, frame_timeout=3 * TRICKLE_S) as victim,
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
                        flood.start_soon(_hold, attacker, victim, held, trickle)
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
            await trio.sleep(DHT_SLOT_MIN_AGE_S + 0.2)  # a slot is taken from then on
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


def test_a_full_provider_store_keeps_its_keys_and_refuses_new_ones() -> None:
    # R17-A2: evicting the key with the fewest providers let junk keys with two providers
    # push out an honest class key with one, again after each re-announcement.
    from node.net import _libp2p_dht

    class Store:
        def __init__(self) -> None:
            self.providers: dict[bytes, dict[str, Any]] = {}

        def add_provider(self, key_bytes: bytes, provider: Any) -> None:
            self.providers.setdefault(key_bytes, {})[str(provider.peer_id)] = provider

    store = Store()
    _libp2p_dht.guard_provider_store(store)
    honest = bytes.fromhex(provider_key(CHAIN, "onnx.cpu.m1"))
    store.add_provider(honest, PeerInfo(ID(b"honest"), [Multiaddr("/ip4/1.2.3.4/tcp/1")]))
    for i in range(_libp2p_dht.MAX_PROVIDER_KEYS + 5):
        junk = b"\x12\x20" + i.to_bytes(32, "big")
        for who in (b"sybil-a%d" % (i // 32), b"sybil-b%d" % (i // 32)):
            store.add_provider(junk, PeerInfo(ID(who), [Multiaddr("/ip4/1.2.3.4/tcp/1")]))
    assert honest in store.providers
    assert len(store.providers) == _libp2p_dht.MAX_PROVIDER_KEYS


async def test_answers_to_our_dht_queries_are_read_up_to_a_bound() -> None:
    # R17-A3: the 64 KiB bound covered peers' requests only; answers to our lookups were
    # read up to 4 MiB (400,000 addresses parsed at once froze the node 0.5-0.7 s)
    import libp2p.kad_dht.peer_routing as peer_routing
    import libp2p.kad_dht.provider_store as provider_store
    import libp2p.kad_dht.value_store as value_store

    from node.net._libp2p_dht import DHT_MAX_RESPONSE

    async with node(190):
        for module in (peer_routing, provider_store, value_store):
            assert module.MAX_DHT_MESSAGE_SIZE == DHT_MAX_RESPONSE  # type: ignore[attr-defined]


async def _rotate(attacker: Libp2pNetwork, victim: Libp2pNetwork) -> None:
    """One stream that sends nothing, opened again at once whenever its slot is taken."""
    while True:
        try:
            stream = await attacker._host.new_stream(peer_id_of(victim.local_peer), [ECHO])
            try:
                while await stream.read(1):
                    pass
            finally:
                with trio.move_on_after(1):
                    await stream.reset()
        except Exception:
            await trio.sleep(0.002)


async def test_keys_rotating_one_slot_each_do_not_cut_a_large_honest_upload() -> None:
    # R18-1: with any read or write takeable, keys holding one slot each and reopening at
    # once rotated the table through an honest 3 MiB upload mid-frame (0 of 8 went
    # through). A transfer making progress keeps its slot.
    size = 3 << 20
    with trio.fail_after(90):
        async with AsyncExitStack() as stack:
            victim = await stack.enter_async_context(node(200, max_inbound_streams=8))
            honest = await stack.enter_async_context(node(201))
            attackers = [await stack.enter_async_context(node(202 + i)) for i in range(10)]
            victim.set_handler(ECHO, echo, max_request_bytes=size + 1024)
            await honest.connect(victim.addresses()[0])
            async with trio.open_nursery() as flood:
                for attacker in attackers:
                    await attacker.connect(victim.addresses()[0])
                    flood.start_soon(_rotate, attacker, victim)
                await trio.sleep(2)
                before = victim._streams._slots.evicted
                for i in range(4):
                    data = bytes([i]) * size
                    got = await honest.request(
                        victim.local_peer, ECHO, data, timeout=30, max_response_bytes=size + 1024
                    )
                    assert got == data
                assert victim._streams._slots.evicted > before  # the table kept turning
                flood.cancel_scope.cancel()
