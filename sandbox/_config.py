"""How a :class:`~sandbox.Sandbox` makes its workers: :class:`SandboxConfig`."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from ._admission import AdmissionLimits
from ._job import Limits


@dataclass(frozen=True, slots=True)
class SandboxConfig:
    """How workers are made. Defaults give every layer this machine has."""

    pool_size: int = 2
    # Workers started ahead of need (layers applied, runtime imported, no job yet), outside
    # the pool: a cold job takes one instead of starting a worker. 0: none.
    spare_workers: int = 1
    warm_cpu_budget_s: int = 3600  # lifetime CPU of a warm worker, then it is replaced
    work_dir: Path | None = None  # job directories live here (default: a fresh temp dir)
    worker_uid: int | None = None  # default: 65534 when the daemon is root, else its own
    worker_gid: int | None = None
    use_bwrap: bool = True
    use_landlock: bool = True
    use_seccomp: bool = True
    use_cgroups: bool = True
    allow_untrusted_without_network_block: bool = False
    startup_timeout_s: float = 60.0
    limits: Limits = field(default_factory=Limits)
    admission: AdmissionLimits = field(default_factory=AdmissionLimits)
    subreaper: bool = True
    python: str = sys.executable
    #: CPUs the workers run on (their affinity, set before the runtime starts its threads;
    #: a job cannot change it: seccomp refuses sched_setaffinity). None: the daemon's own.
    worker_cpus: frozenset[int] | None = None
