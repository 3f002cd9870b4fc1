"""Review round 6, R6-4: the API's ``MAX_CONNECTIONS`` slots could be held by requests the
owner-only rules refused. A GET refused on its head (a foreign Host, no token) was
answered and its connection kept alive, idle for up to 30 s: a web page making 64 of them
(``<img src="http://x<i>.localhost:PORT/api/status">``) got the owner's own requests
answered 503. Now a refused request's connection is closed after its answer, and a new
connection has ``FIRST_READ_TIMEOUT_S`` to send its first request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from node.api import Request, Response, owner_only, serve_http
from node.api._http import FIRST_READ_TIMEOUT_S, MAX_CONNECTIONS, READ_TIMEOUT_S

TOKEN = "A" * 43


async def _ok(request: Request) -> Response:
    return Response.json({"ok": True})


@asynccontextmanager
async def _server() -> AsyncIterator[int]:
    async with trio.open_nursery() as nursery:
        yield await nursery.start(serve_http, owner_only(_ok, TOKEN), "127.0.0.1", 0)
        nursery.cancel_scope.cancel()


async def _status_line(stream: trio.SocketStream) -> str:
    """One whole response read (head and ``content-length`` body); its status line."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(4096)
        if not chunk:
            return data.split(b"\r\n")[0].decode()
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    length = next(
        (int(v) for k, _, v in (x.partition(": ") for x in lines) if k.lower() == "content-length"),
        0,
    )
    while len(body) < length:
        chunk = await stream.receive_some(4096)
        if not chunk:
            break
        body += chunk
    return lines[0]


async def _owner(port: int) -> str:
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(
            f"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {TOKEN}\r\n\r\n".encode()
        )
        return await _status_line(stream)


async def test_refused_requests_kept_alive_do_not_deny_the_owner_its_api() -> None:
    async with _server() as port:
        held: list[trio.SocketStream] = []
        closed = 0

        async def refused(i: int) -> None:
            nonlocal closed
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            held.append(stream)  # kept, as a browser keeps it for reuse
            await stream.send_all(
                f"GET /api/status HTTP/1.1\r\nHost: x{i}.localhost:{port}\r\n"
                "Connection: keep-alive\r\n\r\n".encode()
            )
            assert (await _status_line(stream)).startswith("HTTP/1.1 421")
            with trio.fail_after(5):
                while await stream.receive_some(4096):
                    pass
            closed += 1

        async with trio.open_nursery() as nursery:
            for i in range(MAX_CONNECTIONS):
                nursery.start_soon(refused, i)
        assert closed == MAX_CONNECTIONS  # the server closed every one after its answer
        assert (await _owner(port)).startswith("HTTP/1.1 200")
        for stream in held:
            await stream.aclose()


async def test_a_connection_that_sends_nothing_is_closed_before_the_idle_limit() -> None:
    assert FIRST_READ_TIMEOUT_S < READ_TIMEOUT_S
    async with _server() as port:
        async with await trio.open_tcp_stream("127.0.0.1", port) as silent:
            with trio.fail_after(FIRST_READ_TIMEOUT_S + 5):
                assert await silent.receive_some(4096) == b""  # closed by the server
        assert (await _owner(port)).startswith("HTTP/1.1 200")


async def test_the_owners_connection_stays_alive_between_requests() -> None:
    async with _server() as port, await trio.open_tcp_stream("127.0.0.1", port) as stream:
        for _ in range(3):
            await stream.send_all(
                f"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                f"Authorization: Bearer {TOKEN}\r\n\r\n".encode()
            )
            assert (await _status_line(stream)).startswith("HTTP/1.1 200")
            await trio.sleep(0.05)
