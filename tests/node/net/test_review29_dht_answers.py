"""Round 29, F2: py-libp2p stores every peer and address an answer to our DHT query names,
and its peer store sorted its whole map on every peer added past its limit. One stranger
answering our queries with 4,800 fake peers (under the answer's size limit) froze a
contributor's loop for 80 of 90 s and a requester's for seconds a lookup, evicting honest
peers. An answer now names at most 20 closer peers and 20 providers, 16 addresses each,
and the peer store evicts in batches."""

from __future__ import annotations

import os

import trio
import varint
from libp2p.kad_dht.pb.kademlia_pb2 import Message
from libp2p.peer.id import ID
from libp2p.peer.peerstore import PeerStore
from multiaddr import Multiaddr

from node.net import _libp2p_tuning
from node.net._libp2p_dht import DHT_ANSWER_PEERS, MAX_PROVIDER_ADDRS, trim_answer

from .test_libp2p_guards import node

KAD = "/ipfs/kad/1.0.0"
FAKES = 2_000
ADDR = Multiaddr("/ip4/127.0.0.1/tcp/1").to_bytes()  # loopback, closed: dials fail at once


def _fake_id() -> bytes:
    return b"\x00\x24\x08\x01\x12\x20" + os.urandom(32)


def _flood(kind: int, key: bytes, peers: int, addrs: int = 1) -> Message:
    answer = Message()
    answer.type = kind
    answer.key = key
    for field in (answer.closerPeers, answer.providerPeers):
        if field is answer.providerPeers and kind != Message.MessageType.GET_PROVIDERS:
            continue
        for _ in range(peers):
            peer = field.add()
            peer.id = _fake_id()
            peer.addrs.extend([ADDR] * addrs)
    return answer


def test_an_answer_is_trimmed_to_what_an_honest_server_sends() -> None:
    flood = _flood(Message.MessageType.GET_PROVIDERS, b"k" * 34, 4_800, addrs=40)
    trimmed = Message()
    trimmed.ParseFromString(trim_answer(flood.SerializeToString()))
    assert len(trimmed.closerPeers) == len(trimmed.providerPeers) == DHT_ANSWER_PEERS
    assert [p.id for p in trimmed.providerPeers] == [p.id for p in flood.providerPeers[:20]]
    assert all(
        len(p.addrs) == MAX_PROVIDER_ADDRS for p in (*trimmed.closerPeers, *trimmed.providerPeers)
    )
    honest = _flood(Message.MessageType.GET_PROVIDERS, b"k" * 34, 20, addrs=16)
    assert trim_answer(honest.SerializeToString()) == honest.SerializeToString()
    assert trim_answer(b"\xff\xff not a message") == b"\xff\xff not a message"


def test_the_peer_store_evicts_a_batch_at_once_past_its_limit() -> None:
    _libp2p_tuning.install()
    store = PeerStore(max_peers=1_000)
    for _ in range(1_001):
        store.add_addrs(ID(_fake_id()), [Multiaddr("/ip4/127.0.0.1/tcp/1")], 600)
    assert len(store.peer_data_map) == 900  # down to 90 %: the next 100 adds sort nothing


async def test_a_stranger_answering_with_thousands_of_peers_adds_a_bounded_few() -> None:
    answers = 0

    async def kad(stream: object) -> None:
        nonlocal answers
        try:
            for _ in range(16):
                size = await _read_varint(stream)
                data = b""
                while len(data) < size:
                    chunk = await stream.read(size - len(data))  # type: ignore[attr-defined]
                    if not chunk:
                        return
                    data += chunk
                request = Message()
                request.ParseFromString(data)
                answer = _flood(request.type, request.key, FAKES)
                answers += 1
                out = answer.SerializeToString()
                await stream.write(varint.encode(len(out)) + out)  # type: ignore[attr-defined]
        except Exception:
            return

    with trio.fail_after(90):
        async with node(51) as victim, node(52) as stranger:
            stranger._host.set_stream_handler(KAD, kad)
            await victim.connect(stranger.addresses()[0])
            for _ in range(100):  # identify tells the victim the stranger serves the DHT
                if KAD in victim._host.get_peerstore().get_protocols(stranger._host.get_id()):
                    break
                await trio.sleep(0.1)
            await victim.find_providers("onnx.cpu.m2", limit=5, timeout=5)
            assert answers > 0
            # the tree before stored about 1,000 (its limit, evicting honest peers)
            # each answer adds at most its 20 closer peers and 20 providers (and we two);
            # the tree before stored about 1,000 from the first (its limit, evicting
            # honest peers, sorting the store on every add)
            stored = len(victim._host.get_peerstore().peer_ids())
            assert stored <= 2 * DHT_ANSWER_PEERS * answers + 2


async def _read_varint(stream: object) -> int:
    shift = value = 0
    for _ in range(9):
        byte = await stream.read(1)  # type: ignore[attr-defined]
        if not byte:
            raise EOFError
        value |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return value
        shift += 7
    raise ValueError("varint too long")
