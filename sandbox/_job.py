"""What a caller hands the sandbox and what it gets back: a job's resource
:class:`Limits`, the :class:`JobRequest` and the :class:`Outcome`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

import protocol

from ._cancel import RunCancel


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-job resource limits."""

    wall_ms: int = 60_000
    cpu_s: int = 60
    memory_mb: int = 4096  # address space of the worker (and its cgroup memory where given)
    output_bytes: int = 64 * 1024 * 1024
    file_bytes: int = 16 * 1024 * 1024  # largest file the job may write
    open_files: int = 256
    processes: int = 256  # pids cgroup (RLIMIT_NPROC as a fallback)


@dataclass(frozen=True, slots=True)
class JobRequest:
    """One job: the model bytes, the inputs by name (in the model's positional order for
    TorchScript), and how to run it. ``owner`` set: the worker may stay warm for that owner."""

    runtime: str
    model: bytes
    inputs: Mapping[str, npt.NDArray[np.generic]]
    owner: bytes | None = None
    threads: int = 1
    graph_opt_level: str = "extended"
    execution_provider: str = "CPUExecutionProvider"
    limits: Limits | None = None
    trusted: bool = False
    model_hash: bytes | None = None  # content hash of ``model`` when the caller knows it
    #: Ends the run from another thread (the daemon aborting the job); None: it runs to
    #: its end or its limits.
    cancel: RunCancel | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a job ended: kind (one of protocol.OUTCOMES), message, outputs and usage."""

    kind: str
    message: str
    usage: protocol.Usage
    outputs: dict[str, npt.NDArray[np.generic]] = field(default_factory=dict)
    commitment: bytes = b""
    determinism_class: str = ""
    warm: bool = False
    value: str = ""  # only for test payloads (sandbox.testing)
    #: The runtime's own call in the worker (onnxruntime ``run``, the module call), in µs;
    #: 0 when it did not run. The worker's word: for diagnostics (bench/sandbox.py), never
    #: for usage or billing.
    runtime_us: int = 0

    @property
    def ok(self) -> bool:
        return self.kind == "ok"
