"""A small HTTP/1.1 server on trio, for the daemon's local JSON API, metrics and dashboard.

h11 does the protocol, trio the sockets. Connections are kept alive between requests (a
client waiting on a job asks again every second), up to ``MAX_REQUESTS_PER_CONNECTION``
and ``READ_TIMEOUT_S`` of idleness. Every limit is explicit: header size, body size (per
route), time to read a request, connections at once.

The server reads a request's head only; its body is read when the request reaches its
route (:class:`Router`), so every check made on the way there (the owner-only rules,
``_auth``) runs on the head alone. A request refused before its route is answered at once
and its connection closed: the body is never read (review round 5, R5-5: a web page's
64 MiB cross-site POST was read whole before its ``Origin`` was refused).

A connection whose request was refused for access (401, 403, 415, 421: a foreign page, a
missing token) is closed after the answer, and one that has carried no request yet waits
``FIRST_READ_TIMEOUT_S`` for its first head, not ``READ_TIMEOUT_S``. Otherwise a page
making 64 requests it cannot make, and keeping their connections alive, held every one of
the ``MAX_CONNECTIONS`` slots for 30 s and denied the owner its own API (review round 6,
R6-4). And when every slot is taken, a new connection takes the slot of the oldest one
waiting for a head that has never had a request answered with success (rounds 7 and 8,
R7-2, R8-2: 64 connections that sent nothing, reopened as they closed, still held every
slot).

Sending is bounded too: an answer not taken by the client within ``SEND_TIMEOUT_S`` closes
its connection, and a connection no request of which has succeeded yet is closed after
its first error answer, so it cannot pipeline. Otherwise 64 connections that pipelined
requests answered 405 and never read the answers held every slot for good: each was busy
sending, so never evicted (round 9, R9-1).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import h11
import trio

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 16 * 1024
#: Largest request body (a job submission carries its model and inputs).
MAX_BODY_BYTES = 64 * 1024 * 1024
#: A route's body limit unless it sets one: ``MAX_BODY_BYTES`` for POST and PUT, this for
#: other methods (which carry none).
SMALL_BODY_BYTES = 64 * 1024
READ_TIMEOUT_S = 30.0
#: How long one answer (or one chunk of a streamed one) may wait for the client to take it.
SEND_TIMEOUT_S = 30.0
#: How long a new connection may take to send its first request's head.
FIRST_READ_TIMEOUT_S = 5.0
#: Answers to a request refused for access: its connection is closed after them.
REFUSED_STATUSES = frozenset({401, 403, 415, 421})
MAX_REQUESTS_PER_CONNECTION = 1000
#: Connections served at once; one more is answered 503 and closed, unread.
MAX_CONNECTIONS = 64

BodyReader = Callable[[int], Awaitable[bytes]]


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    #: The server's port the request came in on (what a loopback ``Host`` must name).
    port: int = 0
    #: Reads the body from the connection, once (the server's, while ``body`` is not read
    #: yet): see :meth:`with_body`. None for a request whose ``body`` is all there is.
    read_body: BodyReader | None = field(default=None, repr=False, compare=False)

    async def with_body(self, limit: int = MAX_BODY_BYTES) -> Request:
        """This request with its body, read now from the connection if the server has not
        read it yet: at most ``limit`` bytes (else 413)."""
        if self.read_body is None:
            if len(self.body) > limit:
                raise HttpError(413, f"request body over {limit} bytes")
            return self
        return dataclasses.replace(self, body=await self.read_body(limit), read_body=None)

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"null")
        except RecursionError:  # nested past the parser's depth: not a traceback
            raise HttpError(400, "request body is nested too deeply") from None
        except ValueError as exc:
            raise HttpError(400, f"request body is not JSON: {exc}") from None


@dataclass(frozen=True, slots=True)
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    #: A streamed body instead of ``body`` (server-sent events): sent chunked as it is
    #: produced, until it ends or the client goes away; the connection closes after it.
    stream: Callable[[], AsyncGenerator[bytes, None]] | None = None

    @classmethod
    def json(cls, value: Any, status: int = 200) -> Response:
        return cls(status, json.dumps(value, indent=None, sort_keys=True).encode())


class HttpError(Exception):
    """Raised by a handler to answer with an error status and a JSON ``{"error": ...}``
    (and ``headers``, such as ``www-authenticate`` with a 401)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})

    def response(self) -> Response:
        return Response(
            self.status,
            json.dumps({"error": self.message}).encode(),
            headers=self.headers,
        )


