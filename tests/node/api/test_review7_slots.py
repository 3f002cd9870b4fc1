"""Review round 7, R7-2: R6-4 closed refused requests' connections, but a connection that
sends nothing still held a slot for ``FIRST_READ_TIMEOUT_S``: 64 of them, reopened as they
closed (a local user), kept the owner's requests answered 503. Now a new connection, when
every slot is taken, takes the slot of the oldest connection that has not yet carried a
request the access rules let through.
"""

from __future__ import annotations

import trio

from node.api._http import MAX_CONNECTIONS

from .test_review6_slots import _owner, _server, _status_line

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
