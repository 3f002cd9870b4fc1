"""Review rounds 44 and 46, D1: one key's DHT stream got 400-600 answers a second, each
145-291 times the bytes it sent, the node's uplink and a core its to spend. A peer's DHT
messages are paced now, per key and per host (``node/net/_libp2p_dht.py``)."""

from __future__ import annotations

from contextlib import AsyncExitStack

import trio
import varint

from node.net._libp2p_dht import (
    DHT_MESSAGES_PER_PEER_BURST,
    DHT_MESSAGES_PER_PEER_PER_S,
    KAD_PROTOCOL,
    pacing_of,
)
from node.net._libp2p_transport import peer_id_of

from .helpers import node
from .test_review16_slots import _dht_query, _find_node

QUERIES = 300  # the tree before answered them all in well under a second


def _messages(data: bytes) -> int:
    """How many whole varint-prefixed messages ``data`` begins with."""
    count = at = 0
    while at < len(data):
        try:
            length = varint.decode_bytes(data[at : at + 10])
        except Exception:
            return count
        at += len(varint.encode(length)) + length
        if at > len(data):
            return count
        count += 1
    return count


async def test_one_keys_dht_queries_are_answered_at_its_pace() -> None:
    with trio.fail_after(60):
        async with AsyncExitStack() as stack:
            victim = await stack.enter_async_context(node(190))
            attacker = await stack.enter_async_context(node(191))
            honest = await stack.enter_async_context(node(192))
            await attacker.connect(victim.addresses()[0])
            await honest.connect(victim.addresses()[0])
            await trio.sleep(0.3)
            stream = await attacker._host.new_stream(peer_id_of(victim.local_peer), [KAD_PROTOCOL])
            start = trio.current_time()
            await stream.write(b"".join(_find_node() for _ in range(QUERIES)))
            got = b""
            with trio.move_on_after(2):
                while _messages(got) < QUERIES:
                    got += await stream.read(1 << 16)
            elapsed = trio.current_time() - start
            answered = _messages(got)
            allowed = DHT_MESSAGES_PER_PEER_BURST + DHT_MESSAGES_PER_PEER_PER_S * elapsed + 2
            assert DHT_MESSAGES_PER_PEER_BURST <= answered <= allowed  # the tree before: 300
            pacing = pacing_of(victim.dht)
            assert pacing is not None and pacing.paced >= 1
            # another key of the same host is served meanwhile, unpaced
            assert [await _dht_query(honest, victim) for _ in range(5)] == [True] * 5
            await stream.reset()
