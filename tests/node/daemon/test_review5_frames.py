"""Review round 5, R5-2: market frames of nested msgpack arrays.

A 4 MiB market request that was a tree of two-item arrays cost any node ~2 s and 164 MiB
in the general decoder before it was refused as no ``[message, sealed]``; a frame whose
message was 1 MiB of them cost ~0.4 s more in ``_dispatch``. Now the frame's two byte
strings are found from their headers alone, and the message is refused over the largest
signed market message (``MAX_MARKET_MESSAGE_BYTES``) before anything decodes it.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
import trio

import ledger
import protocol
from node.config import NodeConfig
from node.daemon import Node
from node.daemon.market import (
    MARKET_PROTOCOL,
    MAX_MARKET_MESSAGE_BYTES,
    MAX_MARKET_REQUEST_BYTES,
    MAX_REPLIES,
    split_frame,
    split_replies,
)
from node.net import MemoryHub, RemoteError
from protocol import Bin, ListOf, Nested, Text, UInt
from protocol._schema import Spec

from ...keys import key

CH = "aimx-test-r5-frames"


def _tree(nbytes: int) -> bytes:
    """The largest binary tree of two-item msgpack arrays of at most ``nbytes``."""
    depth = 0
    while (1 << (depth + 2)) - 1 <= nbytes:
        depth += 1
    node = b"\x00"
    for _ in range(depth):
        node = b"\x92" + node + node
    return node


def _bin(data: bytes) -> bytes:
    """``data`` as a canonical msgpack byte string (header and bytes)."""
    return protocol.pack(data)


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of the byte strings handed to the general decoder."""
    sizes: list[int] = []
    real = protocol.unpack

    def counting(data: bytes, **kwargs: Any) -> Any:
        sizes.append(len(data))
        return real(data, **kwargs)

    monkeypatch.setattr(protocol, "unpack", counting)
    return sizes


def test_a_four_mib_tree_frame_is_refused_without_the_general_decoder(
    decoded: list[int],
) -> None:
    frame = _tree(MAX_MARKET_REQUEST_BYTES)
    assert len(frame) > 4_000_000
    with pytest.raises(protocol.RemoteProtocolError):
        split_frame(frame)
    # [tree, tree] where [bin, bin] belongs
    with pytest.raises(protocol.RemoteProtocolError, match="byte string"):
        split_frame(b"\x92" + _tree(1 << 20) + _tree(1 << 20))
    assert decoded == []


def test_a_frame_whose_message_is_over_the_largest_market_message_is_refused_before_decoding(
    decoded: list[int],
) -> None:
    big = _tree(4 * MAX_MARKET_MESSAGE_BYTES)  # 256 KiB
    with pytest.raises(protocol.RemoteProtocolError, match=f"over {MAX_MARKET_MESSAGE_BYTES}"):
        split_frame(b"\x92" + _bin(big) + _bin(b""))
    assert decoded == []
    # at the cap it splits (the message is decoded later, by _dispatch)
    at_cap = b"m" * MAX_MARKET_MESSAGE_BYTES
    assert split_frame(b"\x92" + _bin(at_cap) + _bin(b"s")) == (at_cap, b"s")


def test_a_frame_split_by_hand_is_still_held_to_the_canonical_encoding() -> None:
    sealed = b"s" * 2_000_000
    frame = protocol.pack([b"m" * 300, sealed])
    assert split_frame(frame) == (b"m" * 300, sealed)
    for bad in (
        frame + b"\x00",  # trailing bytes
        frame[:-1],  # cut short
        b"\x92\xc5\x00\x01m\xc4\x00",  # bin 16 where bin 8 fits
        b"\x92\xc4\x01m\xc6\x00\x00\x00\x01s",  # bin 32 where bin 8 fits
        b"\x93\xc4\x01m\xc4\x00\xc4\x00",  # three items
        b"\xdc\x00\x02\xc4\x01m\xc4\x00",  # array 16 where fixarray fits
        protocol.pack([b"m", "text"]),
        b"\x92\xc4",
        b"",
    ):
        with pytest.raises(protocol.RemoteProtocolError):
            split_frame(bad)


def test_market_replies_are_split_by_hand_within_their_bounds(decoded: list[int]) -> None:
    replies = [b"r" * n for n in (1, 300, 70_000 - 10_000)]
    assert split_replies(protocol.pack(replies)) == replies
    full = [b"x"] * MAX_REPLIES  # 16: array 16, the shortest form that holds it
    assert split_replies(protocol.pack(full)) == full
    for bad in (
        protocol.pack([b"x"] * (MAX_REPLIES + 1)),
        protocol.pack([b"x" * (MAX_MARKET_MESSAGE_BYTES + 1)]),
        _tree(1 << 20),
        protocol.pack([[b"x"]]),
        protocol.pack([b"x"]) + b"\x00",
        b"\xdc\x00\x01\xc4\x01x",  # array 16 where fixarray fits
    ):
        with pytest.raises(protocol.RemoteProtocolError):
            split_replies(bad)
    assert decoded == []


