"""Review round 9, R9-1: a connection busy sending its answer was never evicted (R8-2), and
sending had no time limit. 64 connections, each with a small receive buffer, pipelined
hundreds of requests answered 405 before any credential check (``POST
/dashboard/login``) and never read: the server blocked in ``send_all`` on every one of
them and the owner was answered 503 for as long as the sockets stayed open. Now a
connection no request of which has succeeded is closed after its first error answer, and
an answer the client does not take within ``SEND_TIMEOUT_S`` closes its connection.
"""

from __future__ import annotations

import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import pytest
import trio

from node.api import HttpError, Request, Response, _http, owner_only, serve_http
from node.api._http import MAX_CONNECTIONS

TOKEN = "A" * 43


async def _ok(request: Request) -> Response:
    return Response.json({"ok": True, "pad": "x" * 200})


async def _handler(request: Request) -> Response:
    # Like the dashboard's login page: a POST is refused with 405 before any credential.
    if request.method == "POST":
        raise HttpError(405, f"POST is not allowed on {request.path}")
    return await owner_only(_ok, TOKEN)(request)


@asynccontextmanager
async def _server() -> AsyncIterator[int]:
    async with trio.open_nursery() as nursery:
        yield await nursery.start(serve_http, _handler, "127.0.0.1", 0)
        nursery.cancel_scope.cancel()


def _hoarder(port: int, request: bytes, count: int) -> socket.socket:
    """A connection with a tiny receive buffer that sends ``count`` pipelined copies of
    ``request`` (as many as the socket takes) and never reads."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    s.connect(("127.0.0.1", port))
    s.setblocking(False)
    with suppress(BlockingIOError):
        s.send(request * count)
    return s


def _drain(s: socket.socket) -> bytes:
    """Everything the server sends on ``s`` until it closes the connection (a reset counts:
    the server closed with requests left unread); ``TimeoutError`` if it keeps it open."""
    s.setblocking(True)
    s.settimeout(5)
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


async def _owner_status(port: int) -> bytes:
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(
            f"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {TOKEN}\r\n\r\n".encode()
        )
        data = b""
        while b"\r\n" not in data:
            chunk = await stream.receive_some(4096)
            if not chunk:
                break
            data += chunk
        return data.split(b"\r\n")[0]


async def test_pipelined_error_answers_never_read_do_not_hold_the_slots() -> None:
    async with _server() as port:
        login = (
            f"POST /dashboard/login HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        held = [_hoarder(port, login, 1000) for _ in range(MAX_CONNECTIONS)]
        try:
            await trio.sleep(0.5)  # the server answers what it can and blocks (before)
            with trio.fail_after(10):
                assert await _owner_status(port) == b"HTTP/1.1 200 "
            # Each hoarder got one answer at most, and its connection closed after it.
            for s in held:
                assert _drain(s).count(b"HTTP/1.1 405") <= 1
        finally:
            for s in held:
                s.close()


async def test_an_answer_the_client_never_takes_closes_its_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_http, "SEND_TIMEOUT_S", 0.5)
    async with _server() as port:
        status = (
            f"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {TOKEN}\r\n\r\n"
        ).encode()
        # The owner's own token: the first answer succeeds and proves the connection, so
        # only the time limit can end it.
        sent = 5000
        s = _hoarder(port, status, sent)
        try:
            await trio.sleep(3)
            # Closed by the server (before: kept alive, every answer sent once read).
            assert _drain(s).count(b"HTTP/1.1 200") < sent
        finally:
            s.close()


async def test_a_proven_connection_stays_alive_after_an_error_answer() -> None:
    async with _server() as port, await trio.open_tcp_stream("127.0.0.1", port) as stream:
        auth = f"Host: 127.0.0.1:{port}\r\nAuthorization: Bearer {TOKEN}\r\n"
        await stream.send_all(f"GET /api/status HTTP/1.1\r\n{auth}\r\n".encode())
        await stream.send_all(
            f"POST /api/status HTTP/1.1\r\n{auth}Content-Length: 0\r\n\r\n".encode()
        )
        await stream.send_all(f"GET /api/status HTTP/1.1\r\n{auth}\r\n".encode())
        data = b""
        with trio.fail_after(5):
            while data.count(b"HTTP/1.1 ") < 3:
                chunk = await stream.receive_some(65536)
                assert chunk, f"closed after {data!r}"
                data += chunk
        assert re.findall(rb"HTTP/1\.1 (\d{3})", data) == [b"200", b"405", b"200"]
