"""A small HTTP/1.1 server on trio, for the daemon's local JSON API, metrics and dashboard.

h11 does the protocol, trio the sockets. Connections are kept alive between requests (a
client waiting on a job asks again every second), up to ``MAX_REQUESTS_PER_CONNECTION``
and ``READ_TIMEOUT_S`` of idleness. Every limit is explicit: header size, body size, time
to read a request.
"""

from __future__ import annotations

import contextlib
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
MAX_BODY_BYTES = 64 * 1024 * 1024
READ_TIMEOUT_S = 30.0
MAX_REQUESTS_PER_CONNECTION = 1000


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    #: The server's port the request came in on (what a loopback ``Host`` must name).
    port: int = 0

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"null")
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
    """Exact-path routes plus prefix routes (``/api/jobs/`` + id)."""

    def __init__(self) -> None:
        self._exact: dict[Route, Handler] = {}
        self._prefix: list[tuple[str, str, Handler]] = []

    def add(self, method: str, path: str, handler: Handler) -> None:
        if path.endswith("/") and path != "/":
            self._prefix.append((method, path, handler))
        else:
            self._exact[(method, path)] = handler

    async def __call__(self, request: Request) -> Response:
        handler = self._exact.get((request.method, request.path))
        if handler is None:
            for method, prefix, h in self._prefix:
                if method == request.method and request.path.startswith(prefix):
                    handler = h
                    break
        if handler is None:
            known = {p for _, p in self._exact} | {p for _, p, _ in self._prefix}
            if request.path in known:
                raise HttpError(405, f"{request.method} is not allowed on {request.path}")
            raise HttpError(404, f"no such endpoint: {request.path}")
        return await handler(request)


async def _read_request(conn: h11.Connection, stream: trio.abc.Stream, port: int) -> Request | None:
    target = b""
    method = b""
    headers: dict[str, str] = {}
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(65536)
            conn.receive_data(bytes(data))
            if not data and conn.their_state is h11.IDLE:
                return None
            continue
        if isinstance(event, h11.Request):
            method, target = event.method, event.target
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in event.headers}
            length = int(headers.get("content-length", "0") or 0)
            if length > MAX_BODY_BYTES:
                raise HttpError(413, f"request body over {MAX_BODY_BYTES} bytes")
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_BODY_BYTES:
                raise HttpError(413, f"request body over {MAX_BODY_BYTES} bytes")
        elif isinstance(event, h11.EndOfMessage):
            parts = urlsplit(target.decode("latin-1"))
            return Request(
                method.decode("latin-1"),
                parts.path,
                parse_qs(parts.query),
                headers,
                bytes(body),
                port,
            )
        elif isinstance(event, h11.ConnectionClosed):
            return None


async def _send(
    conn: h11.Connection, stream: trio.abc.Stream, response: Response, *, close: bool = True
) -> None:
    headers = [
        ("content-type", response.content_type),
        ("content-length", str(len(response.body))),
        *([("connection", "close")] if close else []),
        *response.headers.items(),
    ]
    await stream.send_all(conn.send(h11.Response(status_code=response.status, headers=headers)))
    await stream.send_all(conn.send(h11.Data(data=response.body)))
    await stream.send_all(conn.send(h11.EndOfMessage()))


async def _send_stream(
    conn: h11.Connection,
    stream: trio.abc.Stream,
    response: Response,
    body: Callable[[], AsyncGenerator[bytes, None]],
) -> None:
    """Send ``body``'s chunks as they come (h11 frames them chunked), until it ends or the
    client closes its side (watched for, so that a gone listener is dropped at once)."""
    headers = [
        ("content-type", response.content_type),
        ("cache-control", "no-store"),
        ("connection", "close"),
        *response.headers.items(),
    ]
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
                await stream.send_all(conn.send(h11.Data(data=chunk)))
        await stream.send_all(conn.send(h11.EndOfMessage()))
        nursery.cancel_scope.cancel()


async def _serve_connection(stream: trio.abc.Stream, handler: Handler, port: int = 0) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
    async with stream:
        for served in range(1, MAX_REQUESTS_PER_CONNECTION + 1):
            try:
                with trio.fail_after(READ_TIMEOUT_S):
                    request = await _read_request(conn, stream, port)
                if request is None:
                    return
                try:
                    response = await handler(request)
                except HttpError as exc:
                    response = exc.response()
                except Exception:
                    log.exception("HTTP handler failed for %s %s", request.method, request.path)
                    response = Response.json({"error": "internal error; see the node's log"}, 500)
                if response.stream is not None:
                    try:
                        await _send_stream(conn, stream, response, response.stream)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass  # the client went away
                    except Exception:  # the headers are out: all that is left is to close
                        log.exception("HTTP stream failed for %s %s", request.method, request.path)
                    return
                await _send(conn, stream, response, close=served == MAX_REQUESTS_PER_CONNECTION)
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
    async with trio.open_nursery() as nursery:
        task_status.started(bound)

        async def on_connection(stream: trio.SocketStream) -> None:
            await _serve_connection(stream, handler, bound)

        await trio.serve_listeners(on_connection, listeners, handler_nursery=nursery)
