"""The daemon's side: the one blocking call that runs a job (:class:`Sandbox`).

``Sandbox(config).run(job) -> Outcome`` blocks the calling thread until the job ends; it is
thread-safe. From trio call it as ``await trio.to_thread.run_sync(sandbox.run, job)`` so the
event loop never blocks (it does not use any trio API itself).

A job is checked here (admission), then runs on a worker from the pool (``_pool``: warm
workers and spares) that ``_launch`` started with this machine's layers; ``_run_job`` talks
to the worker, ``_metering`` turns its end into the outcome, ``_worker_handle`` kills and
removes it, and ``_leftovers`` clears what killed daemons left behind.
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

import protocol

from . import _cgroup
from ._admission import ModelInfo, check_inputs, check_model
from ._cancel import RunCancel
from ._config import SandboxConfig
from ._errors import AdmissionError, RunCancelled, SandboxConfigError, UntrustedJobRefused
from ._job import JobRequest, Limits, Outcome
from ._launch import Launcher, SpareKey, StartFailed
from ._layers import NOBODY, Layer, probe_layers
from ._leftovers import lock_dir, remove_tree, sweep_leftovers
from ._metering import failed, usage_since
from ._pool import WarmKey, WorkerPool
from ._run_job import run_job
from ._tensors import dtype_code
from ._worker_handle import WorkerHandle

_PR_SET_CHILD_SUBREAPER = 36


class Sandbox:
    """Runs jobs in isolated worker processes. Thread-safe; ``close()`` when done."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config = config or SandboxConfig()
        if config.pool_size < 1:
            raise SandboxConfigError("pool_size must be at least 1")
        if config.worker_cpus is not None:
            own = os.sched_getaffinity(0)
            if not config.worker_cpus or not config.worker_cpus <= own:
                raise SandboxConfigError(
                    f"worker_cpus {sorted(config.worker_cpus)} must be a non-empty set of the "
                    f"CPUs this daemon may use: {sorted(own)}"
                )
        root = os.geteuid() == 0
        uid = config.worker_uid if config.worker_uid is not None else (NOBODY if root else None)
        gid = config.worker_gid if config.worker_gid is not None else (NOBODY if root else None)
        if not root and uid not in (None, os.geteuid()):
            raise SandboxConfigError(
                "only a daemon running as root can run workers as another user"
            )
        if root and uid == 0:
            raise SandboxConfigError("workers must not run as root: set worker_uid to a user")
        self._uid = uid if root else None
        self._gid = gid if root else None
        self.layers: tuple[Layer, ...] = probe_layers(uid=self._uid, gid=self._gid)
        avail = {layer.name: layer for layer in self.layers if layer.available}
        self._bwrap = shutil.which("bwrap") if config.use_bwrap and "bubblewrap" in avail else None
        self._landlock = config.use_landlock and "landlock" in avail
        self._seccomp = config.use_seccomp and "seccomp" in avail
        self._cg = _cgroup.probe() if config.use_cgroups and "cgroups" in avail else None
        #: Job cgroups left by daemons that were killed, removed at start.
        self.stale_cgroups_removed = _cgroup.sweep_stale(self._cg) if self._cg is not None else 0
        used = {
            "bubblewrap": self._bwrap is not None,
            "landlock": self._landlock,
            "seccomp": self._seccomp,
        }
        self.blocks_network = any(
            used.get(layer.name, False) and layer.blocks_network for layer in self.layers
        )
        #: Temporary directories of sandboxes killed before their clean-up, removed now.
        self.leftovers_removed = sweep_leftovers()
        self._own_tmp = config.work_dir is None
        pid = os.getpid()
        self._work = Path(config.work_dir or tempfile.mkdtemp(prefix=f"aimx-sandbox-{pid}-"))
        self._work.mkdir(parents=True, exist_ok=True)
        os.chmod(self._work, 0o711)
        self._private = Path(tempfile.mkdtemp(prefix=f"aimx-sandbox-private-{pid}-"))
        # held while this sandbox lives: sweep_leftovers never takes a live one's
        self._dir_locks = [lock_dir(self._private)]
        if self._own_tmp:
            self._dir_locks.append(lock_dir(self._work))
        launcher = Launcher(
            config,
            uid=self._uid,
            gid=self._gid,
            bwrap=self._bwrap,
            landlock=self._landlock,
            seccomp=self._seccomp,
            cgroups=self._cg,
            work=self._work,
            private=self._private,
        )
        self._pool = WorkerPool(config, launcher.start)
        self._admission_lock = threading.Lock()
        self._admission_cache: dict[bytes, ModelInfo] = {}
        if config.subreaper and sys.platform == "linux":
            ctypes.CDLL(None).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)

    @property
    def _idle(self) -> list[tuple[WarmKey, WorkerHandle]]:
        """The pool's idle warm workers, least recently used first (tests look at them)."""
        return self._pool.idle

    # --- public ------------------------------------------------------------------------

    def layers_in_use(self) -> list[str]:
        names = ["process"]
        if self._uid is not None:
            names.append("user")
        if self._seccomp:
            names.append("seccomp")
        if self._landlock:
            names.append("landlock")
        if self._bwrap:
            names.append("bubblewrap")
        if self._cg is not None:
            names.append("cgroups")
        return names

    def run(self, job: JobRequest) -> Outcome:
        """Run one job to its end and return its outcome (blocking; see the module doc)."""
        limits = job.limits or self.config.limits
        if (
            not job.trusted
            and not self.blocks_network
            and not (self.config.allow_untrusted_without_network_block)
        ):
            raise UntrustedJobRefused(
                "no isolation layer that blocks the network is available (seccomp, Landlock "
                "ABI 4+ or bubblewrap); untrusted jobs are refused — run `aimx sandbox check`"
            )
        if job.runtime not in protocol.RUNTIMES:
            return failed("rejected", f"unknown runtime {job.runtime!r}; use onnx or torchscript")
        if not 1 <= job.threads <= 256:
            return failed("rejected", "threads must be between 1 and 256")
        if job.graph_opt_level not in ("disabled", "basic", "extended", "all"):
            return failed("rejected", f"unknown graph optimization level {job.graph_opt_level!r}")
        try:
            if not all(type(k) is str and type(v) is np.ndarray for k, v in job.inputs.items()):
                inputs = {str(k): np.asarray(v) for k, v in job.inputs.items()}
                if inputs.keys() != set(job.inputs):
                    raise AdmissionError("input names must be strings")
                job = dataclasses.replace(job, inputs=inputs)
            model_hash = job.model_hash or protocol.content_hash(job.model)
            if job.runtime == "onnx":
                info = self._admitted(model_hash, job.model)
                check_inputs(info, job.inputs, self.config.admission)
            else:
                for name, array in job.inputs.items():
                    dtype_code(array.dtype)
                    if not isinstance(name, str):
                        raise AdmissionError("input names must be strings")
        except AdmissionError as exc:
            return failed("rejected", str(exc))
        except (ValueError, TypeError) as exc:
            return failed("rejected", f"bad input: {exc}")
        key: WarmKey | None = None
        if job.owner is not None:
            key = (
                job.owner,
                model_hash,
                job.runtime,
                job.threads,
                job.graph_opt_level,
                job.execution_provider,
                limits,
            )
        request = {
            "op": "run",
            "names": list(job.inputs),
            "max_output_bytes": limits.output_bytes,
            "cpu_s": limits.cpu_s,
        }
        return self._execute(job, key, limits, request)

    def _admitted(self, model_hash: bytes, model: bytes) -> ModelInfo:
        """Admission of a model, remembered by content hash (a few recent models)."""
        with self._admission_lock:
            info = self._admission_cache.get(model_hash)
        if info is not None:
            return info
        info = check_model(model, self.config.admission)
        with self._admission_lock:
            self._admission_cache[model_hash] = info
            while len(self._admission_cache) > 64:
                del self._admission_cache[next(iter(self._admission_cache))]
        return info

    def run_python(
        self,
        source: str,
        name: str,
        limits: Limits | None = None,
        cancel: RunCancel | None = None,
        threads: int = 1,
    ) -> Outcome:
        """Run function ``name`` defined in ``source`` in a cold worker with a real job's
        layers (started as for a job of ``threads`` threads). For the containment tests
        only (``sandbox.testing``); never for jobs."""
        limits = limits or self.config.limits
        job = JobRequest(
            runtime="python", model=b"", inputs={}, trusted=False, cancel=cancel, threads=threads
        )
        request = {"op": "python", "source": source, "name": name, "cpu_s": limits.cpu_s}
        return self._execute(job, None, limits, request)

    def prepare(
        self,
        runtime: str = "onnx",
        *,
        limits: Limits | None = None,
        threads: int = 1,
        execution_provider: str = "CPUExecutionProvider",
    ) -> bool:
        """Have a spare worker ready for jobs with these settings (start one and wait for it
        if there is none). False when spares are off (``spare_workers = 0``) or it failed."""
        if self.config.spare_workers < 1:
            return False
        skey = SpareKey(runtime, limits or self.config.limits, threads, execution_provider)
        return self._pool.prepare(skey)

    def close(self) -> None:
        """Stop every idle worker and remove the job directories."""
        self._pool.close()
        remove_tree(self._private)
        if self._own_tmp:
            remove_tree(self._work)
        for fd in self._dir_locks:
            os.close(fd)
        self._dir_locks = []

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- one job -----------------------------------------------------------------------

    def _execute(
        self,
        job: JobRequest,
        key: WarmKey | None,
        limits: Limits,
        request: dict[str, Any],
    ) -> Outcome:
        """Run ``request`` on a worker: a warm one for ``key``, else a spare or a new one;
        the worker goes back to the pool warm if the job let it, else it is destroyed."""
        started = time.monotonic()
        cancel = job.cancel
        try:
            worker = self._pool.acquire(key, cancel)
        except RunCancelled as exc:
            return failed("crashed", str(exc), usage_since(started))
        warm = worker is not None
        keep = False
        skey = None if warm else SpareKey(job.runtime, limits, job.threads, job.execution_provider)
        try:
            if skey is not None:
                worker = self._pool.take_spare(skey)
                if worker is None:
                    try:
                        worker = self._pool.spawn(skey)
                    except StartFailed as exc:
                        return failed("crashed", str(exc), usage_since(started))
            assert worker is not None
            if cancel is not None and not cancel.attach(worker):
                return failed("crashed", "the run was cancelled", usage_since(started))
            if key is None and not warm:
                # Started with the warm CPU budget as its hard limit: a worker that will not
                # stay gets the tight one from its first request.
                request = {**request, "cpu_hard": limits.cpu_s + 2}
            outcome, keep = run_job(
                worker,
                job,
                limits,
                request,
                keep_warm=key is not None,
                warm=warm,
                admission=self.config.admission,
                via_bwrap=self._bwrap is not None,
            )
            return outcome if outcome.warm == warm else dataclasses.replace(outcome, warm=warm)
        finally:
            if cancel is not None:
                cancel.detach()  # before the worker is reaped: no kill after that
            self._pool.release(worker if keep else None, key)
            if worker is not None and not keep:
                self._pool.destroy(worker)
            if skey is not None:
                self._pool.replenish(skey)
