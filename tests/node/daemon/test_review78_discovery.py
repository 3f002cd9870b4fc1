"""Review round 78, R78-2: a provider lookup dialled every address of every record found
(up to 16 each, of any peer, anew at each lookup, a second dial while one still ran):
about 320 dials of strangers' choosing a lookup. Now only the record signer's own
addresses, a few, one dial at a time per provider."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import protocol
from node.daemon.discovery import MAX_DIALS_PER_RECORD, Discovery
from node.net import NetworkError

from ...keys import key, pub


async def test_a_lookup_dials_only_a_records_own_addresses_a_few_once_at_a_time() -> None:
    provider, other = pub(key("r78 provider")), pub(key("r78 other"))
    own = [f"/ip4/10.0.0.{i}/tcp/4001/p2p/{protocol.peer_id(provider)}" for i in range(10)]
    foreign = [f"/ip4/10.0.1.{i}/tcp/4001/p2p/{protocol.peer_id(other)}" for i in range(6)]
    record = SimpleNamespace(signer=provider, message=SimpleNamespace(addresses=(*foreign, *own)))
    dialled: list[str] = []
    spawned: list[Any] = []

    async def find_providers(capability_class: str, timeout: float) -> list[Any]:
        return [record]

    async def connect(address: str) -> bytes:
        dialled.append(address)
        raise NetworkError("unreachable")

    net = SimpleNamespace(
        find_providers=find_providers, connected_peers=lambda: set(), connect=connect
    )
    node: Any = SimpleNamespace(me=pub(key("r78 me")), net=net, now_ms=lambda: 0)
    node.spawn = lambda fn, *args: spawned.append((fn, args))
    discovery = Discovery(node)
    await discovery._lookup("onnx.cpu")
    await discovery._lookup("onnx.cpu")  # again while the first dial is on its way
    assert len(spawned) == 1
    fn, args = spawned[0]
    await fn(*args)
    assert dialled == own[:MAX_DIALS_PER_RECORD]
    await discovery._lookup("onnx.cpu")  # that dial ended: the next lookup may dial again
    assert len(spawned) == 2


async def test_a_providers_relayed_addresses_are_dialled_too() -> None:
    # Round 79, F4: a provider behind a NAT lists its relayed addresses last; with 4
    # direct ones first it was never dialled at a relay.
    provider = pub(key("r79 provider"))
    pid = protocol.peer_id(provider)
    direct = [f"/ip4/192.168.0.{i}/tcp/4001/p2p/{pid}" for i in range(5)]
    relayed = [f"/ip4/1.2.3.{i}/tcp/4001/p2p/{pid}r/p2p-circuit/p2p/{pid}" for i in range(2)]
    record = SimpleNamespace(
        signer=provider, message=SimpleNamespace(addresses=(*direct, *relayed))
    )
    spawned: list[Any] = []

    async def find_providers(capability_class: str, timeout: float) -> list[Any]:
        return [record]

    net = SimpleNamespace(find_providers=find_providers, connected_peers=lambda: set())
    node: Any = SimpleNamespace(me=pub(key("r79 me")), net=net, now_ms=lambda: 0)
    node.spawn = lambda fn, *args: spawned.append(args)
    await Discovery(node)._lookup("onnx.cpu")
    ((_, addresses),) = spawned
    assert list(addresses) == direct[:2] + relayed