Handler = Callable[[Request], Awaitable[Response]]
Route = tuple[str, str]


class Router:
    """Exact-path routes plus prefix routes (``/api/jobs/`` + id). A request's body is read
    here, once its route is found, up to the route's limit."""

    def __init__(self) -> None:
        self._exact: dict[Route, tuple[Handler, int]] = {}
        self._prefix: list[tuple[str, str, tuple[Handler, int]]] = []

    def add(
        self, method: str, path: str, handler: Handler, *, max_body_bytes: int | None = None
    ) -> None:
        """Route ``method path`` (a prefix if ``path`` ends with ``/``) to ``handler``; its
        body may hold ``max_body_bytes`` (default: ``MAX_BODY_BYTES`` for POST and PUT,
        ``SMALL_BODY_BYTES`` otherwise)."""
        if max_body_bytes is None:
            max_body_bytes = MAX_BODY_BYTES if method in ("POST", "PUT") else SMALL_BODY_BYTES
        route = (handler, min(max_body_bytes, MAX_BODY_BYTES))
        if path.endswith("/") and path != "/":
            self._prefix.append((method, path, route))
        else:
            self._exact[(method, path)] = route

    async def __call__(self, request: Request) -> Response:
        route = self._exact.get((request.method, request.path))
        if route is None:
            for method, prefix, r in self._prefix:
                if method == request.method and request.path.startswith(prefix):
                    route = r
                    break
        if route is None:
            known = {p for _, p in self._exact} | {p for _, p, _ in self._prefix}
            if request.path in known:
                raise HttpError(405, f"{request.method} is not allowed on {request.path}")
            raise HttpError(404, f"no such endpoint: {request.path}")
        handler, limit = route
        return await handler(await request.with_body(limit))


async def _read_head(conn: h11.Connection, stream: trio.abc.Stream, port: int) -> Request | None:
    """The next request's head (its body, if any, left to :meth:`Request.with_body`);
    None once the client closes between requests."""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(65536)
            conn.receive_data(bytes(data))
            if not data and conn.their_state is h11.IDLE:
                return None
            continue
        if isinstance(event, h11.ConnectionClosed):
            return None
        if not isinstance(event, h11.Request):
            raise HttpError(400, "expected a request")
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in event.headers}
        length = int(headers.get("content-length", "0") or 0)
        if length > MAX_BODY_BYTES:
            raise HttpError(413, f"request body over {MAX_BODY_BYTES} bytes")
        parts = urlsplit(event.target.decode("latin-1"))
        head = Request(
            event.method.decode("latin-1"), parts.path, parse_qs(parts.query), headers, b"", port
        )
        # A request without a body ends here (h11 says so without reading more); one with
        # a body gets a reader, and whatever of it has come already.
        first = conn.next_event()
        if isinstance(first, h11.EndOfMessage):
            return head
        already = bytes(first.data) if isinstance(first, h11.Data) else b""
        return dataclasses.replace(
            head, read_body=functools.partial(_read_body, conn, stream, already, length)
        )


