"""Building signed capability records, and libp2p nodes on loopback, for the network
tests."""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import nacl.signing
import trio

import protocol
from node.net import NetworkError
from node.net.libp2p_host import Libp2pConfig, Libp2pNetwork, open_libp2p_network
from protocol import Advert, Signed

from ...keys import key

CHAIN = "aimx-test"
LOOPBACK = ("/ip4/127.0.0.1/tcp/0",)
WORK = "/aimx/test/work/1"


@asynccontextmanager
async def node(n: int, **config: Any) -> AsyncIterator[Libp2pNetwork]:
    """A libp2p network of key ``n`` listening on loopback (unless ``config`` says where),
    with ``config``."""
    config.setdefault("listen", LOOPBACK)
    async with open_libp2p_network(key(n), Libp2pConfig(chain_id=CHAIN, **config)) as net:
        yield net


def advert(
    signing_key: nacl.signing.SigningKey,
    classes: tuple[str, ...],
    *,
    now_ms: int,
    ttl_ms: int = 600_000,
    seq: int = 1,
    addresses: tuple[str, ...] = (),
    chain_id: str = CHAIN,
) -> Signed[Advert]:
    record = Advert(
        node_id=bytes(signing_key.verify_key),
        seq=seq,
        addresses=addresses,
        capability_classes=classes,
        runtimes=("onnx",),
        determinism_classes=("ort-1.32.0/cpu/avx2/extended",),
        cpu_cores=2,
        memory_mb=8192,
        gpus=(),
        sandbox_layers=("rlimits",),
        bench_score=100,
        price_floor=10,
        max_concurrency=1,
        issued_ms=now_ms,
        expires_ms=now_ms + ttl_ms,
    )
    return protocol.sign(record, signing_key, chain_id)


@dataclass
class Load:
    """What :func:`honest_load` saw: answers, failures and how often the server ran each
    request."""

    ok: int = 0
    failures: list[BaseException] = field(default_factory=list)
    runs: collections.Counter[bytes] = field(default_factory=collections.Counter)
    evicted: int = 0


async def honest_load(
    seconds: float, *, peers: int, slots: int, handler_s: float, first_key: int
) -> Load:
    """``peers`` honest peers, each asking a server of ``slots`` request slots in turn for
    ``seconds``; its handler takes ``handler_s`` and answers 2 KiB. Requests that failed
    with a network error are kept in ``failures``."""
    load = Load()

    async def work(peer: bytes, data: bytes) -> bytes:
        load.runs[data] += 1
        await trio.sleep(handler_s)
        return b"r" * 2048

    async def ask(client: Libp2pNetwork, server: Libp2pNetwork, tag: int, stop: float) -> None:
        i = 0
        while trio.current_time() < stop:
            i += 1
            try:
                await client.request(server.local_peer, WORK, b"%d:%d" % (tag, i), timeout=8)
                load.ok += 1
            except NetworkError as exc:
                load.failures.append(exc)

    async with AsyncExitStack() as stack:
        server = await stack.enter_async_context(node(first_key, max_inbound_streams=slots))
        server.set_handler(WORK, work)
        clients = [await stack.enter_async_context(node(first_key + 1 + i)) for i in range(peers)]
        for client in clients:
            await client.connect(server.addresses()[0])
        stop = trio.current_time() + seconds
        async with trio.open_nursery() as nursery:
            for tag, client in enumerate(clients):
                nursery.start_soon(ask, client, server, tag, stop)
        load.evicted = server._streams._slots.evicted
    return load
