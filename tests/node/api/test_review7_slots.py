"""Review round 7, R7-2: R6-4 closed refused requests' connections, but a connection that
sends nothing still held a slot for ``FIRST_READ_TIMEOUT_S``: 64 of them, reopened as they
closed (a local user), kept the owner's requests answered 503. Now a new connection, when
every slot is taken, takes the slot of the oldest connection that has not yet carried a
request the access rules let through.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from node.api import Request, Response, owner_only, serve_http
from node.api._http import MAX_CONNECTIONS

from .test_review6_slots import _ok, _owner, _server, _status_line

TOKEN = "A" * 43


async def test_idle_connections_holding_every_slot_give_way_to_the_owner() -> None:
    async with _server() as port:
        idle = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(MAX_CONNECTIONS)]
        await trio.sleep(0.1)  # each is being served, holding a slot, sending nothing
        assert (await _owner(port)).startswith("HTTP/1.1 200")
        for stream in idle:
            await stream.aclose()


async def test_an_owners_connection_that_was_let_through_keeps_its_slot() -> None:
    async with _server() as port:
        owner = await trio.open_tcp_stream("127.0.0.1", port)
        request = (
            f"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {TOKEN}\r\n\r\n"
        ).encode()
        await owner.send_all(request)
        assert (await _status_line(owner)).startswith("HTTP/1.1 200")
        # a flood of idle connections evicts idle ones, never the owner's kept-alive one
        idle = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(2 * MAX_CONNECTIONS)]
        await trio.sleep(0.2)
        await owner.send_all(request)
        assert (await _status_line(owner)).startswith("HTTP/1.1 200")
        for stream in [owner, *idle]:
            await stream.aclose()


@asynccontextmanager
async def _server_with(handler: Any) -> AsyncIterator[int]:
    async with trio.open_nursery() as nursery:
        yield await nursery.start(serve_http, handler, "127.0.0.1", 0)
        nursery.cancel_scope.cancel()


async def test_an_error_answered_before_the_credentials_does_not_keep_a_slot() -> None:
    # Round 8, R8-2: `DELETE /dashboard/login` was answered 405 before any credential
    # check, and a 405 counted as a request let through: 64 such connections, kept alive,
    # could no longer give way, and the owner was answered 503.
    checked = owner_only(_ok, TOKEN)

    async def handler(request: Request) -> Response:
        if request.method == "DELETE":
            return Response.json({"error": "method not allowed"}, 405)
        return await checked(request)

    async with _server_with(handler) as port:
        held = []
        for _ in range(MAX_CONNECTIONS):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(
                f"DELETE /dashboard/login HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
            )
            assert (await _status_line(stream)).startswith("HTTP/1.1 405")
            held.append(stream)
        assert (await _owner(port)).startswith("HTTP/1.1 200")
        for stream in held:
            await stream.aclose()


async def test_new_empty_connections_never_cut_the_owners_request_while_it_runs() -> None:
    checked = owner_only(_ok, TOKEN)

    async def slow(request: Request) -> Response:
        await trio.sleep(0.3)
        return await checked(request)

    async with _server_with(slow) as port:
        idle = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(MAX_CONNECTIONS - 1)]
        answer: list[str] = []

        async def owner() -> None:
            answer.append(await _owner(port))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(owner)
            await trio.sleep(0.1)  # its request is being served: every slot is taken
            for _ in range(3 * MAX_CONNECTIONS):  # each new one takes an idle one's slot
                idle.append(await trio.open_tcp_stream("127.0.0.1", port))
        assert answer and answer[0].startswith("HTTP/1.1 200")
        for stream in idle:
            await stream.aclose()