async def _read_body(
    conn: h11.Connection, stream: trio.abc.Stream, already: bytes, length: int, limit: int
) -> bytes:
    """A request's body, read from the connection: at most ``limit`` bytes (else 413, on
    ``Content-Length`` before a byte is read), within ``READ_TIMEOUT_S``."""
    if length > limit:
        raise HttpError(413, f"request body over {limit} bytes")
    body = bytearray(already)
    with trio.move_on_after(READ_TIMEOUT_S):
        try:
            while len(body) <= limit:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    if conn.they_are_waiting_for_100_continue:
                        await stream.send_all(
                            conn.send(h11.InformationalResponse(status_code=100, headers=[]))
                        )
                    conn.receive_data(bytes(await stream.receive_some(65536)))
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    return bytes(body)
                else:
                    raise HttpError(400, "the request body was cut short")
        except (h11.RemoteProtocolError, trio.BrokenResourceError) as exc:
            raise HttpError(400, f"the request body was cut short: {exc}") from None
        raise HttpError(413, f"request body over {limit} bytes")
    raise HttpError(408, f"the request body did not come within {READ_TIMEOUT_S:.0f} s")


async def _send(
    conn: h11.Connection, stream: trio.abc.Stream, response: Response, *, close: bool = True
) -> bool:
    """Send ``response`` whole, within ``SEND_TIMEOUT_S``: False past it, the answer cut
    short (the caller closes the connection)."""
    headers = [
        ("content-type", response.content_type),
        ("content-length", str(len(response.body))),
        *([("connection", "close")] if close else []),
        *response.headers.items(),
    ]
    # one write for the head, the body and the end: three cost twice the CPU
    data = conn.send(h11.Response(status_code=response.status, headers=headers))
    data += conn.send(h11.Data(data=response.body)) + conn.send(h11.EndOfMessage())
    with trio.move_on_after(SEND_TIMEOUT_S):
        await stream.send_all(data)
        return True
    return False


async def _send_stream(
    conn: h11.Connection,
    stream: trio.abc.Stream,
    response: Response,
    body: Callable[[], AsyncGenerator[bytes, None]],
) -> None:
    """Send ``body``'s chunks as they come (h11 frames them chunked), until it ends, the
    client closes its side (watched for, so that a gone listener is dropped at once) or a
    chunk is not taken within ``SEND_TIMEOUT_S`` (``trio.TooSlowError``)."""
    headers = [
        ("content-type", response.content_type),
        ("cache-control", "no-store"),
        ("connection", "close"),
        *response.headers.items(),
    ]
    with trio.fail_after(SEND_TIMEOUT_S):
        await stream.send_all(conn.send(h11.Response(status_code=response.status, headers=headers)))
    async with trio.open_nursery() as nursery:

        async def watch_close() -> None:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                while await stream.receive_some(4096):
                    pass  # a client sends nothing more on an event stream
            nursery.cancel_scope.cancel()

        nursery.start_soon(watch_close)
        async with contextlib.aclosing(body()) as chunks:
            async for chunk in chunks:
                with trio.fail_after(SEND_TIMEOUT_S):
                    await stream.send_all(conn.send(h11.Data(data=chunk)))
        with trio.fail_after(SEND_TIMEOUT_S):
            await stream.send_all(conn.send(h11.EndOfMessage()))
        nursery.cancel_scope.cancel()


