"""The daemon's side: a pool of worker processes and the one blocking call that runs a job.

``Sandbox(config).run(job) -> Outcome`` blocks the calling thread until the job ends; it is
thread-safe. From trio call it as ``await trio.to_thread.run_sync(sandbox.run, job)`` so the
event loop never blocks (it does not use any trio API itself).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import fcntl
import glob
import itertools
import os
import re
import shutil
import signal
import site
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt

import protocol

from . import _cgroup, _ipc, _shm
from ._admission import AdmissionLimits, ModelInfo, check_inputs, check_model
from ._errors import AdmissionError, SandboxConfigError, UntrustedJobRefused
from ._layers import NOBODY, Layer, bwrap_unshare, probe_layers
from ._procfs import all_pids, pid_alive, read_stat
from ._tensors import commitment_of, dtype_code, raw_data_hash

_PR_SET_CHILD_SUBREAPER = 36
_F_SETPIPE_SZ = 1031
_PIPE_SIZE = 1 << 20
_SYSTEM_RO = ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin")
_ETC_RO = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime")
_DEV_RW = ("/dev/null", "/dev/zero", "/dev/urandom", "/dev/random", "/dev/full")
_MAX_REPLY = 16 * 1024 * 1024  # control frames only: tensors travel in shared memory


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


_ZERO = protocol.Usage(cpu_ms=0, wall_ms=0, peak_memory_kb=0, gpu_ms=0)

#: A sandbox's temporary directories (``tempfile.mkdtemp`` in the temporary directory):
#: ``aimx-sandbox-<daemon pid>-XXXX`` (job directories) and
#: ``aimx-sandbox-private-<daemon pid>-XXXX`` (workers' stderr).
_TMP_NAME = re.compile(r"aimx-sandbox-(?:private-)?([0-9]+)-[A-Za-z0-9_]+")
#: A leftover directory younger than this is kept (it may be a starting sandbox's).
LEFTOVER_AFTER_S = 60.0


def _lock_dir(path: Path) -> int:
    """Hold an exclusive ``flock`` on directory ``path`` while the sandbox lives (released
    by the kernel when the process dies); returns the descriptor."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def sweep_leftovers(directory: Path | str | None = None) -> int:
    """Remove the temporary directories of sandboxes whose daemon is gone (killed before
    its clean-up, ``kill -9`` say); the number removed.

    In ``directory`` (the temporary directory by default), a directory named as above is
    removed only if it is no link, its owner is this user, its pid is not a live process,
    it is older than a minute, and no process holds its ``flock`` (a live sandbox holds
    one on each of its directories: that covers a daemon in another pid namespace that
    shares the temporary directory, whose pid means nothing here)."""
    base = Path(directory if directory is not None else tempfile.gettempdir())
    removed = 0
    now = time.time()
    uid = os.geteuid()
    try:
        entries = list(os.scandir(base))
    except OSError:
        return 0
    for entry in entries:
        match = _TMP_NAME.fullmatch(entry.name)
        if match is None or pid_alive(int(match.group(1))):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if not entry.is_dir(follow_symlinks=False) or st.st_uid != uid:
                continue
            if now - st.st_mtime < LEFTOVER_AFTER_S:
                continue
            fd = _lock_dir(Path(entry.path))
        except OSError:  # gone, unreadable, or locked by a live sandbox
            continue
        try:
            shutil.rmtree(entry.path, ignore_errors=True)
        finally:
            os.close(fd)
        if not os.path.lexists(entry.path):
            removed += 1
    return removed


@dataclass(frozen=True, slots=True)
class _SpareKey:
    """What a worker is started with (before any job): any job with these settings can
    take a spare worker started for them."""

    runtime: str
    limits: Limits
    threads: int
    execution_provider: str


