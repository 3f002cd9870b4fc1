"""py-libp2p's own protocols behind the trust boundary (issue 14, attack 12), and bans
over libp2p: garbage on meshsub, kad, identify or ping ends that stream and counts the
peer, never the host; a banned peer is disconnected and refused."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from node.net import PeerBanned
from node.net.libp2p_host import Libp2pConfig, Libp2pNetwork, open_libp2p_network

from ...keys import key
from .helpers import CHAIN

LOOPBACK = ("/ip4/127.0.0.1/tcp/0",)
ECHO = "/aimx/test/echo/1"
GARBAGE_WAIT_S = 0.5  # was 2: each of 8 protocols waited it out on a stream left open


async def echo(peer: bytes, data: bytes) -> bytes:
    return data


@asynccontextmanager
async def node(n: int) -> AsyncIterator[Libp2pNetwork]:
    config = Libp2pConfig(chain_id=CHAIN, listen=LOOPBACK)
    async with open_libp2p_network(key(n), config) as net:
        yield net


async def _garbage(src: Libp2pNetwork, dst: Libp2pNetwork, protocol_id: str, data: bytes) -> None:
    try:
        stream = await src._host.new_stream(dst._host.get_id(), [protocol_id])
        await stream.write(data)
    except Exception:  # reset at once: what a guard may do
        return
    # A stream the guard leaves open (a frame cut short waits for its rest) is left after
    # GARBAGE_WAIT_S; one it ends, ends within milliseconds (0.02 s here). Nothing is
    # asserted on this read: the host's health is asserted after each protocol.
    with trio.move_on_after(GARBAGE_WAIT_S):
        while True:
            try:
                if not await stream.read(65536):
                    break
            except Exception:
                break


async def test_garbage_on_every_mounted_protocol_ends_the_stream_not_the_host() -> None:
    """8 bytes of garbage on /meshsub/1.1.0 from a fresh key ended a coordinator; the
    same on every protocol the host mounts (meshsub, kad, identify, ping, relay, ours)."""
    with trio.fail_after(120):
        async with node(31) as a, node(32) as b:
            a.set_handler(ECHO, echo)
            blamed: list[tuple[bytes, str]] = []
            a.on_misbehaved.append(lambda peer, why: blamed.append((peer, why)))
            await b.connect(a.addresses()[0])
            mounted = sorted(str(p) for p in a._host.get_mux().handlers if p is not None)
            assert "/meshsub/1.1.0" in mounted and "/ipfs/kad/1.0.0" in mounted, mounted
            for protocol_id in mounted:
                async with trio.open_nursery() as sends:  # side by side
                    for garbage in (b"\x08" + b"\xff" * 8, b"\xff" * 8, b"\x05\x01\x02"):
                        sends.start_soon(_garbage, b, a, protocol_id, garbage)
                assert await b.request(a.local_peer, ECHO, b"still here") == b"still here"
            assert any(why.startswith("broke /meshsub/1.1.0") for _, why in blamed), blamed
            assert {peer for peer, _ in blamed} == {b.local_peer}


async def test_a_banned_peer_is_disconnected_refused_and_not_dialled() -> None:
    with trio.fail_after(30):
        async with node(33) as a, node(34) as b:
            a.set_handler(ECHO, echo)
            b.set_handler(ECHO, echo)
            await b.connect(a.addresses()[0])
            assert await b.request(a.local_peer, ECHO, b"hi") == b"hi"
            events = a.peer_events()
            a.ban(b.local_peer, 60)
            assert a.is_banned(b.local_peer)
            with pytest.raises(PeerBanned):
                await a.request(b.local_peer, ECHO, b"hi")
            with pytest.raises(Exception):  # noqa: B017 - reset, refused or unreachable
                with trio.fail_after(10):
                    await b.request(a.local_peer, ECHO, b"hi")
            assert a.counters.bans == 1
            async for event in events:
                if event.peer == b.local_peer and not event.connected:
                    break
            a.unban(b.local_peer)
            assert not a.is_banned(b.local_peer)