async def _serve_connection(
    stream: trio.abc.Stream,
    handler: Handler,
    port: int = 0,
    waiting: Callable[[bool], None] = lambda waits: None,
    answered: Callable[[int], None] = lambda status: None,
) -> None:
    """Serve one connection's requests. ``waiting(True)`` is called while the connection
    waits for a request's head, ``waiting(False)`` once one came; a request answered
    with success (below 400: the access rules let it through and it was served) proves
    the connection (``answered`` is told each answer's status). A connection not proven
    yet is closed after its first answer of 400 or more."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
    proven = False
    async with stream:
        for served in range(1, MAX_REQUESTS_PER_CONNECTION + 1):
            try:
                waiting(True)
                with trio.fail_after(FIRST_READ_TIMEOUT_S if served == 1 else READ_TIMEOUT_S):
                    request = await _read_head(conn, stream, port)
                waiting(False)
                if request is None:
                    return
                try:
                    response = await handler(request)
                except HttpError as exc:
                    response = exc.response()
                except Exception:
                    log.exception("HTTP handler failed for %s %s", request.method, request.path)
                    response = Response.json({"error": "internal error; see the node's log"}, 500)
                answered(response.status)
                if response.stream is not None:
                    try:
                        await _send_stream(conn, stream, response, response.stream)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass  # the client went away
                    except trio.TooSlowError:
                        pass  # the client stopped reading
                    except Exception:  # the headers are out: all that is left is to close
                        log.exception("HTTP stream failed for %s %s", request.method, request.path)
                    return
                # A body left unread (a request refused before its route) is never read:
                # the answer says so and the connection ends.
                unread = conn.their_state is not h11.DONE
                last = served == MAX_REQUESTS_PER_CONNECTION
                refused = response.status in REFUSED_STATUSES
                failed = response.status >= 400 and not proven
                proven = proven or response.status < 400
                if not await _send(
                    conn, stream, response, close=last or unread or refused or failed
                ):
                    return  # the client did not take it
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return  # either side asked to close (or the body was not read to its end)
                conn.start_next_cycle()
            except HttpError as exc:
                if conn.our_state is h11.IDLE or conn.our_state is h11.SEND_RESPONSE:
                    await _send(conn, stream, exc.response())
                return
            except (
                h11.RemoteProtocolError,
                h11.LocalProtocolError,
                trio.TooSlowError,
                trio.BrokenResourceError,
                ValueError,
            ):
                return


_BUSY_BODY = json.dumps(
    {"error": f"the node serves {MAX_CONNECTIONS} API connections at once: try again"}
).encode()
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
    + f"content-length: {len(_BUSY_BODY)}\r\nconnection: close\r\n\r\n".encode()
    + _BUSY_BODY
)


async def serve_http(
    handler: Handler,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``handler`` on ``host:port`` until cancelled; reports the bound port.

    The server itself checks no access rules: the node's API is served through
    :func:`~node.api.make_router`, which wraps its routes in ``owner_only`` (``_auth``)."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()[1]
    slots = trio.Semaphore(MAX_CONNECTIONS)
    #: Connections waiting for a request's head that have never had one served with
    #: success (below 400), oldest first: when every slot is taken, the oldest of them
    #: gives its slot to the newcomer. One busy with a request, or proven, is never taken
    #: (review rounds 7 and 8, R7-2, R8-2: 64 connections that sent nothing kept the owner
    #: answered 503; a 405 before any credential check proved a connection; new empty
    #: connections cut the owner's own while its request ran).
    idle: dict[object, trio.CancelScope] = {}
    async with trio.open_nursery() as nursery:
        task_status.started(bound)

        async def on_connection(stream: trio.SocketStream) -> None:
            try:
                slots.acquire_nowait()
            except trio.WouldBlock:
                if idle:
                    idle.pop(next(iter(idle))).cancel()
                with trio.move_on_after(1) as waited:
                    await slots.acquire()
                if waited.cancelled_caught:
                    async with stream:
                        with trio.move_on_after(1), contextlib.suppress(trio.BrokenResourceError):
                            await stream.send_all(_BUSY)
                    return
            token = object()
            proven = False

            def served(status: int) -> None:
                nonlocal proven
                proven = proven or status < 400

            try:
                with trio.CancelScope() as scope:

                    def waiting(waits: bool) -> None:
                        if waits and not proven:
                            idle[token] = scope
                        else:
                            idle.pop(token, None)

                    await _serve_connection(stream, handler, bound, waiting, served)
            finally:
                idle.pop(token, None)
                slots.release()

        await trio.serve_listeners(on_connection, listeners, handler_nursery=nursery)
