"""Test support: job runners without workers, and a way to run hostile code in one.

Job runners (each a :class:`sandbox.JobRunner`, what a daemon runs a contributor's jobs
through), for tests of the code that runs jobs:

- :class:`InProcessRunner` runs ONNX models with onnxruntime in this process: the outputs,
  commitment and determinism class are the sandbox's, without its workers or isolation;
- :class:`SlowRunner` waits before each job of the runner it wraps (a slow contributor);
- :class:`CorruptingRunner` changes one output element of each successful job and commits to
  the changed outputs (a contributor that cheats consistently);
- :class:`FailingRunner` ends every job with the same failed outcome.

:func:`run_payload` runs a Python function inside a worker with exactly a real job's layers:
the containment suite (tests/sandbox/test_containment.py) uses it to show that hostile code
is stopped. The function is sent as source text and called with ``args`` (reprs of plain
values).

Nothing here is reachable from the network or from a job.
"""

from __future__ import annotations

import dataclasses
import inspect
import textwrap
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

import protocol

from ._admission import AdmissionLimits, ModelInfo, check_inputs, check_model
from ._cancel import RunCancel
from ._determinism import determinism_class
from ._errors import AdmissionError
from ._job import JobRequest, Limits, Outcome
from ._onnx_session import GRAPH_OPT_LEVELS, open_session, session_device
from ._runner import JobRunner
from ._sandbox import Sandbox
from ._tensors import output_commitment

__all__ = [
    "CorruptingRunner",
    "FailingRunner",
    "InProcessRunner",
    "SlowRunner",
    "run_payload",
]

_ZERO = protocol.Usage(cpu_ms=0, wall_ms=0, peak_memory_kb=0, gpu_ms=0)


def run_payload(
    sandbox: Sandbox,
    func: Callable[..., object],
    *args: object,
    limits: Limits | None = None,
    cancel: RunCancel | None = None,
    threads: int = 1,
) -> Outcome:
    """Run ``func(*args)`` in a fresh worker of ``sandbox`` (started as for a job of
    ``threads`` threads); the outcome's ``value`` is the ``repr`` of what it returned."""
    source = textwrap.dedent(inspect.getsource(func))
    source += f"\n\ndef __aimx_entry():\n    return {func.__name__}(*{args!r})\n"
    return sandbox.run_python(source, "__aimx_entry", limits, cancel, threads)


# --- job runners -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class _Loaded:
    session: Any
    info: ModelInfo
    output_names: list[str]
    determinism_class: str


class InProcessRunner:
    """Runs ONNX jobs in this process, no worker: right outputs, and the commitment and
    determinism class the sandbox would give them (same session options, same commitment
    code). Checks models and inputs as the sandbox does (``rejected`` outcomes) and
    ``output_bytes`` of the job's limits (or ``limits``); no other limit, and no
    isolation: only for models a test trusts.

    Sessions are kept per model and settings (the ``max_sessions`` used last), so a job of a
    kept model reports ``warm``. ``usage`` has the calling thread's CPU time and the wall
    time of the run; ``peak_memory_kb`` is 0 (not measured). Thread-safe.
    """

    def __init__(
        self,
        *,
        limits: Limits | None = None,
        admission: AdmissionLimits | None = None,
        max_sessions: int = 8,
    ) -> None:
        self.limits = limits or Limits()
        self.admission = admission or AdmissionLimits()
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[tuple[object, ...], _Loaded] = OrderedDict()
        self._lock = threading.Lock()

    def run(self, job: JobRequest) -> Outcome:
        wall0, cpu0 = time.monotonic(), time.thread_time()
        if job.runtime != "onnx":
            return _failed("rejected", f"the in-process runner runs onnx jobs, not {job.runtime!r}")
        if not 1 <= job.threads <= 256:
            return _failed("rejected", "threads must be between 1 and 256")
        if job.graph_opt_level not in GRAPH_OPT_LEVELS:
            return _failed("rejected", f"unknown graph optimization level {job.graph_opt_level!r}")
        try:
            inputs = {str(name): np.asarray(value) for name, value in job.inputs.items()}
            loaded, warm = self._load(job)
            check_inputs(loaded.info, inputs, self.admission)
        except AdmissionError as exc:
            return _failed("rejected", str(exc))
        except (ValueError, TypeError) as exc:
            return _failed("rejected", f"bad input: {exc}")
        began = time.perf_counter()
        try:
            values = loaded.session.run(loaded.output_names, inputs)
        except Exception as exc:  # onnxruntime's errors have no common base
            return _failed("runtime_error", str(exc)[:1000], _usage_since(wall0, cpu0))
        runtime_us = int((time.perf_counter() - began) * 1e6)
        outputs = {n: np.asarray(v) for n, v in zip(loaded.output_names, values, strict=True)}
        usage = _usage_since(wall0, cpu0)
        limit = (job.limits or self.limits).output_bytes
        if sum(array.nbytes for array in outputs.values()) > limit:
            return _failed("output_limit", f"outputs exceed the limit of {limit} bytes", usage)
        return Outcome(
            kind="ok",
            message="",
            usage=usage,
            outputs=outputs,
            commitment=output_commitment(outputs),
            determinism_class=loaded.determinism_class,
            warm=warm,
            runtime_us=runtime_us,
        )

    def _load(self, job: JobRequest) -> tuple[_Loaded, bool]:
        """The job's session, and whether it was kept from an earlier job."""
        model_hash = job.model_hash or protocol.content_hash(job.model)
        key = (model_hash, job.threads, job.graph_opt_level, job.execution_provider)
        with self._lock:
            loaded = self._sessions.get(key)
            if loaded is not None:
                self._sessions.move_to_end(key)
                return loaded, True
        info = check_model(job.model, self.admission)
        session = open_session(
            job.model,
            opt_level=job.graph_opt_level,
            threads=job.threads,
            provider=job.execution_provider,
        )
        loaded = _Loaded(
            session,
            info,
            [output.name for output in session.get_outputs()],
            determinism_class("onnx", session_device(session), job.graph_opt_level),
        )
        with self._lock:
            self._sessions[key] = loaded
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
        return loaded, False


