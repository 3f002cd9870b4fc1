"""Review round 58, F2: the API and the CLI handed over an ``unverified`` output (results
that agreed but no majority or known answer decided, which two free keys can choose) as
"the verified outputs", saying nothing of its status. It is refused now unless asked for
with ``unverified=1``."""

from __future__ import annotations

import numpy as np
import pytest
import trio

import scheduler
from node.api import ApiError, Client, make_router, serve_http
from node.daemon._jobs import JobRecord
from sandbox.testing import InProcessRunner

from ...ledger.helpers import ALICE, job_spec
from ..daemon._cluster import cluster

TOKEN = "t" * 43


def _done(label: bytes, status: scheduler.JobStatus) -> JobRecord:
    signed = job_spec(ALICE, label)
    record = JobRecord(signed.id, signed.message, 0, "m")
    record.done = scheduler.JobDone(record.job_id, status, "2 of 2 results agree", None, (), None)
    record.outputs = {"y": np.array([1.0, 2.0], np.float32)}
    return record


async def test_an_unverified_output_is_given_only_when_asked_for() -> None:
    with trio.fail_after(30):
        async with cluster(0, runner=lambda i: InProcessRunner()) as cl, trio.open_nursery() as n:
            unverified = _done(b"u", scheduler.JobStatus.UNVERIFIED)
            verified = _done(b"v", scheduler.JobStatus.VERIFIED)
            for record in (unverified, verified):
                cl.requester.jobs.add(record)
            port = await n.start(serve_http, make_router(cl.requester, token=TOKEN), "127.0.0.1", 0)

            def fetch() -> None:
                with Client(f"http://127.0.0.1:{port}", token=TOKEN) as c:
                    # the tree before: the output, as the verified one
                    with pytest.raises(ApiError, match="409 the job's output is unverified"):
                        c.result(unverified.job_id.hex())
                    taken = c.result(unverified.job_id.hex(), unverified=True)
                    assert taken["y"].tolist() == [1.0, 2.0]
                    assert c.result(verified.job_id.hex())["y"].tolist() == [1.0, 2.0]

            await trio.to_thread.run_sync(fetch)
            n.cancel_scope.cancel()
