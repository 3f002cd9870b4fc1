"""The local HTTP API and the Python client against a node of an in-process cluster."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest
import trio

import protocol
from node.api import ApiError, Client, make_router, serve_http
from node.daemon import CONTENT_PROTOCOL, MARKET_PROTOCOL, REPORT_PROTOCOL
from node.daemon.content import MAX_FETCHES_PER_BLOB
from node.net import RemoteError
from sandbox import tiny_model_path
from sandbox.testing import InProcessRunner, SlowRunner

from ..daemon._cluster import cluster, tiny_inputs

TOKEN = "t" * 43
AUTH = {"authorization": f"Bearer {TOKEN}"}


async def test_submit_wait_result_and_errors_over_http() -> None:
    model = tiny_model_path()
    inputs = tiny_inputs()
    with trio.fail_after(40):
        async with cluster(2) as cl, trio.open_nursery() as nursery:
            router = make_router(cl.requester, token=TOKEN)
            port = await nursery.start(serve_http, router, "127.0.0.1", 0)
            crouter = make_router(cl.coordinator, token=TOKEN)
            cport = await nursery.start(serve_http, crouter, "127.0.0.1", 0)
            url, curl = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{cport}"

            def workspace() -> tuple[str, dict[str, Any], dict[str, np.ndarray[Any, Any]]]:
                with Client(url, token=TOKEN) as c:
                    job_id = c.submit(model, inputs, redundancy=1)
                    status = c.wait(job_id, timeout_s=30, until="closed")
                    return job_id, status, c.result(job_id)

            job_id, status, outputs = await trio.to_thread.run_sync(workspace)
            assert status["status"] == "verified" and status["closed"]
            assert set(outputs) == set(status["output_names"])

            def errors() -> list[int]:
                codes = []
                with httpx.Client(base_url=url, timeout=10, headers=AUTH) as h:
                    codes.append(h.get("/api/jobs/" + "00" * 32).status_code)
                    codes.append(h.get("/api/jobs/nothex").status_code)
                    json_type = {"content-type": "application/json"}
                    bad = h.post("/api/jobs", content=b"{not json", headers=json_type)
                    codes.append(bad.status_code)
                    codes.append(
                        h.post("/api/jobs", json={"model": "!!", "inputs": {}}).status_code
                    )
                    body = {"model": "AAAA", "inputs": {"x": "bm90IG5weQ=="}}
                    codes.append(h.post("/api/jobs", json=body).status_code)
                    codes.append(h.post("/api/faucet", json={"account": "x"}).status_code)
                    me = protocol.peer_id(cl.requester.me)
                    codes.append(h.post("/api/faucet", json={"account": me}).status_code)
                    codes.append(h.get("/api/provider/why").status_code)
                    # a stake is at most the balance
                    codes.append(h.post("/api/stake", json={"amount": 10**18}).status_code)
                    metrics = h.get("/metrics").text
                    assert "aimx_jobs_submitted_total 1.0" in metrics
                with Client(url, token=TOKEN) as c, pytest.raises(ApiError):
                    c.result("00" * 32)
                # the cluster's chain is no devnet: no faucet unless configured
                with Client(curl, token=TOKEN) as c, pytest.raises(ApiError, match="403 the fau"):
                    c.faucet(protocol.peer_id(cl.requester.me), 5)
                return codes

            codes = await trio.to_thread.run_sync(errors)
            assert codes == [404, 404, 400, 400, 400, 400, 409, 409, 400]

            # with coordinator.faucet = true it mints
            coord = cl.coordinator
            faucet_on = coord.config.coordinator.model_copy(update={"faucet": True})
            coord.config = coord.config.model_copy(update={"coordinator": faucet_on})

            def mint() -> None:
                with Client(curl, token=TOKEN) as c:
                    assert c.faucet(protocol.peer_id(cl.requester.me), 5)["amount"] == 5
                    with pytest.raises(ApiError, match="400"):
                        c.faucet(protocol.peer_id(cl.requester.me), -1)

            await trio.to_thread.run_sync(mint)
            assert job_id in [r.job_id.hex() for r in cl.requester.jobs.values()]
            nursery.cancel_scope.cancel()


async def test_bad_peer_messages_are_counted_and_never_crash_the_node() -> None:
    with trio.fail_after(40):
        async with cluster(1) as cl:
            provider = cl.contributors[0]
            net = cl.requester.net
            garbage = [b"", b"\xc1", protocol.pack([b"x", b""]), protocol.pack([1, 2, 3])]
            for data in garbage:
                with pytest.raises(RemoteError):
                    await net.request(provider.me, MARKET_PROTOCOL, data)
            with pytest.raises(RemoteError):  # content of a job we were never awarded
                await net.request(
                    cl.requester.me, CONTENT_PROTOCOL, protocol.pack([b"j" * 32, b"h" * 32])
                )
            with pytest.raises(RemoteError):
                await provider.net.request(cl.requester.me, CONTENT_PROTOCOL, b"\x00")
            with pytest.raises(RemoteError):  # evidence that is not a signed Result
                await net.request(
                    cl.coordinator.me, REPORT_PROTOCOL, protocol.pack([b"o" * 32, "x", [b"zz"]])
                )
            assert sum(provider.bad_messages.values()) >= len(garbage)
            assert sum(cl.coordinator.bad_messages.values()) >= 1
            # still working
            job_id = await cl.requester.submit_job(tiny_model_path().read_bytes(), tiny_inputs())
            record = cl.requester.jobs[job_id]
            while record.done is None:
                await record.changed.wait()
            assert record.done.status == "verified"


async def test_an_awarded_provider_fetches_each_blob_a_bounded_number_of_times() -> None:
    """Each fetch costs the requester a seal of up to 4 MiB: an awarded provider may fetch a
    blob of its job a few times (retries), then it is refused and counted."""
    with trio.fail_after(40):
        async with cluster(1, runner=lambda i: SlowRunner(InProcessRunner(), 3.0)) as cl:
            provider = cl.contributors[0]
            model = tiny_model_path().read_bytes()
            job_id = await cl.requester.submit_job(model, tiny_inputs())
            assert cl.requester.requester is not None
            job = cl.requester.requester.jobs[job_id]
            while provider.content.store.get(job.spec.model_hash) is None:
                await trio.sleep(0.02)  # until the provider fetched it for its run
            ask = protocol.pack([job_id, job.spec.model_hash])
            for _ in range(MAX_FETCHES_PER_BLOB - 1):  # the provider fetched it once itself
                await provider.net.request(cl.requester.me, CONTENT_PROTOCOL, ask)
            with pytest.raises(RemoteError, match="served"):
                await provider.net.request(cl.requester.me, CONTENT_PROTOCOL, ask)


async def test_a_provider_whose_run_is_over_is_not_served_its_jobs_data_again() -> None:
    """Round 42, F4: the content was served to any replica not failed, in any phase; an
    award's data is for its run (``Requester.may_fetch``), and each fetch costs a seal."""
    with trio.fail_after(40):
        async with cluster(1, runner=lambda i: InProcessRunner()) as cl:
            provider = cl.contributors[0]
            job_id = await cl.requester.submit_job(tiny_model_path().read_bytes(), tiny_inputs())
            assert cl.requester.requester is not None
            job = cl.requester.requester.jobs[job_id]
            record = cl.requester.jobs[job_id]
            while record.done is None:
                await record.changed.wait()
            assert record.done.status == "verified"
            ask = protocol.pack([job_id, job.spec.model_hash])
            with pytest.raises(RemoteError, match="run is over"):
                await provider.net.request(cl.requester.me, CONTENT_PROTOCOL, ask)
            assert cl.requester.conduct.counts.get(protocol.peer_id(provider.me)) is None
