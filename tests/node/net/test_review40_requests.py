"""Round 40, F1: every node took 4 MiB market requests from any key and held each whole
(copied twice more) before the handler looked at it: 4 fresh keys took a contributor from
179 MB to 1.2 GB. A protocol may now take large requests only from some peers
(``large_from``); from the others a request over ``small_request_bytes`` is refused from
its length, its bytes unread."""

from __future__ import annotations

import random

import trio

from node.net import (
    DEFAULT_SMALL_REQUEST_BYTES,
    MemoryHub,
    MessageTooLarge,
    PeerBusy,
    PeerKey,
    PeerUnreachable,
)
from node.net._framing import STATUS_TOO_LARGE, FrameReader, uvarint
from node.net._libp2p_transport import peer_id_of

from ...keys import key
from .conftest import wall_ms
from .helpers import CHAIN, node

BIG = "/aimx/test/big/1"


async def test_a_large_request_is_refused_from_its_length_unless_its_sender_may_send_one() -> None:
    calls: list[int] = []

    async def handler(peer: PeerKey, data: bytes) -> bytes:
        calls.append(len(data))
        return b"ok"

    with trio.fail_after(30):
        async with node(81) as server, node(82) as friend, node(83) as stranger:
            server.set_handler(
                BIG, handler, max_request_bytes=1 << 20, large_from=lambda p: p == friend.local_peer
            )
            for client in (friend, stranger):
                await client.connect(server.addresses()[0])

            async def first_bytes(client: object) -> tuple[int, bytes] | None:
                """A large request's length and 10 bytes of it: the answer, if one comes
                before the rest is sent."""
                stream = await client._host.new_stream(  # type: ignore[attr-defined]
                    peer_id_of(server.local_peer), [BIG]
                )
                await stream.write(uvarint(200_000) + b"x" * 10)
                with trio.move_on_after(1):
                    return await FrameReader(stream.read).read_response(4096)
                await stream.reset()
                return None

            answer = await first_bytes(stranger)
            assert answer is not None and answer[0] == STATUS_TOO_LARGE
            assert str(DEFAULT_SMALL_REQUEST_BYTES).encode() in answer[1]
            assert await first_bytes(friend) is None  # waited for the body: it may send it
            # whole requests: the friend's reaches the handler, the stranger's never
            assert await friend.request(server.local_peer, BIG, b"y" * 200_000) == b"ok"
            try:
                await stranger.request(server.local_peer, BIG, b"y" * 200_000)
                raise AssertionError("a stranger's large request was taken")
            except MessageTooLarge:
                pass
            # a small one from anyone
            assert await stranger.request(server.local_peer, BIG, b"z" * 1000) == b"ok"
            assert calls == [200_000, 1000]


async def test_the_memory_network_applies_the_same_limit() -> None:
    hub = MemoryHub(CHAIN, rng=random.Random(4), now_ms=wall_ms)
    async with hub.open(key(84)) as server, hub.open(key(85)) as stranger:

        async def handler(peer: PeerKey, data: bytes) -> bytes:
            return b"ok"

        server.set_handler(
            BIG,
            handler,
            max_request_bytes=1 << 20,
            large_from=lambda p: False,
            small_request_bytes=100,
        )
        await stranger.connect(server.addresses()[0])
        assert await stranger.request(server.local_peer, BIG, b"z" * 100) == b"ok"
        try:
            await stranger.request(server.local_peer, BIG, b"z" * 101)
            raise AssertionError("over the small limit, taken")
        except MessageTooLarge as exc:
            assert "limit of 100" in str(exc)


async def test_one_peer_has_at_most_four_large_requests_read_at_once() -> None:
    """Round 41, F2: a key that won one award (one cheap bid) could send 64 streams of
    4 MiB. Past 4 large requests of one peer at once, another is answered "send it
    again", unread; small ones are not counted."""
    running = 0
    most = 0
    release = trio.Event()

    async def handler(peer: PeerKey, data: bytes) -> bytes:
        nonlocal running, most
        running += 1
        most = max(most, running)
        try:
            if len(data) > DEFAULT_SMALL_REQUEST_BYTES:
                await release.wait()
            return b"ok"
        finally:
            running -= 1

    outcomes: list[str] = []
    with trio.fail_after(30):
        async with node(86) as server, node(87) as friend:
            server.set_handler(BIG, handler, max_request_bytes=1 << 20, large_from=lambda p: True)
            await friend.connect(server.addresses()[0])

            async def ask(size: int) -> None:
                try:
                    outcomes.append(
                        (await friend.request(server.local_peer, BIG, b"y" * size)).decode()
                    )
                except (PeerBusy, PeerUnreachable):
                    # status 4, read or not: the refusal may reset the stream before
                    # the request is all written
                    outcomes.append("busy")

            async with trio.open_nursery() as nursery:
                for _ in range(6):
                    nursery.start_soon(ask, 200_000)
                await trio.sleep(1.5)  # the two past the four are refused, three times each
                assert sorted(outcomes) == ["busy", "busy"]
                assert running == 4
                await ask(1000)  # a small one still runs
                release.set()
    assert most == 5  # the four large ones and the small one
    assert sorted(outcomes) == ["busy", "busy", "ok", "ok", "ok", "ok", "ok"]
