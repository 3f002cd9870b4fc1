"""Pausing whole daemons (in one process over the in-memory network, specs/daemon.md
"Availability and pause"): the owner's pause through the API stops bids and resume brings
them back; the owner's CPU use, injected through the sampling seam, pauses a contributor
that is running a job, which then finishes it or hands it back as ``on_pause`` says."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import httpx
import trio

from node.api import make_router, serve_http
from node.config import NodeConfig
from node.daemon import Node
from sandbox import JobRunner, tiny_model_path
from sandbox.testing import InProcessRunner, SlowRunner

from ._cluster import Cluster, cluster, tiny_inputs

TOKEN = "t" * 43


@asynccontextmanager
async def api_of(node: Node) -> AsyncIterator[Callable[..., httpx.Response]]:
    """``api(method, path, **kw)``: a request to ``node``'s API (run in a thread)."""
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_http, make_router(node, token=TOKEN), "127.0.0.1", 0)

        def api(method: str, path: str, **kw: Any) -> httpx.Response:
            with httpx.Client(
                base_url=f"http://127.0.0.1:{port}",
                timeout=10,
                headers={"authorization": f"Bearer {TOKEN}"},
            ) as h:
                return h.request(method, path, **kw)

        yield api
        nursery.cancel_scope.cancel()


async def finished(cl: Cluster, job_id: bytes) -> str:
    record = cl.requester.jobs[job_id]
    while record.done is None:
        await record.changed.wait()
    return record.done.status


async def test_a_paused_contributor_does_not_bid_and_bids_again_after_resume() -> None:
    model, inputs = tiny_model_path().read_bytes(), tiny_inputs()
    with trio.fail_after(40):
        async with cluster(1, runner=lambda i: InProcessRunner()) as cl:
            (contributor,) = cl.contributors
            assert contributor.provider is not None
            async with api_of(contributor) as api:
                call = trio.to_thread.run_sync
                answer = await call(lambda: api("POST", "/api/pause", json={"reason": "gaming"}))
                assert answer.status_code == 200, answer.text
                paused = answer.json()
                assert paused["state"] == "paused" and paused["paused"] is True
                assert paused["reason"] == "paused by the owner: gaming"
                assert paused["since_ms"] == contributor.pausing.verdict.since_ms  # type: ignore[union-attr]
                assert paused["schedule"] is None
                status = (await call(lambda: api("GET", "/api/status"))).json()
                assert status["availability"] == paused
                scraped = (await call(lambda: api("GET", "/metrics"))).text
                assert "\naimx_paused 1.0\n" in scraped
                assert 'aimx_pauses_total{cause="owner"} 1.0' in scraped
                assert 'aimx_provider_work{phase="running"} 0.0' in scraped

                job_id = await cl.requester.submit_job(model, inputs, max_retries=0)
                assert await finished(cl, job_id) == "failed"
                seen = [s.outcome for s in contributor.provider.history if s.job_id == job_id]
                assert seen == ["shutting_down"], seen  # it answered, and did not bid

                answer = await call(lambda: api("POST", "/api/resume", json={}))
                assert answer.status_code == 200
                assert answer.json()["paused"] is False and answer.json()["reason"] is None
                assert answer.json()["state"] in ("idle", "working")
                job_id = await cl.requester.submit_job(model, inputs, max_retries=0)
                assert await finished(cl, job_id) == "verified"
                # a body that is not {} or {"reason": text} is refused
                bad = await call(lambda: api("POST", "/api/pause", json={"reason": 5}))
                assert bad.status_code == 400


async def test_a_requester_only_node_has_nothing_to_pause() -> None:
    with trio.fail_after(20):
        async with (
            cluster(0, runner=lambda i: InProcessRunner()) as cl,
            api_of(cl.requester) as api,
        ):
            answer = await trio.to_thread.run_sync(lambda: api("POST", "/api/pause", json={}))
            assert answer.status_code == 409 and "not a contributor" in answer.text
            status = await trio.to_thread.run_sync(lambda: api("GET", "/api/status"))
            assert status.json()["availability"]["paused"] is False


class OwnerCpu:
    """A use sampler whose CPU share the test sets (no GPU users)."""

    def __init__(self) -> None:
        self.share = 0

    def gpu_users(self) -> list[str]:
        return []

    def cpu_share_permille(self) -> int | None:
        return self.share


def _with(node: Node, on_pause: Literal["finish", "abort"]) -> NodeConfig:
    tree = node.config.model_dump()
    tree["contributor"]["on_pause"] = on_pause
    tree["contributor"]["pause_on_use"].update(
        cpu_percent=50, busy_s=0, quiet_s=60, sample_ms=100, gpu=False
    )
    return NodeConfig.model_validate(tree)


