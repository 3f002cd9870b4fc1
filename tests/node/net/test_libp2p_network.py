"""Ten libp2p nodes on loopback: discovery by capability class, pubsub, a node leaving."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
import trio

from node.net import NetworkTimeout, PeerEvent, PeerUnreachable
from node.net.libp2p_host import (
    GossipConfig,
    Libp2pConfig,
    Libp2pNetwork,
    open_libp2p_network,
    provider_key,
    wall_ms,
)
from protocol import peer_id, provider_classes

from ...keys import key
from .helpers import CHAIN, advert

N = 10
TTL_MS = 600_000
LEAVER_TTL_MS = 90_000  # shorter, so that only the leaver's record expires below


class Clock:
    """Wall-clock milliseconds plus a skew the test advances (records expire by it)."""

    def __init__(self) -> None:
        self.skew = 0

    def __call__(self) -> int:
        return wall_ms() + self.skew


def classes_of(i: int) -> tuple[str, ...]:
    """Node 0 is the coordinator (serves nothing); the others vary in memory and runtime."""
    if i == 0:
        return ()
    memory = [1024, 2048, 4096, 8192][i % 4]
    runtimes = ["onnx"] if i % 2 else ["onnx", "torchscript"]
    return provider_classes(
        runtimes=runtimes, execution_providers=["CPUExecutionProvider"], memory_mb=memory
    )


def config(i: int, clock: Clock, bootstrap: tuple[str, ...]) -> Libp2pConfig:
    return Libp2pConfig(
        chain_id=CHAIN,
        listen=("/ip4/127.0.0.1/tcp/0",),
        bootstrap=bootstrap,
        relay_service=i == 0,
        gossip=GossipConfig(heartbeat_interval=1),
        now_ms=clock,
    )


async def test_ten_nodes_find_classes_hear_jobs_and_see_a_leaver() -> None:
    clock = Clock()
    with trio.fail_after(90):
        async with AsyncExitStack() as stack:
            nets: list[Libp2pNetwork] = []
            for i in range(N - 1):
                boot = nets[0].addresses()[:1] if nets else ()
                nets.append(
                    await stack.enter_async_context(
                        open_libp2p_network(key(i + 1), config(i, clock, boot))
                    )
                )
            # the last node leaves mid-test: it has its own exit stack
            async with AsyncExitStack() as leaver_stack:
                leaver = await leaver_stack.enter_async_context(
                    open_libp2p_network(key(N), config(N - 1, clock, nets[0].addresses()[:1]))
                )
                await run_checks([*nets, leaver], clock, leaver_stack)


async def run_checks(nets: list[Libp2pNetwork], clock: Clock, leaver_stack: AsyncExitStack) -> None:
    # pubsub at a realistic rate reaches every subscriber. This runs first: in py-libp2p
    # 0.8.1 the connection churn of many concurrent DHT lookups can leave pubsub streams
    # whose reader has gone, after which GossipSub drops messages to that peer
    # (specs/network.md, "Known defects"); jobs are also sent to providers directly.
    topic = f"aimx/{CHAIN}/jobs/onnx.cpu.m1"
    inboxes = [net.subscribe(topic) for net in nets[1:]]
    publisher = nets[0]
    got: list[set[bytes]] = [set() for _ in inboxes]

    async def drain(i: int) -> None:
        async for message in inboxes[i]:
            got[i].add(message.data)

    async with trio.open_nursery() as nursery:
        for i in range(len(inboxes)):
            nursery.start_soon(drain, i)
        # warm-up: GossipSub may drop what is published before its mesh forms (pubsub is
        # best effort); publish until every subscriber has had each of the last five, in a
        # bounded loop
        warm: list[bytes] = []
        for n in range(100):
            warm.append(b"warm-up %d" % n)
            await publisher.publish(topic, warm[-1])
            await trio.sleep(0.1)
            if len(warm) > 5 and all(set(warm[-6:-1]) <= g for g in got):
                break
        sent = {b"job %d" % n for n in range(30)}
        for data in sorted(sent):
            await publisher.publish(topic, data)
            await trio.sleep(0.05)  # 20 per second
        with trio.move_on_after(10):
            while not all(sent <= g for g in got):
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    assert [len(sent - g) for g in got] == [0] * len(got), [len(sent - g) for g in got]
    for inbox in inboxes:
        inbox.close()

    now = clock()
    async with trio.open_nursery() as nursery:
        for i, net in enumerate(nets):
            if classes_of(i):
                ttl = LEAVER_TTL_MS if i == N - 1 else TTL_MS
                nursery.start_soon(
                    net.advertise, advert(key(i + 1), classes_of(i), now_ms=now, ttl_ms=ttl)
                )
    everything = sorted({c for i in range(N) for c in classes_of(i)})
    expected = {c: {nets[i].local_peer for i in range(N) if c in classes_of(i)} for c in everything}

    # every class's providers are found, and no others, from three vantage points (the
    # coordinator, a provider, the last node); lookups run one at a time per vantage point
    async def look(net: Libp2pNetwork, out: dict[tuple[int, str], set[bytes]]) -> None:
        for cls in [*everything, "onnx.cuda.m8"]:
            records = await net.find_providers(cls, limit=N, timeout=10)
            out[(nets.index(net), cls)] = {r.signer for r in records}

    found: dict[tuple[int, str], set[bytes]] = {}
    async with trio.open_nursery() as nursery:
        for i in (0, 4, N - 1):
            nursery.start_soon(look, nets[i], found)
    missing = {
        (i, cls): len(expected[cls] - found[(i, cls)])
        for i in (0, 4, N - 1)
        for cls in everything
        if found[(i, cls)] != expected[cls]
    }
    assert not missing, missing
    assert all(found[(i, "onnx.cuda.m8")] == set() for i in (0, 4, N - 1))

    # a node that leaves is seen as gone; its records go once they expire. What outlives
    # it is the copy of its provider record on other nodes: wait (bounded) until one holds
    # it (the second announcement, 12 s after the first, sees to that under load)
    leaver = nets[-1]
    leaver_key = bytes.fromhex(provider_key(CHAIN, classes_of(N - 1)[0]))
    leaver_id = peer_id(leaver.local_peer)
    for _ in range(200):  # bounded
        holders = [
            net
            for net in nets[:-1]
            if any(
                p.peer_id.to_base58() == leaver_id
                for p in net.dht.provider_store.get_providers(leaver_key)
            )
        ]
        if holders:
            break
        await trio.sleep(0.1)
    assert holders
    watchers = [net for net in nets[:-1] if leaver.local_peer in net.connected_peers()]
    assert watchers
    events = [net.peer_events() for net in watchers]
    await leaver_stack.aclose()
    for peer_inbox in events:
        with trio.fail_after(10):
            async for event in peer_inbox:
                if event == PeerEvent(leaver.local_peer, False):
                    break
        peer_inbox.close()
    # py-libp2p can register a connection that finished opening while the leaver shut
    # down (specs/network.md, "Known defects"), so a peer may still be listed; it no
    # longer answers
    with pytest.raises((NetworkTimeout, PeerUnreachable)):
        await nets[0].request(leaver.local_peer, "/aimx/record/1", b"", timeout=2)
    cls = classes_of(N - 1)[0]
    # still stored, not yet expired; a lookup right after a peer left can miss its copy
    # on a loaded machine (a lookup is not guaranteed to reach every replica), so up to 5,
    # half a second apart
    for _ in range(5):
        records = await nets[4].find_providers(cls, limit=N)
        if leaver.local_peer in {r.signer for r in records}:
            break
        await trio.sleep(0.5)
    assert leaver.local_peer in {r.signer for r in records}
    clock.skew += LEAVER_TTL_MS + 1
    records = await nets[4].find_providers(cls, limit=N)
    assert leaver.local_peer not in {r.signer for r in records}
    assert {r.signer for r in records} == expected[cls] - {leaver.local_peer}


@asynccontextmanager
async def a_and_its_provider_b() -> AsyncIterator[tuple[Libp2pNetwork, Libp2pNetwork, str]]:
    """Node a, and node b, which serves a class (the third item) and has found a (and been
    found by it: a holds b's provider record and has cached b's record)."""
    clock = Clock()
    cls = classes_of(1)[0]
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(open_libp2p_network(key(1), config(0, clock, ())))
        b = await stack.enter_async_context(
            open_libp2p_network(key(2), config(1, clock, a.addresses()[:1]))
        )
        await b.advertise(advert(key(2), classes_of(1), now_ms=clock(), ttl_ms=TTL_MS))
        key_bytes = bytes.fromhex(provider_key(CHAIN, cls))
        for _ in range(100):  # bounded
            if a.dht.provider_store.get_providers(key_bytes) and {
                r.signer for r in await a.find_providers(cls, timeout=2)
            } == {b.local_peer}:
                break
            await trio.sleep(0.05)
        yield a, b, cls


async def hang(*args: object, **kwargs: object) -> Any:
    await trio.sleep_forever()


async def test_a_lookup_that_hangs_still_returns_the_providers_known_locally(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The network part of a provider lookup gets only a share of the time: when it hangs
    (a peer that has just left, say), the providers this node already knows are still
    fetched and returned, rather than nothing."""
    with trio.fail_after(60):
        async with a_and_its_provider_b() as (a, b, cls):
            monkeypatch.setattr(a.dht.peer_routing, "find_closest_peers_network", hang)
            records = await a.find_providers(cls, timeout=2)
            assert {r.signer for r in records} == {b.local_peer}


async def test_a_record_fetch_cut_off_by_the_timeout_returns_the_cached_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A peer that has just left can keep a record request waiting for seconds: when the
    lookup's time runs out during that fetch, the peer's cached (unexpired) record is
    returned rather than nothing."""
    with trio.fail_after(60):
        async with a_and_its_provider_b() as (a, b, cls):
            monkeypatch.setattr(a, "request", hang)
            records = await a.find_providers(cls, timeout=1.5)
            assert {r.signer for r in records} == {b.local_peer}