def _largest(spec: Spec) -> Any:
    """The wire value of ``spec`` that encodes longest (for its size only)."""
    if isinstance(spec, UInt):
        return spec.max
    if isinstance(spec, Bin):
        return bytes(spec.size if spec.size is not None else spec.max)
    if isinstance(spec, Text):
        if spec.choices:
            return max(spec.choices, key=lambda c: len(c.encode()))
        return "a" * spec.max
    if isinstance(spec, ListOf):
        return [_largest(spec.item)] * spec.max
    if isinstance(spec, Nested):
        return [_largest(s) for _, s in spec.cls.specs()]
    raise TypeError(f"no largest value for {spec!r}")


def test_every_signed_market_message_fits_the_market_message_cap() -> None:
    market = (
        protocol.JobSpec,
        protocol.Award,
        protocol.Receipt,
        protocol.Bid,
        protocol.NoBid,
        protocol.Heartbeat,
        protocol.Result,
        protocol.Unseal,
    )
    for cls in market:
        body = [_largest(s) for _, s in cls.specs()]
        size = len(protocol.pack([cls.TAG, "c" * 64, body, bytes(32), bytes(64)]))
        assert size <= MAX_MARKET_MESSAGE_BYTES // 2, (cls.__name__, size)


async def test_a_node_refuses_and_counts_tree_frames_without_the_general_decoder(
    decoded: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    import scheduler

    # from a provider holding an award of ours: a stranger's frames over 65 KiB are
    # refused from their length (round 40, F1)
    monkeypatch.setattr(scheduler.Requester, "awarded_to", lambda self, p: True)
    ckey, peer = key(1), key(7)
    genesis = ledger.make_genesis(CH, [bytes(ckey.verify_key)])
    hub = MemoryHub(CH, rng=random.Random(1))
    cfg = NodeConfig(chain_id=CH, roles=("coordinator", "requester"))
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery, hub.open(ckey) as cnet, hub.open(peer) as pnet:
            node = Node(ckey, cfg, cnet, genesis)
            await nursery.start(node.run)
            target = bytes(ckey.verify_key)
            who = protocol.peer_id(bytes(peer.verify_key))
            decoded.clear()
            for frame in (
                _tree(MAX_MARKET_REQUEST_BYTES),
                b"\x92" + _bin(_tree(1 << 20)) + _bin(b""),
            ):
                with pytest.raises(RemoteError, match="malformed market frame"):
                    await pnet.request(target, MARKET_PROTOCOL, frame, timeout=5)
            assert all(n <= MAX_MARKET_MESSAGE_BYTES for n in decoded), decoded
            assert node.conduct.counts.get(who) == 2
            nursery.cancel_scope.cancel()


async def test_a_message_whose_tag_is_a_list_is_refused_and_counted_not_a_handler_failure() -> None:
    # Found while mending R5-2: ``tag in frozenset`` raised TypeError on a list tag, so
    # the handler failed (logged as our bug, nothing counted against the peer).
    ckey, peer = key(1), key(7)
    genesis = ledger.make_genesis(CH, [bytes(ckey.verify_key)])
    hub = MemoryHub(CH, rng=random.Random(1))
    cfg = NodeConfig(chain_id=CH, roles=("coordinator", "requester"))
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery, hub.open(ckey) as cnet, hub.open(peer) as pnet:
            node = Node(ckey, cfg, cnet, genesis)
            await nursery.start(node.run)
            who = protocol.peer_id(bytes(peer.verify_key))
            frame = protocol.pack([protocol.pack([[1], "x"]), b""])
            with pytest.raises(RemoteError, match="does not take"):
                await pnet.request(bytes(ckey.verify_key), MARKET_PROTOCOL, frame, timeout=5)
            assert node.conduct.counts.get(who) == 1
            assert cnet.counters.handler_errors == 0
            # a market message of a role this node lacks (a JobSpec: not a contributor) is
            # refused, not counted (review round 78, R78-1: a node restarted without the
            # role had honest requesters announcing to its old advert banned)
            spec = protocol.pack([protocol.JobSpec.TAG, "x"])
            for _ in range(20):
                with pytest.raises(RemoteError, match="does not take"):
                    await pnet.request(
                        bytes(ckey.verify_key),
                        MARKET_PROTOCOL,
                        protocol.pack([spec, b""]),
                        timeout=5,
                    )
            assert node.conduct.counts.get(who) == 1
            nursery.cancel_scope.cancel()
