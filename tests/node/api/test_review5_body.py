"""Review round 5, R5-5: the local API read a request's whole body (up to 64 MiB) before
it checked Host, Origin or token, and served any number of connections: a web page the
owner visited could make the daemon hold ~80 MiB per cross-site POST, refused only after.

Now the owner-only rules run on the request's head, a refused request is answered at once
and its connection closed with the body unread, a body is read only once its route is
found (up to the route's limit), and at most ``MAX_CONNECTIONS`` are served at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from node.api import Request, Response, Router, owner_only, serve_http
from node.api._http import MAX_CONNECTIONS, SMALL_BODY_BYTES

TOKEN = "A" * 43
BIG = 60 << 20


async def _echo(request: Request) -> Response:
    return Response.json({"got": len(request.body)})


def _router() -> Router:
    router = Router()
    router.add("POST", "/api/jobs", _echo)
    router.add("POST", "/api/pause", _echo, max_body_bytes=1024)
    router.add("GET", "/api/status", _echo)
    return router


@asynccontextmanager
async def _server() -> AsyncIterator[int]:
    async with trio.open_nursery() as nursery:
        yield await nursery.start(serve_http, owner_only(_router(), TOKEN), "127.0.0.1", 0)
        nursery.cancel_scope.cancel()


def _head(port: int, *, length: int, path: str = "/api/jobs", **fields: str) -> bytes:
    headers = {
        "host": f"127.0.0.1:{port}",
        "authorization": f"Bearer {TOKEN}",
        "content-type": "application/json",
        "content-length": str(length),
        **{k.replace("_", "-"): v for k, v in fields.items()},
    }
    lines = [f"POST {path} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items() if v)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _answer_to_head_alone(port: int, head: bytes) -> bytes:
    """Send a request's head and none of its body; what comes back until the server
    closes the connection (which it must, without waiting for the body)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(head)
        reply = b""
        with trio.fail_after(5):  # the server waits READ_TIMEOUT_S (30 s) for a body
            while chunk := await stream.receive_some(65536):
                reply += chunk
    return reply


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        ({"origin": "https://evil.example", "content_type": "text/plain"}, b"403"),
        ({"origin": "https://evil.example"}, b"403"),
        ({"authorization": ""}, b"401"),
        ({"authorization": "Bearer " + "B" * 43}, b"401"),
        ({"host": "evil.example"}, b"421"),
        ({"content_type": "text/plain"}, b"415"),
    ],
)
async def test_a_refused_request_is_answered_on_its_head_and_its_body_never_read(
    fields: dict[str, str], status: bytes
) -> None:
    async with _server() as port:
        reply = await _answer_to_head_alone(port, _head(port, length=BIG, **fields))
        assert reply.startswith(b"HTTP/1.1 " + status), reply[:200]
        assert b"connection: close" in reply.lower()


async def test_a_body_over_its_routes_limit_is_refused_before_it_is_read() -> None:
    async with _server() as port:
        reply = await _answer_to_head_alone(port, _head(port, length=2048, path="/api/pause"))
        assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
        head = _head(port, length=SMALL_BODY_BYTES + 1, path="/api/status")
        reply = await _answer_to_head_alone(port, head.replace(b"POST", b"GET", 1))
        assert reply.startswith(b"HTTP/1.1 413"), reply[:200]


async def test_the_owners_request_still_gets_its_body_and_keeps_its_connection() -> None:
    async with _server() as port:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            for body in (b"{}", b'{"x": "' + b"y" * 300_000 + b'"}', b"{}"):
                await stream.send_all(_head(port, length=len(body)) + body)
                reply = b""
                with trio.fail_after(10):
                    while not reply.endswith(b"}"):
                        reply += await stream.receive_some(65536)
                assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
                assert reply.endswith(b'{"got": %d}' % len(body))
                assert b"connection: close" not in reply.lower()


async def test_connections_past_the_bound_are_answered_503_unread() -> None:
    # Every slot held by a connection that carried a request the rules let through (kept
    # alive): one more is answered 503, unread. (Idle or refused ones give way instead:
    # tests/node/api/test_review7_slots.py.)
    async with _server() as port:
        streams = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(MAX_CONNECTIONS)]
        get = (
            f"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {TOKEN}\r\n\r\n"
        ).encode()
        for stream in streams:
            await stream.send_all(get)
            assert (await stream.receive_some(4096)).startswith(b"HTTP/1.1 200")
        extra = await trio.open_tcp_stream("127.0.0.1", port)
        with trio.fail_after(5):
            data = await extra.receive_some(4096)
        assert data.startswith(b"HTTP/1.1 503"), data
        streams.append(extra)
        for stream in streams:
            await stream.aclose()
        # the slots come back
        reply = await _answer_to_head_alone(port, _head(port, length=BIG, authorization=""))
        assert reply.startswith(b"HTTP/1.1 401"), reply[:200]
