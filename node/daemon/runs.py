"""A contributor's runs: fetch an awarded job's model and inputs from its requester, run
it through the job runner (the sandbox, or a fake of ``sandbox.testing`` in tests), and
hand the outcome to the Provider machine."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import trio

import protocol
import scheduler
from protocol import Award, JobSpec, Usage
from sandbox import JobRequest, JobRunner, RunCancel

from ..net import NetworkError
from ._codec import Array, outputs_bytes, outputs_from_bytes, tensor_from_bytes
from ._errors import JobSubmitError
from .market import MAX_MARKET_OUTPUT_BYTES

if TYPE_CHECKING:
    from ._node import Node

log = logging.getLogger(__name__)

_ZERO_USAGE = Usage(cpu_ms=0, wall_ms=0, peak_memory_kb=0, gpu_ms=0)
#: Threads for runs at once, at least (twice the machine's ``max_concurrency`` if more):
#: runs beyond the sandbox's pool wait in it for a slot, and an aborted run's thread ends
#: as its worker is killed.
RUN_THREADS = 16


class Runs:
    """The replicas this node runs, each a task that the Provider machine may abort."""

    def __init__(self, node: Node, runner: JobRunner) -> None:
        self._node = node
        self._runner = runner
        self._running: dict[bytes, trio.CancelScope] = {}
        #: The runs' own threads: never trio's default limiter, which the daemon's other
        #: blocking work (receipt writes, peers.json, the owner's use) shares.
        self._threads = trio.CapacityLimiter(RUN_THREADS)

    def __contains__(self, job_id: bytes) -> bool:
        """Whether a replica of ``job_id`` is running here now."""
        return job_id in self._running

    def start(self, effect: scheduler.RunJob) -> None:
        provider = self._node.provider
        if provider is not None:  # twice the runs the machine takes at once, at least
            want = max(RUN_THREADS, 2 * provider.config.max_concurrency)
            if self._threads.total_tokens != want:
                self._threads.total_tokens = want
        self._node.spawn(self._run_job, effect)

    def abort(self, job_id: bytes) -> None:
        scope = self._running.get(job_id)
        if scope is not None:
            scope.cancel()

    async def _run_job(self, effect: scheduler.RunJob) -> None:
        node = self._node
        spec: JobSpec = effect.job.message
        job_id = effect.job.id
        award: Award = effect.award.message
        result: dict[str, Any] | None = None
        with trio.CancelScope() as scope:
            # one run of a job at a time: one still here (aborted, not unwound yet) ends
            # now, and no later one can take the earlier one's place for an abort
            # (review round 56, F1)
            earlier = self._running.get(job_id)
            if earlier is not None:
                earlier.cancel()
            self._running[job_id] = scope
            node.metrics.running.inc()
            try:
                result = await self._fetch_and_run(spec, job_id, award)
            finally:
                if self._running.get(job_id) is scope:
                    del self._running[job_id]
                node.metrics.running.dec()
        if result is None or node.provider is None:
            return
        node.metrics.runs.labels(result["outcome"]).inc()
        node.effects.execute(
            "provider", node.provider.job_finished(job_id, node.now_ms(), **result)
        )

    async def _fetch_and_run(
        self, spec: JobSpec, job_id: bytes, award: Award
    ) -> dict[str, Any] | None:
        content = self._node.content
        started = trio.current_time()
        try:
            model = await content.fetch(spec.requester, job_id, spec.model_hash, spec.model_size)
            inputs: dict[str, Array] = {}
            for ref in spec.inputs:
                data = await content.fetch(spec.requester, job_id, ref.hash, ref.size)
                inputs[ref.name] = tensor_from_bytes(data)
        except (
            NetworkError,
            scheduler.SchedulerError,
            protocol.ProtocolError,
            JobSubmitError,
        ) as exc:
            return _failed("crashed", f"could not fetch the job's data: {exc}")
        cancel = RunCancel()
        # The runner's own limits for every job, so that a warm worker (kept per owner,
        # model and limits) serves the next job of the same owner; a run the Provider
        # machine aborts (AbortJob: past the award's deadline, say) ends at once, its
        # worker killed (``cancel``).
        job = JobRequest(
            runtime=spec.runtime,
            model=model,
            inputs=inputs,
            owner=spec.requester,
            threads=spec.threads,
            graph_opt_level=spec.graph_opt_level,
            execution_provider=spec.requirements.execution_provider,
            model_hash=spec.model_hash,
            cancel=cancel,
        )
        fetched = trio.current_time()
        try:
            outcome = await trio.to_thread.run_sync(
                self._runner.run, job, abandon_on_cancel=True, limiter=self._threads
            )
        except trio.Cancelled:
            # Aborted (AbortJob) or the node stops: the run ends too, its worker killed.
            # Left going, it kept its sandbox slot and thread to the wall-clock limit while
            # the Provider machine counted the slot free: a requester awarding jobs that
            # were aborted at once filled every slot and thread (review round 62, F1).
            cancel.cancel()
            raise
        except Exception as exc:  # the runner refused the job as a whole
            return _failed("rejected", str(exc))
        log.info(
            "job %s: %s in %.0f ms (%s worker, data fetched in %.0f ms)",
            job_id.hex()[:12],
            outcome.kind,
            (trio.current_time() - fetched) * 1000,
            "warm" if outcome.warm else "cold",
            (fetched - started) * 1000,
        )
        if not outcome.ok:
            return {
                "outcome": outcome.kind,
                "output": None,
                "usage": outcome.usage,
                "message": outcome.message,
            }
        data = outputs_bytes(outcome.outputs)
        too_large = _undeliverable(data)
        if too_large:
            # It could never reach (or be read by) the requester: a failed Result now
            # tells it at once, rather than resends it refuses until the deadline.
            return {
                "outcome": "output_limit",
                "output": None,
                "usage": outcome.usage,
                "message": too_large,
            }
        output = scheduler.Output(data, outcome.commitment, outcome.determinism_class)
        return {"outcome": "ok", "output": output, "usage": outcome.usage, "message": ""}


def _undeliverable(data: bytes) -> str:
    """Why an output's bytes cannot be delivered (empty if they can): over what one market
    request carries, or not readable back by the requester (``outputs_from_bytes``: each
    tensor's data is one byte string of at most 1 MiB, the protocol's limit)."""
    if len(data) > MAX_MARKET_OUTPUT_BYTES:
        return (
            f"the output is {len(data)} bytes, over the {MAX_MARKET_OUTPUT_BYTES} bytes a "
            "result can carry; ask for smaller outputs (split the job)"
        )
    try:
        outputs_from_bytes(data)
    except protocol.ProtocolError as exc:
        return f"the output cannot be delivered ({exc}); keep each output tensor to 1 MiB"
    return ""


def _failed(kind: str, message: str) -> dict[str, Any]:
    return {"outcome": kind, "output": None, "usage": _ZERO_USAGE, "message": message}