class _Worker:
    """A started worker process and what the daemon knows about it."""

    def __init__(
        self,
        popen: subprocess.Popen[bytes],
        job_dir: Path,
        stderr: IO[bytes],
        cgroup: _cgroup.JobCgroup | None,
        limits: Limits,
        runtime: str,
        region: _shm.HostRegion,
    ) -> None:
        self.popen = popen
        self.region = region
        self.job_dir = job_dir
        # Listing through a directory fd skips the path walk on every warm job.
        self.job_fd: int | None = None
        with contextlib.suppress(OSError):
            self.job_fd = os.open(job_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.stderr = stderr
        self.cgroup = cgroup
        self.limits = limits
        self.runtime = runtime
        self.layers: dict[str, str] = {}
        self.det_class = ""
        self.loaded = False
        self.status: int | None = None
        self.rusage: Any = None
        # The cgroup's CPU time when the current job began (None: not measured).
        self.cpu_base_ns: int | None = None
        # The lowest task count of its cgroup since the process list showed it alone.
        self.tasks_alone: int | None = None
        self.family: set[int] = set()  # every process seen in the worker's tree or group
        assert popen.stdin is not None and popen.stdout is not None
        self.wfd = popen.stdin.fileno()
        self.rfd = popen.stdout.fileno()

    def stderr_tail(self) -> str:
        try:
            self.stderr.seek(0, os.SEEK_END)
            size = self.stderr.tell()
            self.stderr.seek(max(0, size - 600))
            return self.stderr.read().decode("utf-8", "replace").strip()
        except (OSError, ValueError):
            return ""


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
        self._dir_locks = [_lock_dir(self._private)]
        if self._own_tmp:
            self._dir_locks.append(_lock_dir(self._work))
        self._cond = threading.Condition()
        self._running = 0
        # Idle warm workers, least recently used first; several may share a key (one
        # owner's jobs run concurrently), the pool size bounds them all.
        self._idle: list[tuple[tuple[object, ...], _Worker]] = []
        self._spares: dict[_SpareKey, _Worker] = {}  # never ran a job; insertion order = LRU
        self._starting: dict[_SpareKey, int] = {}  # spares being started, by key
        self._counter = itertools.count()
        # Workers are started from these long-lived threads only: a parent-death signal
        # (the worker's and bubblewrap's) fires when the *thread* that forked it exits, and
        # callers' threads (trio.to_thread's, say) come and go.
        self._spawner = ThreadPoolExecutor(
            max_workers=config.pool_size + max(0, config.spare_workers),
            thread_name_prefix="aimx-sandbox-spawn",
        )
        self._admission_cache: dict[bytes, ModelInfo] = {}
        self._closed = False
        if config.subreaper and sys.platform == "linux":
            ctypes.CDLL(None).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)

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
            return _failed("rejected", f"unknown runtime {job.runtime!r}; use onnx or torchscript")
        if not 1 <= job.threads <= 256:
            return _failed("rejected", "threads must be between 1 and 256")
        if job.graph_opt_level not in ("disabled", "basic", "extended", "all"):
            return _failed("rejected", f"unknown graph optimization level {job.graph_opt_level!r}")
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
            return _failed("rejected", str(exc))
        except (ValueError, TypeError) as exc:
            return _failed("rejected", f"bad input: {exc}")
        key: tuple[object, ...] | None = None
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
        with self._cond:
            info = self._admission_cache.get(model_hash)
        if info is not None:
            return info
        info = check_model(model, self.config.admission)
        with self._cond:
            self._admission_cache[model_hash] = info
            while len(self._admission_cache) > 64:
                del self._admission_cache[next(iter(self._admission_cache))]
        return info

    def run_python(self, source: str, name: str, limits: Limits | None = None) -> Outcome:
        """Run function ``name`` defined in ``source`` in a cold worker with a real job's
        layers. For the containment tests only (``sandbox.testing``); never for jobs."""
        limits = limits or self.config.limits
        job = JobRequest(runtime="python", model=b"", inputs={}, trusted=False)
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
        skey = _SpareKey(runtime, limits or self.config.limits, threads, execution_provider)
        with self._cond:
            if self._closed:
                raise SandboxConfigError("the sandbox is closed")
            start = skey not in self._spares and not self._starting.get(skey)
            if start:
                self._starting[skey] = 1
        if start:
            self._spawner.submit(self._start_spare, skey).result()
        with self._cond:
            end = time.monotonic() + self.config.startup_timeout_s + 5
            while self._starting.get(skey) and time.monotonic() < end:
                self._cond.wait(0.5)
            return skey in self._spares

    def close(self) -> None:
        """Stop every idle worker and remove the job directories."""
        with self._cond:
            self._closed = True
            end = time.monotonic() + self.config.startup_timeout_s + 5
            while self._starting and time.monotonic() < end:  # bounded by the start timeout
                self._cond.wait(0.5)
            idle = [*(w for _, w in self._idle), *self._spares.values()]
            self._idle.clear()
            self._spares.clear()
        for w in idle:
            self._destroy(w)
        self._spawner.shutdown(wait=True)
        shutil.rmtree(self._private, ignore_errors=True)
        if self._own_tmp:
            shutil.rmtree(self._work, ignore_errors=True)
        for fd in self._dir_locks:
            os.close(fd)
        self._dir_locks = []

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- pool --------------------------------------------------------------------------

    def _acquire(self, key: tuple[object, ...] | None) -> _Worker | None:
        """A warm worker for ``key`` (taken out of the idle set), or None; reserves a slot."""
        evict: list[_Worker] = []
        with self._cond:
            if self._closed:
                raise SandboxConfigError("the sandbox is closed")
            warm = self._take_idle(key)
            while warm is None and self._running + len(self._idle) >= self.config.pool_size:
                if self._idle:
                    evict.append(self._idle.pop(0)[1])  # the least recently used
                    continue
                self._cond.wait()
                warm = self._take_idle(key)
            self._running += 1
        for w in evict:
            self._destroy(w)
        return warm

    def _take_idle(self, key: tuple[object, ...] | None) -> _Worker | None:
        """The most recently used idle worker for ``key``, taken out of the idle list."""
        if key is None:
            return None
        for i in range(len(self._idle) - 1, -1, -1):
            if self._idle[i][0] == key:
                return self._idle.pop(i)[1]
        return None

    def _release(self, worker: _Worker | None, key: tuple[object, ...] | None) -> None:
        destroy: list[_Worker] = []
        with self._cond:
            self._running -= 1
            if worker is not None and key is not None and not self._closed:
                self._idle.append((key, worker))
            elif worker is not None:
                destroy.append(worker)
            self._cond.notify()
        for w in destroy:
            self._destroy(w)

    # --- one job -----------------------------------------------------------------------

    def _execute(
        self,
        job: JobRequest,
        key: tuple[object, ...] | None,
        limits: Limits,
        request: dict[str, Any],
    ) -> Outcome:
        started = time.monotonic()
        worker = self._acquire(key)
        warm = worker is not None
        keep = False
        skey = None if warm else _SpareKey(job.runtime, limits, job.threads, job.execution_provider)
        try:
            if skey is not None:
                worker = self._take_spare(skey)
                if worker is None:
                    try:
                        worker = self._spawn(skey)
                    except _StartFailed as exc:
                        return _failed("crashed", str(exc), _usage_since(started))
            assert worker is not None
            if key is None and not warm:
                # Started with the warm CPU budget as its hard limit: a worker that will not
                # stay gets the tight one from its first request.
                request = {**request, "cpu_hard": limits.cpu_s + 2}
            outcome, keep = self._job(worker, job, key, limits, request, warm=warm)
            return outcome if outcome.warm == warm else dataclasses.replace(outcome, warm=warm)
        finally:
            self._release(worker if keep else None, key)
            if worker is not None and not keep:
                self._destroy(worker)
            if skey is not None:
                self._replenish(skey)

    # --- spares ------------------------------------------------------------------------

    def _take_spare(self, skey: _SpareKey) -> _Worker | None:
        """A spare started for ``skey`` (waiting for one being started), or None."""
        if self.config.spare_workers < 1:
            return None
        with self._cond:
            end = time.monotonic() + self.config.startup_timeout_s + 5
            while self._starting.get(skey) and skey not in self._spares:
                if time.monotonic() > end:
                    break
                self._cond.wait(0.5)
            spare = self._spares.pop(skey, None)
        if spare is not None and spare.popen.poll() is not None:
            self._destroy(spare)  # died while waiting: start afresh
            return None
        return spare

    def _replenish(self, skey: _SpareKey) -> None:
        """Start a spare for ``skey`` in the background unless there is one already."""
        if self.config.spare_workers < 1:
            return
        with self._cond:
            if self._closed or skey in self._spares or self._starting.get(skey):
                return
            if sum(self._starting.values()) >= self.config.spare_workers:
                return  # as many being started as may be kept: none waits behind them
            self._starting[skey] = 1
        self._spawner.submit(self._start_spare, skey)

    def _start_spare(self, skey: _SpareKey) -> None:
        """Start a spare (``self._starting[skey]`` already counts it) and keep it."""
        worker: _Worker | None = None
        evict: list[_Worker] = []
        try:
            worker = self._spawn_here(skey)
        except _StartFailed:
            worker = None
        finally:
            with self._cond:
                self._starting.pop(skey, None)
                if worker is not None:
                    if self._closed or skey in self._spares:
                        evict.append(worker)
                    else:
                        self._spares[skey] = worker
                        while len(self._spares) > self.config.spare_workers:
                            evict.append(self._spares.pop(next(iter(self._spares))))
                self._cond.notify_all()
            for w in evict:
                self._destroy(w)

    def _job(
        self,
        worker: _Worker,
        job: JobRequest,
        key: tuple[object, ...] | None,
        limits: Limits,
        request: dict[str, Any],
        *,
        warm: bool,
    ) -> tuple[Outcome, bool]:
        """Load (if needed) and run; the outcome and whether the worker may stay warm."""
        usage = _ZERO
        deadline = time.monotonic() + limits.wall_ms / 1000  # load + run, not start-up
        worker.cpu_base_ns = worker.cgroup.cpu_ns() if worker.cgroup is not None else None
        if not worker.loaded and job.runtime != "python":
            load = {
                "op": "load",
                "model": job.model,
                "threads": job.threads,
                "opt_level": job.graph_opt_level,
                "provider": job.execution_provider,
                "admission": asdict(self.config.admission),
                "cpu_s": limits.cpu_s,
            }
            if "cpu_hard" in request:
                load["cpu_hard"] = request["cpu_hard"]
            reply = self._call(worker, load, deadline, limits)
            if isinstance(reply, Outcome):
                return reply, False
            usage = _add(usage, reply)
            if reply.get("op") != "loaded":
                return self._worker_error(reply, usage), False
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
                return _failed("crashed", f"cannot place the inputs in shared memory: {exc}"), False
            request["shm_size"] = worker.region.size
        clean: list[bool] = []

        def check() -> None:
            """A warm worker's check after its job, made while the worker finishes the
            reply rather than after it."""
            if key is not None:
                clean.append(self._clean_after_job(worker))

        reply = self._call(worker, request, deadline, limits, inputs=inputs, on_ran=check)
        if isinstance(reply, Outcome):
            return reply, False
        usage = _add(usage, reply)
        if reply.get("op") != "result":
            return self._worker_error(reply, usage), False
        try:
            outputs, hashed = worker.region.read_outputs(
                reply.get("outputs"), limits.output_bytes, digest=raw_data_hash
            )
        except _shm.MalformedOutputs as exc:
            self._kill(worker)
            return _failed("crashed", f"worker sent malformed outputs: {exc}", usage), False
        keep = key is not None and (clean[0] if clean else self._clean_after_job(worker))
        outcome = Outcome(
            kind="ok",
            message="",
            usage=usage,
            outputs=outputs,
            commitment=commitment_of(hashed) if hashed else b"",
            determinism_class=worker.det_class or str(reply.get("class", "")),
            warm=warm,
            value=str(reply.get("value", "")),
            runtime_us=_runtime_us(reply, usage),
        )
        return outcome, keep

    def _worker_error(self, reply: dict[str, Any], usage: protocol.Usage) -> Outcome:
        kind = str(reply.get("kind", "runtime_error"))
        if kind not in protocol.OUTCOMES or kind == "ok":
            kind = "runtime_error"
        return _failed(kind, str(reply.get("message", ""))[:1000], usage)

    def _call(
        self,
        worker: _Worker,
        request: dict[str, Any],
        deadline: float,
        limits: Limits,
        *,
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
            self._kill(worker)
            return self._ended(worker, t0, limits, timed_out=True)
        except (_ipc.WorkerGone, BrokenPipeError, ConnectionResetError):
            self._kill(worker)
            return self._ended(worker, t0, limits, timed_out=False)
        except Exception as exc:  # WorkerProtocolError and anything odd from a bad frame
            self._kill(worker)
            return _failed("crashed", f"worker broke the protocol: {exc}", _usage_since(t0))
        if not isinstance(reply, dict):
            self._kill(worker)
            return _failed("crashed", "worker sent a reply that is not a map", _usage_since(t0))
        return reply

    def _ended(self, worker: _Worker, t0: float, limits: Limits, *, timed_out: bool) -> Outcome:
        """Classify a worker that died or was killed."""
        self._wait(worker)
        ru = worker.rusage
        cpu_s = (ru.ru_utime + ru.ru_stime) if ru is not None else 0.0
        peak_kb = int(ru.ru_maxrss) if ru is not None else 0
        if worker.cgroup is not None:
            peak_kb = max(peak_kb, worker.cgroup.peak_bytes() // 1024)
            # The kernel's count of the job's CPU time: the rusage above is bubblewrap's
            # when it runs the worker, and misses a worker killed under it.
            used_ns = worker.cgroup.cpu_ns()
            if used_ns is not None and worker.cpu_base_ns is not None:
                cpu_s = max(0, used_ns - worker.cpu_base_ns) / 1e9
        usage = protocol.Usage(
            cpu_ms=int(cpu_s * 1000),
            wall_ms=int((time.monotonic() - t0) * 1000),
            peak_memory_kb=peak_kb,
            gpu_ms=0,
        )
        sig = _signal_of(worker.status, self._bwrap is not None)
        oom = worker.cgroup is not None and worker.cgroup.oom_killed()
        if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu_s >= limits.cpu_s - 0.5):
            usage = protocol.Usage(
                cpu_ms=max(usage.cpu_ms, limits.cpu_s * 1000),
                wall_ms=usage.wall_ms,
                peak_memory_kb=usage.peak_memory_kb,
                gpu_ms=0,
            )
            return _failed("cpu_limit", f"the job used its CPU limit of {limits.cpu_s} s", usage)
        if timed_out:
            return _failed(
                "timeout", f"the job did not finish within {limits.wall_ms} ms (killed)", usage
            )
        if sig == signal.SIGXFSZ:
            return _failed(
                "output_limit", f"the job wrote a file beyond {limits.file_bytes} bytes", usage
            )
        if oom:
            return _failed(
                "memory_limit",
                f"the job exceeded its memory limit of {limits.memory_mb} MiB",
                usage,
            )
        tail = worker.stderr_tail()
        how = f"signal {_signal_name(sig)}" if sig else f"exit status {worker.status}"
        return _failed("crashed", f"the worker died ({how}){': ' + tail if tail else ''}", usage)

    # --- processes ---------------------------------------------------------------------

    def _ro_paths(self) -> list[str]:
        paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
        paths.update(site.getsitepackages())
        import protocol as _p

        for mod in (_p, sys.modules[__name__.rsplit(".", 1)[0]]):
            if mod.__file__:
                paths.add(str(Path(mod.__file__).resolve().parent))
        exe = Path(self.config.python)
        paths.add(str(exe.parent))
        paths.add(str(exe.resolve().parent.parent))
        return sorted(p for p in paths if p and os.path.exists(p))

    def _spawn(self, skey: _SpareKey) -> _Worker:
        """Start a worker (from a spawner thread) and wait until it is ready."""
        return self._spawner.submit(self._spawn_here, skey).result()

    def _spawn_here(self, skey: _SpareKey) -> _Worker:
        """Start a worker and wait until it is ready: every layer applied, no job yet."""
        runtime, limits = skey.runtime, skey.limits
        n = next(self._counter)
        job_dir = self._work / f"job-{os.getpid()}-{n}"
        job_dir.mkdir(mode=0o700)
        if self._uid is not None:
            os.chown(job_dir, self._uid, self._gid if self._gid is not None else -1)
        ro = self._ro_paths()
        gpu = skey.execution_provider == "CUDAExecutionProvider"
        gpu_devs = sorted(glob.glob("/dev/nvidia*")) if gpu else []
        env = {
            "ORT_DISABLE_TELEMETRY": "1",
            "MALLOC_ARENA_MAX": "2",
            "TMPDIR": str(job_dir),
            "HOME": str(job_dir),
            "PATH": "/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "OMP_NUM_THREADS": str(skey.threads),
        }
        argv = [self.config.python, "-I", "-m", "sandbox._worker"]
        # A root daemon whose interpreter the worker user cannot reach (e.g. under /root)
        # starts the worker as root; the worker drops to the worker user before any job
        # data arrives (first thing inside bubblewrap, else right after its imports).
        # With cgroups the worker must be in its group before it (or bubblewrap) forks, so
        # a root shell joins the group and then execs the worker.
        reachable = self._uid is None or _reachable(self._ro_paths(), self._uid)
        root_launch = self._uid is not None and (
            self._bwrap is not None or self._cg is not None or not reachable
        )
        drop_late = root_launch and self._bwrap is None and not reachable
        if self._bwrap is not None:
            bw = [
                self._bwrap,
                *bwrap_unshare(root_launch),
                "--die-with-parent",
                "--new-session",
                "--cap-drop",
                "ALL",
            ]
            if root_launch:  # the worker drops to the worker user itself, first thing
                bw += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
            bw += ["--proc", "/proc", "--dev", "/dev"]
            for p in _SYSTEM_RO:
                if os.path.islink(p):
                    bw += ["--symlink", os.readlink(p), p]
                elif os.path.exists(p):
                    bw += ["--ro-bind", p, p]
            # Directories bwrap creates for mount points are 0700: make them traversable.
            targets = [*ro, str(job_dir), *_ETC_RO]
            ancestors = sorted(
                {str(a) for t in targets for a in Path(t).parents if str(a) != "/"},
                key=lambda a: (a.count("/"), a),
            )
            for a in ancestors:
                if a not in _SYSTEM_RO and not any(
                    a == r or a.startswith(r + "/") for r in _SYSTEM_RO
                ):
                    bw += ["--perms", "0755", "--dir", a]
            for p in (*_ETC_RO, *ro):
                bw += ["--ro-bind-try", p, p]
            for p in ("/sys/devices/system/cpu",):
                bw += ["--ro-bind-try", p, p]
            for p in gpu_devs:
                bw += ["--dev-bind", p, p]
            bw += ["--bind", str(job_dir), str(job_dir), "--chdir", "/", "--"]
            argv = bw + argv
        cgroup = None
        if self._cg is not None:
            try:
                cgroup = _cgroup.JobCgroup(
                    self._cg,
                    f"aimx-{os.getpid()}-{n}",
                    limits.memory_mb * 1024 * 1024,
                    limits.processes,
                )
            except OSError as exc:
                shutil.rmtree(job_dir, ignore_errors=True)
                raise _StartFailed(f"cannot create the job's cgroup: {exc}") from None
            procs = cgroup.procs_files()
            join = 'for f in "$@"; do [ "$f" = -- ] && break; echo $$ > "$f" || exit 125; done'
            argv = [
                "/bin/sh",
                "-c",
                join + '; shift $(( $# - NARGS )); exec "$@"'.replace("NARGS", str(len(argv))),
                "sh",
                *procs,
                "--",
                *argv,
            ]
        try:
            region = _shm.HostRegion(f"aimx-job-{n}", _shm.region_size(limits.output_bytes))
        except OSError as exc:
            if cgroup is not None:
                cgroup.remove()
            shutil.rmtree(job_dir, ignore_errors=True)
            raise _StartFailed(f"cannot create the worker's shared memory: {exc}") from None
        stderr = tempfile.TemporaryFile(dir=self._private)  # noqa: SIM115 (closed in _destroy)
        try:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=env,
                cwd=job_dir,
                start_new_session=True,
                user=None if root_launch else self._uid,
                group=None if root_launch else self._gid,
                extra_groups=[] if self._uid is not None and not root_launch else None,
                close_fds=True,
                pass_fds=(region.fd,),
            )
        except OSError as exc:
            stderr.close()
            region.close()
            if cgroup is not None:
                cgroup.remove()
            shutil.rmtree(job_dir, ignore_errors=True)
            raise _StartFailed(f"cannot start a worker: {exc}") from None
        worker = _Worker(popen, job_dir, stderr, cgroup, limits, runtime, region)
        for fd in (worker.wfd, worker.rfd):  # fewer round trips for large tensors
            with contextlib.suppress(OSError):
                fcntl.fcntl(fd, _F_SETPIPE_SZ, _PIPE_SIZE)
        mem = limits.memory_mb * 1024 * 1024
        # Hard CPU limit: a warm worker's lifetime budget. A worker that serves only one job
        # lowers it to that job's cpu_s + 2 with its first request (``cpu_hard``).
        rlimits = {
            "as": [mem, mem],
            "cpu": [limits.cpu_s, max(limits.cpu_s + 2, self.config.warm_cpu_budget_s)],
            "fsize": [limits.file_bytes, limits.file_bytes],
            "nofile": [limits.open_files, limits.open_files],
            "core": [0, 0],
        }
        if self._uid is not None and cgroup is None:
            # RLIMIT_NPROC counts every task of the worker user, so it is only the fallback
            # for the pids cgroup (which counts this worker's tasks alone).
            rlimits["nproc"] = [limits.processes, limits.processes]
        gpu_ro = ["/proc/driver/nvidia"] if gpu else []
        setup = {
            "drop": [self._uid, self._gid if self._gid is not None else self._uid]
            if root_launch
            else None,
            "drop_late": drop_late,
            "runtime": runtime,
            "job_dir": str(job_dir),
            "rlimits": rlimits,
            "landlock": self._landlock,
            "seccomp": self._seccomp,
            "ro_paths": [*_SYSTEM_RO, *_ETC_RO, *ro, "/proc", "/sys", *gpu_ro],
            "rw_paths": [str(job_dir), *_DEV_RW, *gpu_devs],
            "shm": [region.fd, region.size],
            "cpus": None if self.config.worker_cpus is None else sorted(self.config.worker_cpus),
        }
        deadline = time.monotonic() + self.config.startup_timeout_s
        try:
            _ipc.send(worker.wfd, setup)
            ready = _ipc.recv(worker.rfd, max_bytes=1 << 20, deadline=deadline)
        except Exception as exc:
            self._destroy(worker)
            raise _StartFailed(
                f"the worker did not start ({type(exc).__name__}): {worker.stderr_tail()}"
            ) from None
        # The worker's own tree (bubblewrap's init, the interpreter), known before any job
        # code runs: these must be reaped even if they exit before the job ends.
        worker.family |= _family(popen.pid)
        worker.layers = dict(ready.get("layers", {})) if isinstance(ready, dict) else {}
        failed = [f"{k}: {v}" for k, v in worker.layers.items() if not v.startswith("ok")]
        if failed:
            self._destroy(worker)
            raise _StartFailed("a sandbox layer failed in the worker: " + "; ".join(failed))
        return worker

    def _clean_after_job(self, worker: _Worker) -> bool:
        """Whether a warm worker can serve again: alive, alone in its cgroup (or, without
        one, its process group), empty job dir."""
        if worker.popen.poll() is not None:
            return False
        if worker.cgroup is not None:
            # Every process of the job is in the cgroup. Its task count is one pread; its
            # process list is a costly read on cgroup v1, made only when the count is
            # above the lowest seen since the list last showed the worker alone (a
            # runtime's threads started lazily make it grow too).
            tasks = worker.cgroup.tasks()
            if tasks is None or worker.tasks_alone is None or tasks > worker.tasks_alone:
                members = worker.cgroup.members()
                if members is None or len(members) > (3 if self._bwrap is not None else 1):
                    return False
            worker.tasks_alone = tasks
        elif self._bwrap is None and len(_group_members(worker.popen.pid)) > 1:
            return False
        try:
            if not os.listdir(worker.job_dir if worker.job_fd is None else worker.job_fd):
                return True
            for entry in worker.job_dir.iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        except OSError:
            return False
        return True

    def _kill(self, worker: _Worker) -> None:
        """SIGKILL the worker's process group, its descendants, its session and cgroup."""
        if worker.status is None:
            worker.family |= _family(worker.popen.pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(worker.popen.pid, signal.SIGKILL)
        for pid in worker.family:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if worker.cgroup is not None:
            worker.cgroup.kill_all()

    def _wait(self, worker: _Worker) -> None:
        if worker.status is not None:
            return
        try:
            _, status, ru = os.wait4(worker.popen.pid, 0)
            worker.status = status
            worker.rusage = ru
            worker.popen.returncode = os.waitstatus_to_exitcode(status)
        except ChildProcessError:
            worker.status = worker.popen.returncode if worker.popen.returncode is not None else 0

    def _destroy(self, worker: _Worker) -> None:
        with contextlib.suppress(OSError):
            if worker.popen.poll() is None and worker.status is None:
                with contextlib.suppress(OSError):
                    _ipc.send(worker.wfd, {"op": "exit"})
        self._kill(worker)
        self._wait(worker)
        seen = worker.cgroup.remove() if worker.cgroup is not None else set()
        # What the job left re-parented to us (we are a subreaper) is reaped here.
        _await_gone((worker.family | seen) - {worker.popen.pid}, self.config.subreaper)
        for f in (worker.popen.stdin, worker.popen.stdout, worker.stderr):
            with contextlib.suppress(OSError):
                if f is not None:
                    f.close()
        worker.region.close()
        if worker.job_fd is not None:
            with contextlib.suppress(OSError):
                os.close(worker.job_fd)
        shutil.rmtree(worker.job_dir, ignore_errors=True)


class _StartFailed(Exception):
    pass


def _runtime_us(reply: dict[str, Any], usage: protocol.Usage) -> int:
    """The worker's figure when it is plausible (an integer within its wall time)."""
    value = reply.get("runtime_us")
    if type(value) is not int or not 0 <= value <= (usage.wall_ms + 1) * 1000:
        return 0
    return value


def _failed(kind: str, message: str, usage: protocol.Usage = _ZERO) -> Outcome:
    return Outcome(kind=kind, message=message, usage=usage)


def _usage_since(t0: float) -> protocol.Usage:
    return protocol.Usage(
        cpu_ms=0, wall_ms=int((time.monotonic() - t0) * 1000), peak_memory_kb=0, gpu_ms=0
    )


def _add(usage: protocol.Usage, reply: dict[str, Any]) -> protocol.Usage:
    u = reply.get("usage") or {}
    try:
        return protocol.Usage(
            cpu_ms=usage.cpu_ms + max(0, int(u.get("cpu_ms", 0))),
            wall_ms=usage.wall_ms + max(0, int(u.get("wall_ms", 0))),
            peak_memory_kb=max(usage.peak_memory_kb, max(0, int(u.get("peak_kb", 0)))),
            gpu_ms=usage.gpu_ms + max(0, int(u.get("gpu_ms", 0))),
        )
    except (TypeError, ValueError, AttributeError):
        return usage


def _signal_of(status: int | None, via_bwrap: bool) -> int:
    if status is None:
        return 0
    if os.WIFSIGNALED(status):
        return os.WTERMSIG(status)
    if os.WIFEXITED(status):
        code = os.WEXITSTATUS(status)
        if via_bwrap and 128 < code < 128 + 65:
            return code - 128
    return 0


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:  # a number that is no signal here (an odd exit status through bwrap)
        return str(sig)


def _reachable(paths: list[str], uid: int) -> bool:
    """Whether ``uid`` (not root, no groups) can traverse to every path in ``paths``."""
    for p in paths:
        parts = Path(p).resolve().parts
        cur = Path("/")
        for part in parts[1:]:
            try:
                st = cur.stat()
            except OSError:
                return False
            if st.st_uid != uid and not st.st_mode & 0o001:
                return False
            cur = cur / part
    return True


def _await_gone(pids: set[int], reap: bool, timeout_s: float = 5.0) -> None:
    """Wait (bounded) until each pid is gone, reaping those re-parented to us."""
    me = os.getpid()
    end = time.monotonic() + timeout_s
    left = set(pids)
    while left and time.monotonic() < end:
        for pid in sorted(left):
            stat = read_stat(pid)
            if stat is None:
                left.discard(pid)
                continue
            if reap and stat.ppid == me:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)
                left.discard(pid)
        if left:
            time.sleep(0.002)


def _family(root: int) -> set[int]:
    """Descendants of ``root`` and members of its process group or session."""
    parent: dict[int, int] = {}
    family: set[int] = set()
    for pid in all_pids():
        stat = read_stat(pid)
        if stat is None:
            continue
        parent[pid] = stat.ppid
        if root in (stat.pgrp, stat.session):
            family.add(pid)
    children: dict[int, list[int]] = {}
    for pid, ppid in parent.items():
        children.setdefault(ppid, []).append(pid)
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):  # a tree: each pid is visited once
            todo.append(child)
            family.add(child)
    family.discard(root)
    return family


def _group_members(pgid: int) -> list[int]:
    members = []
    for pid in all_pids():
        stat = read_stat(pid)
        if stat is not None and stat.pgrp == pgid and stat.state != "Z":
            members.append(pid)
    return members
