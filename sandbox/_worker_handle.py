"""The daemon's handle on a started worker process (:class:`WorkerHandle`): its pipes,
shared region, job directory, cgroup and stderr, and what the daemon learns of it; and the
end of a worker: checked clean after a job, killed with everything it started, reaped and
removed. The worker's own side is ``_worker.py``."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import IO, Any

from . import _cgroup, _ipc, _shm
from ._job import Limits
from ._leftovers import remove_tree
from ._procfs import all_pids, read_stat


class WorkerHandle:
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

    def clean_after_job(self, via_bwrap: bool) -> bool:
        """Whether a warm worker can serve again: alive, alone in its cgroup (or, without
        one, its process group), empty job dir. ``via_bwrap``: bubblewrap runs it."""
        if self.popen.poll() is not None:
            return False
        if self.cgroup is not None:
            # Every process of the job is in the cgroup. Its task count is one pread; its
            # process list is a costly read on cgroup v1, made only when the count is
            # above the lowest seen since the list last showed the worker alone (a
            # runtime's threads started lazily make it grow too).
            tasks = self.cgroup.tasks()
            if tasks is None or self.tasks_alone is None or tasks > self.tasks_alone:
                members = self.cgroup.members()
                if members is None or len(members) > (3 if via_bwrap else 1):
                    return False
            self.tasks_alone = tasks
        elif not via_bwrap and len(group_members(self.popen.pid)) > 1:
            return False
        try:
            if not os.listdir(self.job_dir if self.job_fd is None else self.job_fd):
                return True
            for entry in self.job_dir.iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    if not remove_tree(entry):
                        return False
                else:
                    entry.unlink()
        except OSError:
            return False
        return True

    def kill(self) -> None:
        """SIGKILL the worker's process group, its descendants, its session and cgroup."""
        if self.status is None:
            self.family |= family(self.popen.pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        for pid in self.family:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if self.cgroup is not None:
            self.cgroup.kill_all()

    def wait(self) -> None:
        """Reap the worker (once), keeping its wait status and rusage."""
        if self.status is not None:
            return
        try:
            _, status, ru = os.wait4(self.popen.pid, 0)
            self.status = status
            self.rusage = ru
            self.popen.returncode = os.waitstatus_to_exitcode(status)
        except ChildProcessError:
            self.status = self.popen.returncode if self.popen.returncode is not None else 0

    def destroy(self, reap: bool) -> None:
        """Ask the worker to exit, kill what is left of it, reap it and remove its cgroup,
        region and job directory. ``reap``: the daemon is a subreaper, so the processes the
        job left re-parented to it are reaped too."""
        with contextlib.suppress(OSError):
            if self.popen.poll() is None and self.status is None:
                with contextlib.suppress(OSError):
                    _ipc.send(self.wfd, {"op": "exit"})
        self.kill()
        self.wait()
        seen = self.cgroup.remove() if self.cgroup is not None else set()
        # What the job left re-parented to us (we are a subreaper) is reaped here.
        await_gone((self.family | seen) - {self.popen.pid}, reap)
        for f in (self.popen.stdin, self.popen.stdout, self.stderr):
            with contextlib.suppress(OSError):
                if f is not None:
                    f.close()
        self.region.close()
        if self.job_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.job_fd)
        remove_tree(self.job_dir)


def await_gone(pids: set[int], reap: bool, timeout_s: float = 5.0) -> None:
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


def family(root: int) -> set[int]:
    """Descendants of ``root`` and members of its process group or session."""
    parent: dict[int, int] = {}
    members: set[int] = set()
    for pid in all_pids():
        stat = read_stat(pid)
        if stat is None:
            continue
        parent[pid] = stat.ppid
        if root in (stat.pgrp, stat.session):
            members.add(pid)
    children: dict[int, list[int]] = {}
    for pid, ppid in parent.items():
        children.setdefault(ppid, []).append(pid)
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):  # a tree: each pid is visited once
            todo.append(child)
            members.add(child)
    members.discard(root)
    return members


def group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group ``pgid``."""
    members = []
    for pid in all_pids():
        stat = read_stat(pid)
        if stat is not None and stat.pgrp == pgid and stat.state != "Z":
            members.append(pid)
    return members