class SlowRunner:
    """Waits ``delay_s`` (blocking the calling thread) before each job, then runs it with
    ``inner``: a contributor that is slow to answer."""

    def __init__(self, inner: JobRunner, delay_s: float) -> None:
        if delay_s < 0:
            raise ValueError("delay_s must not be negative")
        self.inner = inner
        self.delay_s = delay_s

    def run(self, job: JobRequest) -> Outcome:
        if job.cancel is None:
            time.sleep(self.delay_s)
        elif job.cancel.wait(self.delay_s):
            return _failed("crashed", "the run was cancelled")
        return self.inner.run(job)


class CorruptingRunner:
    """Runs each job with ``inner``; on success, adds 1 to the first element of the first
    output (by name) and commits to the changed outputs: a cheating contributor whose
    result is self-consistent, so only a comparison with another replica exposes it.
    Failed outcomes and jobs without outputs pass unchanged."""

    def __init__(self, inner: JobRunner) -> None:
        self.inner = inner

    def run(self, job: JobRequest) -> Outcome:
        outcome = self.inner.run(job)
        if not outcome.ok or not outcome.outputs:
            return outcome
        outputs = dict(outcome.outputs)
        name = sorted(outputs)[0]
        wrong = np.array(outputs[name], copy=True)
        wrong.flat[0] = wrong.flat[0] + 1
        outputs[name] = wrong
        return dataclasses.replace(outcome, outputs=outputs, commitment=output_commitment(outputs))


class FailingRunner:
    """Ends every job with the outcome ``kind`` (one of ``protocol.OUTCOMES`` but ``ok``)
    and ``message``, no usage: a contributor whose runs all fail the same way."""

    def __init__(self, kind: str = "runtime_error", message: str = "the job failed") -> None:
        if kind not in protocol.OUTCOMES or kind == "ok":
            raise ValueError(f"kind must be a failed outcome of {protocol.OUTCOMES}, not {kind!r}")
        self.kind = kind
        self.message = message

    def run(self, job: JobRequest) -> Outcome:
        return _failed(self.kind, self.message)


def _failed(kind: str, message: str, usage: protocol.Usage = _ZERO) -> Outcome:
    return Outcome(kind=kind, message=message, usage=usage)


def _usage_since(wall0: float, cpu0: float) -> protocol.Usage:
    return protocol.Usage(
        cpu_ms=int((time.thread_time() - cpu0) * 1000),
        wall_ms=int((time.monotonic() - wall0) * 1000),
        peak_memory_kb=0,
        gpu_ms=0,
    )


def _conforms(
    sandbox: Sandbox,
    in_process: InProcessRunner,
    slow: SlowRunner,
    corrupting: CorruptingRunner,
    failing: FailingRunner,
) -> list[JobRunner]:
    """Type check only: the sandbox and every runner here are job runners."""
    return [sandbox, in_process, slow, corrupting, failing]
