"""A job that cannot run fails fast with its reason (issue 18).

The requester runs the sandbox's admission on the model and inputs before it locks anything:
each mistake is a 400 naming the fix, with nothing locked and no job recorded. A job that
every contributor rejects after the award (a limit the requester could not see) ends at once
with what they said, not at its deadline."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
import trio

from node.api import ApiError, Client, make_router, serve_http
from node.daemon import JobSubmitError
from sandbox import tiny_model_path
from sandbox.testing import FailingRunner

from ._cluster import cluster, tiny_inputs

TOKEN = "t" * 43


def _mistakes() -> list[tuple[str, bytes, dict[str, np.ndarray[Any, Any]], str]]:
    model = tiny_model_path().read_bytes()
    (name, x), *_ = tiny_inputs().items()
    return [
        ("not ONNX", b"this is not a model\n", {name: x}, "export it to ONNX"),
        ("int64 input", model, {name: x.astype(np.int64)}, "has dtype <i8; the model wants <f4"),
        ("wrong shape", model, {name: x[:, :-1]}, "the model wants 16"),
        ("wrong name", model, {"nope": x}, "missing inputs ['x']"),
    ]


MISTAKES = _mistakes()


@pytest.mark.parametrize(
    ("model", "inputs", "says"), [m[1:] for m in MISTAKES], ids=[m[0] for m in MISTAKES]
)
async def test_a_job_admission_refuses_is_a_400_and_locks_nothing(
    model: bytes, inputs: dict[str, np.ndarray[Any, Any]], says: str
) -> None:
    with trio.fail_after(30):
        async with cluster(0, runner=lambda i: FailingRunner()) as cl, trio.open_nursery() as n:
            node = cl.requester
            before = node.ledger.state.balance(node.me)
            port = await n.start(serve_http, make_router(node, token=TOKEN), "127.0.0.1", 0)

            def submit() -> tuple[str, float]:
                with Client(f"http://127.0.0.1:{port}", token=TOKEN) as client:
                    start = time.monotonic()
                    with pytest.raises(ApiError) as caught:
                        client.submit(model, inputs, redundancy=2)
                    return str(caught.value), time.monotonic() - start

            message, took = await trio.to_thread.run_sync(submit)
            assert message.startswith("POST /api/jobs: 400 "), message
            assert says in message, message
            assert "save each --input" in message or "aimx sandbox run" in message, message
            assert len(message) < 400 and "\n" not in message, message
            assert took < 2.0, took
            # nothing locked, nothing announced, no record
            assert not node.jobs and node.requester is not None and not node.requester.jobs
            await cl.settle_blocks(2)
            assert node.ledger.state.balance(node.me) == before
            n.cancel_scope.cancel()


async def test_submit_job_raises_the_same_refusal() -> None:
    # The Python API of the daemon (Node.submit_job) refuses before any lock too.
    model = tiny_model_path().read_bytes()
    with trio.fail_after(30):
        async with cluster(0, runner=lambda i: FailingRunner()) as cl:
            with pytest.raises(JobSubmitError, match="the model wants <f4"):
                await cl.requester.submit_job(model, {"x": np.zeros((1, 16), np.int64)})
            assert not cl.requester.jobs


async def test_a_job_every_contributor_rejects_ends_at_once_with_their_reason() -> None:
    # Admission passes here, but every contributor's sandbox refuses the job (a stricter
    # limit, say): the job fails as soon as the last replica says so, long before its
    # 20 s deadline, and the reason is what they said.
    said = "model has 3 nodes, more than the limit of 2"
    with trio.fail_after(30):
        async with cluster(2, runner=lambda i: FailingRunner("rejected", said)) as cl:
            node = cl.requester
            start = trio.current_time()
            job_id = await node.submit_job(
                tiny_model_path().read_bytes(), tiny_inputs(), redundancy=2
            )
            record = node.jobs[job_id]
            while record.done is None:
                await record.changed.wait()
            took = trio.current_time() - start
            assert record.done.status == "failed", record.events
            assert said in record.done.reason and "rejected" in record.done.reason
            assert "refunded at its expiry, block" in record.done.reason, record.done.reason
            assert took < 5.0, (took, record.events)
