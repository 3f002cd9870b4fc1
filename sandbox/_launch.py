"""Starting a worker process (:class:`Launcher`): its job directory and environment, the
bubblewrap command line, the job cgroup it joins before it runs, its shared region, its
rlimits and the setup message it is sent; it answers once every layer is applied. Workers
start from the pool's spawner threads (``_pool``)."""

from __future__ import annotations

import contextlib
import fcntl
import glob
import itertools
import os
import site
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from . import _cgroup, _ipc, _shm
from ._config import SandboxConfig
from ._job import Limits
from ._layers import bwrap_unshare
from ._leftovers import remove_tree
from ._worker_handle import WorkerHandle, family

_F_SETPIPE_SZ = 1031
_PIPE_SIZE = 1 << 20
_SYSTEM_RO = ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin")
_ETC_RO = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime")
_DEV_RW = ("/dev/null", "/dev/zero", "/dev/urandom", "/dev/random", "/dev/full")


class StartFailed(Exception):
    """A worker could not be started (the message says why)."""


@dataclass(frozen=True, slots=True)
class SpareKey:
    """What a worker is started with (before any job): any job with these settings can
    take a spare worker started for them."""

    runtime: str
    limits: Limits
    threads: int
    execution_provider: str


class Launcher:
    """Starts workers with the layers a sandbox chose: ``uid``/``gid`` the worker user
    (None: the daemon's own), ``bwrap`` bubblewrap's path (None: not used), ``cgroups``
    the writable hierarchy (None: not used); job directories go under ``work``, workers'
    stderr under ``private``."""

    def __init__(
        self,
        config: SandboxConfig,
        *,
        uid: int | None,
        gid: int | None,
        bwrap: str | None,
        landlock: bool,
        seccomp: bool,
        cgroups: _cgroup.CgroupSupport | None,
        work: Path,
        private: Path,
    ) -> None:
        self.config = config
        self._uid = uid
        self._gid = gid
        self._bwrap = bwrap
        self._landlock = landlock
        self._seccomp = seccomp
        self._cg = cgroups
        self._work = work
        self._private = private
        self._counter = itertools.count()

    def ro_paths(self) -> list[str]:
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

    def start(self, skey: SpareKey) -> WorkerHandle:
        """Start a worker and wait until it is ready: every layer applied, no job yet."""
        runtime, limits = skey.runtime, skey.limits
        n = next(self._counter)
        job_dir = self._work / f"job-{os.getpid()}-{n}"
        job_dir.mkdir(mode=0o700)
        if self._uid is not None:
            os.chown(job_dir, self._uid, self._gid if self._gid is not None else -1)
        ro = self.ro_paths()
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
            # numpy's BLAS started a thread pool at import, before the layers went on:
            # seccomp and Landlock confine the threads that exist when they are applied
            # and those started after, and those threads had neither (review round 80,
            # F1). The runtimes start theirs when a model is loaded, after the layers.
            "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }
        argv = [self.config.python, "-I", "-m", "sandbox._worker"]
        # A root daemon whose interpreter the worker user cannot reach (e.g. under /root)
        # starts the worker as root; the worker drops to the worker user before any job
        # data arrives (first thing inside bubblewrap, else right after its imports).
        # With cgroups the worker must be in its group before it (or bubblewrap) forks, so
        # a root shell joins the group and then execs the worker.
        reachable = self._uid is None or _reachable(self.ro_paths(), self._uid)
        root_launch = self._uid is not None and (
            self._bwrap is not None or self._cg is not None or not reachable
        )
        drop_late = root_launch and self._bwrap is None and not reachable
        if self._bwrap is not None:
            argv = _bwrap_prefix(self._bwrap, root_launch, ro, job_dir, gpu_devs) + argv
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
                remove_tree(job_dir)
                raise StartFailed(f"cannot create the job's cgroup: {exc}") from None
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
            remove_tree(job_dir)
            raise StartFailed(f"cannot create the worker's shared memory: {exc}") from None
        stderr = tempfile.TemporaryFile(dir=self._private)  # noqa: SIM115 (closed in destroy)
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
            remove_tree(job_dir)
            raise StartFailed(f"cannot start a worker: {exc}") from None
        worker = WorkerHandle(popen, job_dir, stderr, cgroup, limits, runtime, region)
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
            worker.destroy(self.config.subreaper)
            raise StartFailed(
                f"the worker did not start ({type(exc).__name__}): {worker.stderr_tail()}"
            ) from None
        # The worker's own tree (bubblewrap's init, the interpreter), known before any job
        # code runs: these must be reaped even if they exit before the job ends.
        worker.family |= family(popen.pid)
        worker.layers = dict(ready.get("layers", {})) if isinstance(ready, dict) else {}
        failed = [f"{k}: {v}" for k, v in worker.layers.items() if not v.startswith("ok")]
        if failed:
            worker.destroy(self.config.subreaper)
            raise StartFailed("a sandbox layer failed in the worker: " + "; ".join(failed))
        return worker


def _bwrap_prefix(
    bwrap: str, root_launch: bool, ro: list[str], job_dir: Path, gpu_devs: list[str]
) -> list[str]:
    """The bubblewrap command line that runs the worker: new namespaces, no capabilities
    (but the two to drop to the worker user when ``root_launch``), the system and ``ro``
    read-only, the GPU devices, and the job directory the only writable place."""
    bw = [
        bwrap,
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
        if a not in _SYSTEM_RO and not any(a == r or a.startswith(r + "/") for r in _SYSTEM_RO):
            bw += ["--perms", "0755", "--dir", a]
    for p in (*_ETC_RO, *ro):
        bw += ["--ro-bind-try", p, p]
    for p in ("/sys/devices/system/cpu",):
        bw += ["--ro-bind-try", p, p]
    for p in gpu_devs:
        bw += ["--dev-bind", p, p]
    bw += ["--bind", str(job_dir), str(job_dir), "--chdir", "/", "--"]
    return bw


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
