"""One job on a started worker: the control frames on its pipes (``_ipc``) and the tensors
in its shared region (``_shm``). The model is loaded if the worker has none yet, the inputs
are placed and the run request sent, the outputs are read back and checked (the worker is
trusted with nothing it sends; specs/sandbox.md §9); a worker that ends, runs out of time
or breaks the protocol meanwhile is killed and its end becomes the outcome
(``_metering``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from . import _ipc, _shm
from ._admission import AdmissionLimits
from ._job import JobRequest, Limits, Outcome
from ._metering import ZERO, add_usage, ended, failed, runtime_us, usage_since, worker_error
from ._tensors import commitment_of, raw_data_hash
from ._worker_handle import WorkerHandle

_MAX_REPLY = 16 * 1024 * 1024  # control frames only: tensors travel in shared memory


def run_job(
    worker: WorkerHandle,
    job: JobRequest,
    limits: Limits,
    request: dict[str, Any],
    *,
    keep_warm: bool,
    warm: bool,
    admission: AdmissionLimits,
    via_bwrap: bool,
) -> tuple[Outcome, bool]:
    """Load (if needed) and run; the outcome and whether the worker may stay warm.
    ``keep_warm``: the job has an owner, so a clean worker may serve the owner again;
    ``warm``: the worker served before; ``via_bwrap``: bubblewrap runs it."""
    usage = ZERO
    deadline = time.monotonic() + limits.wall_ms / 1000  # load + run, not start-up
    worker.cpu_base_ns = worker.cgroup.cpu_ns() if worker.cgroup is not None else None
    if not worker.loaded and job.runtime != "python":
        load = {
            "op": "load",
            "model": job.model,
            "threads": job.threads,
            "opt_level": job.graph_opt_level,
            "provider": job.execution_provider,
            "admission": asdict(admission),
            "cpu_s": limits.cpu_s,
        }
        if "cpu_hard" in request:
            load["cpu_hard"] = request["cpu_hard"]
        reply = call(worker, load, deadline, limits, via_bwrap=via_bwrap)
        if isinstance(reply, Outcome):
            return reply, False
        usage = add_usage(usage, reply)
        if reply.get("op") != "loaded":
            return worker_error(reply, usage), False
        worker.loaded = True
        worker.det_class = str(reply.get("class", ""))
    inputs: list[_shm.Array] | None = None
    if request["op"] == "run":
        # Inputs go into the worker's shared region; the request names where they are.
        inputs = list(job.inputs.values())
        reserve = _shm.region_size(limits.output_bytes)
        try:
            request["inputs"] = worker.region.place_inputs(inputs, reserve)
        except (OSError, ValueError) as exc:
            return failed("crashed", f"cannot place the inputs in shared memory: {exc}"), False
        request["shm_size"] = worker.region.size
    clean: list[bool] = []

    def check() -> None:
        """A warm worker's check after its job, made while the worker finishes the
        reply rather than after it."""
        if keep_warm:
            clean.append(worker.clean_after_job(via_bwrap))

    reply = call(
        worker, request, deadline, limits, via_bwrap=via_bwrap, inputs=inputs, on_ran=check
    )
    if isinstance(reply, Outcome):
        return reply, False
    usage = add_usage(usage, reply)
    if reply.get("op") != "result":
        return worker_error(reply, usage), False
    try:
        outputs, hashed = worker.region.read_outputs(
            reply.get("outputs"), limits.output_bytes, digest=raw_data_hash
        )
    except _shm.MalformedOutputs as exc:
        worker.kill()
        return failed("crashed", f"worker sent malformed outputs: {exc}", usage), False
    keep = keep_warm and (clean[0] if clean else worker.clean_after_job(via_bwrap))
    outcome = Outcome(
        kind="ok",
        message="",
        usage=usage,
        outputs=outputs,
        commitment=commitment_of(hashed) if hashed else b"",
        determinism_class=worker.det_class or str(reply.get("class", "")),
        warm=warm,
        value=str(reply.get("value", "")),
        runtime_us=runtime_us(reply, usage),
    )
    return outcome, keep


def call(
    worker: WorkerHandle,
    request: dict[str, Any],
    deadline: float,
    limits: Limits,
    *,
    via_bwrap: bool,
    inputs: list[_shm.Array] | None = None,
    on_ran: Callable[[], object] = lambda: None,
) -> dict[str, Any] | Outcome:
    """Send a request and wait for the reply, or turn the worker's end into an outcome.
    ``inputs``: a run's, copied to their places (``request["inputs"]``) after the
    request is sent, while the worker prepares the run; then :data:`_ipc.GO`.
    ``on_ran`` is called when the worker says a run's runtime call returned (§9)."""
    t0 = time.monotonic()
    try:
        _ipc.send(worker.wfd, request)
        if inputs is not None:
            worker.region.copy_inputs(inputs, request["inputs"])
            _ipc.go(worker.wfd)
        reply = _ipc.recv(worker.rfd, max_bytes=_MAX_REPLY, deadline=deadline, on_ran=on_ran)
    except _ipc.Deadline:
        worker.kill()
        return ended(worker, t0, limits, timed_out=True, via_bwrap=via_bwrap)
    except (_ipc.WorkerGone, BrokenPipeError, ConnectionResetError):
        worker.kill()
        return ended(worker, t0, limits, timed_out=False, via_bwrap=via_bwrap)
    except Exception as exc:  # WorkerProtocolError and anything odd from a bad frame
        worker.kill()
        return failed("crashed", f"worker broke the protocol: {exc}", usage_since(t0))
    if not isinstance(reply, dict):
        worker.kill()
        return failed("crashed", "worker sent a reply that is not a map", usage_since(t0))
    return reply
