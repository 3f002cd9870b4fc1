"""The local HTTP server: routing, JSON errors, limits; a bad client never stops it."""

from __future__ import annotations

import httpx
import trio

from node.api import HttpError, Request, Response, Router, serve_http


async def _echo(request: Request) -> Response:
    return Response.json({"method": request.method, "body": request.json(), "q": request.query})


async def _boom(request: Request) -> Response:
    raise RuntimeError("handler bug")


async def _teapot(request: Request) -> Response:
    raise HttpError(418, "short and stout")


def _router() -> Router:
    router = Router()
    router.add("POST", "/echo", _echo)
    router.add("GET", "/items/", _teapot)
    router.add("GET", "/boom", _boom)
    return router


async def _get(port: int, method: str, path: str, **kw: object) -> httpx.Response:
    def call() -> httpx.Response:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            return client.request(method, path, **kw)  # type: ignore[arg-type]

    return await trio.to_thread.run_sync(call)


async def test_routes_errors_and_survival() -> None:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_http, _router())
        r = await _get(port, "POST", "/echo?a=1", json={"x": [1, 2]})
        assert r.status_code == 200
        assert r.json() == {"method": "POST", "body": {"x": [1, 2]}, "q": {"a": ["1"]}}
        r = await _get(port, "GET", "/items/42")
        assert (r.status_code, r.json()) == (418, {"error": "short and stout"})
        r = await _get(port, "GET", "/nowhere")
        assert r.status_code == 404 and "no such endpoint" in r.json()["error"]
        r = await _get(port, "GET", "/echo")
        assert r.status_code == 405
        r = await _get(port, "POST", "/echo", content=b"{not json")
        assert r.status_code == 400 and "not JSON" in r.json()["error"]
        # nested past the parser's depth: a 400, not a 500 and a traceback (round 69)
        r = await _get(port, "POST", "/echo", content=b"[" * 100_000 + b"]" * 100_000)
        assert r.status_code == 400 and "nested too deeply" in r.json()["error"]
        r = await _get(port, "GET", "/boom")
        assert r.status_code == 500 and "internal error" in r.json()["error"]

        # Garbage and a half request on raw sockets: answered or dropped, server lives.
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"\x00\x01garbage\r\n\r\n")
        reply = await stream.receive_some(1000)
        assert reply == b"" or reply.startswith(b"HTTP/1.1 4")
        await stream.aclose()
        half = await trio.open_tcp_stream("127.0.0.1", port)
        await half.send_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{")
        await half.aclose()

        r = await _get(port, "POST", "/echo", json=None)
        assert r.status_code == 200
        nursery.cancel_scope.cancel()


async def test_connections_are_kept_alive_between_requests() -> None:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_http, _router())
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        request = b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}"
        for _ in range(3):  # three requests, one connection
            await stream.send_all(request)
            reply = b""
            with trio.fail_after(10):
                while not reply.endswith(b"}"):
                    reply += await stream.receive_some(4096)
            assert reply.startswith(b"HTTP/1.1 200") and b"connection: close" not in reply
        # A client that asks to close gets its answer, then the connection ends.
        await stream.send_all(request.replace(b"host: x", b"host: x\r\nconnection: close"))
        reply = b""
        with trio.fail_after(10):
            while chunk := await stream.receive_some(4096):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 200")
        await stream.aclose()
        nursery.cancel_scope.cancel()
