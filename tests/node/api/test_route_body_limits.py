"""Only a job submission carries megabytes: the API's other POST and PUT routes take at
most ``SMALL_BODY_BYTES`` (specs/api.md), refused with 413 on the request's head."""

from __future__ import annotations

import httpx
import trio

from node.api import make_router, serve_http
from node.api._http import SMALL_BODY_BYTES
from sandbox.testing import InProcessRunner

from ..daemon._cluster import cluster

TOKEN = "t" * 43


async def test_small_routes_refuse_a_body_over_64_kib_and_job_submission_does_not() -> None:
    padding = "x" * (SMALL_BODY_BYTES + 1)
    with trio.fail_after(30):
        async with cluster(0, runner=lambda i: InProcessRunner()) as cl, trio.open_nursery() as n:
            router = make_router(cl.requester, token=TOKEN)
            port = await n.start(serve_http, router, "127.0.0.1", 0)

            def post(method: str, path: str, body: str) -> int:
                with httpx.Client(
                    base_url=f"http://127.0.0.1:{port}",
                    timeout=10,
                    headers={"authorization": f"Bearer {TOKEN}"},
                ) as h:
                    return h.request(method, path, json={"padding": body}).status_code

            for method, path in [
                ("POST", "/api/pause"),
                ("POST", "/api/resume"),
                ("PUT", "/api/config"),
                ("POST", "/api/faucet"),
                ("POST", "/api/stake"),
            ]:
                status = await trio.to_thread.run_sync(post, method, path, padding)
                assert status == 413, (path, status)
            # a job submission of the same size is read (and refused for its content)
            status = await trio.to_thread.run_sync(post, "POST", "/api/jobs", padding)
            assert status == 400
            n.cancel_scope.cancel()