async def _owner_takes_the_machine_back(on_pause: Literal["finish", "abort"]) -> None:
    """Contributor 0 (a slow runner) wins a job while contributor 1 is paused by its owner;
    then 1 is resumed and 0's owner gets busy on the CPU while 0 runs the job."""
    model, inputs = tiny_model_path().read_bytes(), tiny_inputs()

    def runner(i: int) -> JobRunner:
        return SlowRunner(InProcessRunner(), 1.5) if i == 0 else InProcessRunner()

    with trio.fail_after(40):
        async with cluster(2, runner=runner) as cl:
            busy, other = cl.contributors
            assert busy.provider is not None and other.provider is not None
            other.pausing.pause("not now")
            owner = OwnerCpu()
            busy.pausing.sampler = owner
            busy.reconfigure(_with(busy, on_pause))
            job_id = await cl.requester.submit_job(model, inputs, max_retries=1)
            while busy.provider.active == 0:
                await trio.sleep(0.01)
            other.pausing.resume()
            owner.share = 900
            while not busy.provider.draining:
                await trio.sleep(0.01)
            verdict = busy.pausing.verdict
            assert verdict is not None and verdict.cause == "cpu", verdict
            assert await finished(cl, job_id) == "verified"
            record = cl.requester.jobs[job_id]
            assert record.done is not None
            paid = {p.provider for p in record.done.paid}
            events = " | ".join(str(e) for e in record.events)
            if on_pause == "finish":
                assert paid == {busy.me}, events
                assert busy.metrics.handed_back._value.get() == 0
            else:
                assert paid == {other.me}, events
                assert "handed back: the owner is busy" in events, events
                assert busy.metrics.handed_back._value.get() == 1
            assert busy.provider.draining  # still paused: quiet_s has not passed


async def test_the_owner_taking_the_machine_back_lets_a_running_job_finish() -> None:
    await _owner_takes_the_machine_back("finish")


async def test_the_owner_taking_the_machine_back_hands_a_running_job_back() -> None:
    await _owner_takes_the_machine_back("abort")


async def test_stopping_lets_a_running_job_finish_within_the_grace_period() -> None:
    await _stop_while_running(grace_s=10, handed_back=False)


async def test_stopping_hands_back_a_job_that_outlasts_the_grace_period() -> None:
    await _stop_while_running(grace_s=0, handed_back=True)


async def _stop_while_running(*, grace_s: float, handed_back: bool) -> None:
    """SIGTERM's drain (``Node.drain``): contributor 0 runs a slow job; it stops bidding at
    once, and the job is delivered by it (within the grace) or handed back to 1."""
    model, inputs = tiny_model_path().read_bytes(), tiny_inputs()

    def runner(i: int) -> JobRunner:
        return SlowRunner(InProcessRunner(), 1.5) if i == 0 else InProcessRunner()

    with trio.fail_after(40):
        async with cluster(2, runner=runner) as cl:
            stopping, other = cl.contributors
            assert stopping.provider is not None
            other.pausing.pause("not now")
            job_id = await cl.requester.submit_job(model, inputs, max_retries=1)
            while stopping.provider.active == 0:
                await trio.sleep(0.01)
            other.pausing.resume()
            started = trio.current_time()
            handed = await stopping.drain(grace_s)
            took = trio.current_time() - started
            assert stopping.provider.draining
            assert handed == (1 if handed_back else 0)
            assert took < (3 if handed_back else 1.5 + 3), took
            assert await finished(cl, job_id) == "verified"
            record = cl.requester.jobs[job_id]
            assert record.done is not None
            paid = {p.provider for p in record.done.paid}
            events = " | ".join(str(e) for e in record.events)
            assert paid == ({other.me} if handed_back else {stopping.me}), events
            if handed_back:
                assert "handed back: the node is shutting down" in events, events
            # a pause ending meanwhile does not make a stopping node bid again
            stopping.pausing.pause("x")
            stopping.pausing.resume()
            assert stopping.provider.draining


async def test_aimx_node_pause_and_resume(tmp_path: Path) -> None:
    from ..cli.test_jobs import aimx, serving, short

    d = ("--data-dir", str(tmp_path))
    with trio.fail_after(30):
        async with cluster(1, runner=lambda i: InProcessRunner()) as cl:
            (contributor,) = cl.contributors
            async with serving(contributor, tmp_path):
                code, out = await trio.to_thread.run_sync(
                    lambda: aimx("node", "pause", "gaming", *d)
                )
                assert code == 0 and out.strip() == "paused: paused by the owner: gaming", out
                assert contributor.provider is not None and contributor.provider.draining
                code, out = await trio.to_thread.run_sync(lambda: aimx("node", "status", *d))
                assert code == 0 and "paused — paused by the owner: gaming" in out, out
                code, out = await trio.to_thread.run_sync(lambda: aimx("node", "resume", *d))
                assert code == 0 and out.strip() in ("idle", "working"), out
                assert not contributor.provider.draining
        code, out = await trio.to_thread.run_sync(lambda: aimx("node", "resume", *d))
        assert code == 1 and short(out), out  # no node running


async def test_the_owner_pause_is_kept_over_a_restart(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with cluster(1, runner=lambda i: InProcessRunner(), state_root=tmp_path) as cl:
            assert cl.restart is not None
            (node,) = cl.contributors
            node.pausing.pause("on holiday")
            cl.kill(node)
            await cl.settle_blocks(1)
            again = await cl.restart(node)
            verdict = again.pausing.verdict
            assert verdict is not None and verdict.reason == "paused by the owner: on holiday"
            assert again.provider is not None and again.provider.draining
            again.pausing.resume()
            cl.kill(again)
            await cl.settle_blocks(1)
            third = await cl.restart(again)
            assert third.pausing.verdict is not None and not third.pausing.verdict.paused
