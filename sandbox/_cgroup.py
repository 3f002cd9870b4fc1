"""Per-job cgroups (v2, or v1 memory + pids controllers) where the daemon may write them."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from ._procfs import pid_alive

_ROOT = Path("/sys/fs/cgroup")


def _own_paths() -> dict[str, Path]:
    """Controller name -> this process's cgroup directory ("unified" for v2)."""
    out: dict[str, Path] = {}
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, rel = parts
        rel = rel.lstrip("/")
        if controllers == "":
            for base in (_ROOT, _ROOT / "unified"):
                if (base / "cgroup.controllers").exists():
                    out["unified"] = base / rel
                    break
        for c in controllers.split(","):
            if c in ("memory", "pids", "cpuacct"):
                out[c] = _ROOT / c / rel
    return out


def _writable(d: Path) -> bool:
    probe = d / f"aimx-probe-{os.getpid()}"
    try:
        probe.mkdir()
        probe.rmdir()
        return True
    except OSError:
        return False


@dataclass(frozen=True, slots=True)
class CgroupSupport:
    """Where job cgroups can be made: v1 controller dirs, or one v2 dir. On v1 the
    ``cpuacct`` controller is optional: it measures a job's CPU time (v2 always does)."""

    memory: Path | None
    pids: Path | None
    unified: Path | None
    cpuacct: Path | None = None

    @property
    def available(self) -> bool:
        return self.unified is not None or (self.memory is not None and self.pids is not None)

    def describe(self) -> str:
        if self.unified is not None:
            return f"cgroup v2 at {self.unified}"
        if self.available:
            return f"cgroup v1 memory {self.memory}, pids {self.pids}"
        return "no writable memory and pids cgroup (run the daemon as root or delegate a subtree)"


def probe() -> CgroupSupport:
    paths = _own_paths()
    uni = paths.get("unified")
    if uni is not None and (uni / "cgroup.controllers").exists():
        ctl = (uni / "cgroup.controllers").read_text().split()
        if "memory" in ctl and "pids" in ctl and _writable(uni):
            return CgroupSupport(None, None, uni)
    mem, pids = paths.get("memory"), paths.get("pids")
    mem = mem if mem is not None and mem.is_dir() and _writable(mem) else None
    pids = pids if pids is not None and pids.is_dir() and _writable(pids) else None
    acct = paths.get("cpuacct")
    acct = acct if acct is not None and acct.is_dir() and _writable(acct) else None
    return CgroupSupport(mem, pids, None, acct)


_NAME = re.compile(r"aimx-([0-9]+)-[0-9]+")
STALE_AFTER_S = 60.0


def sweep_stale(support: CgroupSupport) -> int:
    """Remove empty job cgroups left by daemons that are gone (killed before their
    clean-up); the number removed.

    Job cgroups are named ``aimx-<daemon pid>-<n>``. One is removed only if that pid is
    not a live process here, no process is in it, and it is older than a minute. Nothing
    is killed: a hierarchy shared with other containers holds groups of live daemons
    whose pids mean nothing in this pid namespace (their workers die with their daemon
    anyway: parent-death signal, bubblewrap's --die-with-parent)."""
    removed = 0
    now = time.time()
    for base in (support.unified, support.memory, support.cpuacct, support.pids):
        if base is None:
            continue
        try:
            entries = [e for e in os.scandir(base) if e.is_dir(follow_symlinks=False)]
        except OSError:
            continue
        for entry in entries:
            match = _NAME.fullmatch(entry.name)
            if match is None or pid_alive(int(match.group(1))):
                continue
            d = Path(entry.path)
            try:
                if now - entry.stat().st_mtime < STALE_AFTER_S or JobCgroup._read_procs(d):
                    continue
                d.rmdir()
                removed += 1
            except OSError:
                continue
    return removed


class JobCgroup:
    """One worker's cgroup: memory and pids limits, peak memory, CPU time, OOM detection,
    kill-all. On v1 the pids controller's directory is the last of ``_dirs``."""

    def __init__(self, support: CgroupSupport, name: str, memory_bytes: int, pids: int) -> None:
        self._dirs: list[Path] = []
        self._count_fd: int | None = None
        self._v2 = support.unified is not None
        self._cpu_dir: Path | None = None
        if support.unified is not None:
            d = support.unified / name
            d.mkdir()
            self._dirs.append(d)
            # v2 needs controllers enabled in the parent's subtree_control.
            with contextlib.suppress(OSError):
                (support.unified / "cgroup.subtree_control").write_text("+memory +pids")
            (d / "memory.max").write_text(str(memory_bytes))
            with contextlib.suppress(OSError):
                (d / "memory.swap.max").write_text("0")
            (d / "pids.max").write_text(str(pids))
            self._cpu_dir = d
        else:
            assert support.memory is not None and support.pids is not None
            m = support.memory / name
            p = support.pids / name
            m.mkdir()
            self._dirs.append(m)
            if support.cpuacct is not None:
                a = support.cpuacct / name
                with contextlib.suppress(OSError):
                    a.mkdir()
                    self._dirs.append(a)
                    self._cpu_dir = a
            p.mkdir()
            self._dirs.append(p)
            (m / "memory.limit_in_bytes").write_text(str(memory_bytes))
            (p / "pids.max").write_text(str(pids))

    def tasks(self) -> int | None:
        """How many tasks (threads of every process) the group holds now, from the pids
        controller's ``pids.current``; None if it cannot be read. One ``pread`` on a file
        kept open: unlike :meth:`members`, cheap enough for every warm job."""
        try:
            if self._count_fd is None:
                count = self._dirs[-1] / "pids.current"
                self._count_fd = os.open(count, os.O_RDONLY | os.O_CLOEXEC)
            return int(os.pread(self._count_fd, 32, 0))
        except (OSError, ValueError):
            return None

    def procs_files(self) -> list[str]:
        """The ``cgroup.procs`` files a process writes its pid to, to join the group."""
        return [str(d / "cgroup.procs") for d in self._dirs]

    def add(self, pid: int) -> None:
        for d in self._dirs:
            (d / "cgroup.procs").write_text(str(pid))

    def pids(self) -> list[int]:
        out: set[int] = set()
        for d in self._dirs:
            with contextlib.suppress(OSError, ValueError):
                out.update(int(x) for x in self._read_procs(d).split())
        return sorted(out)

    def members(self) -> list[int] | None:
        """The processes in the group, from one controller's list (every process of the job
        is in each of its groups, and a job cannot move itself: the cgroup files are not
        its to write); None if it cannot be read. Cheaper than :meth:`pids`."""
        try:
            return [int(x) for x in self._read_procs(self._dirs[-1]).split()]
        except (OSError, ValueError):
            return None

    @staticmethod
    def _read_procs(d: Path) -> bytes:
        # Opened afresh each time: cgroup v1 keeps serving a cached pid list to an open file.
        fd = os.open(d / "cgroup.procs", os.O_RDONLY | os.O_CLOEXEC)
        try:
            chunks = []
            for _ in range(4096):  # bounded: a pids-limited group lists few processes
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def kill_all(self) -> None:
        if self._v2:
            try:
                (self._dirs[0] / "cgroup.kill").write_text("1")
                return
            except OSError:
                pass
        for pid in self.pids():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    def oom_killed(self) -> bool:
        d = self._dirs[0]
        try:
            if self._v2:
                events = (d / "memory.events").read_text().split()
                pairs = dict(zip(events[::2], events[1::2], strict=False))
                return int(pairs.get("oom_kill", "0")) > 0 or int(pairs.get("max", "0")) > 0
            ctl = (d / "memory.oom_control").read_text().split()
            pairs = dict(zip(ctl[::2], ctl[1::2], strict=False))
            if int(pairs.get("oom_kill", "0")) > 0:
                return True
            return int((d / "memory.failcnt").read_text()) > 0
        except (OSError, ValueError):
            return False

    def cpu_ns(self) -> int | None:
        """CPU time used by every process that was ever in the group (nanoseconds), from
        the kernel's accounting; None where it is not measured. Unlike a parent's rusage
        it counts processes that were killed or never reaped by their parent."""
        if self._cpu_dir is None:
            return None
        try:
            if self._v2:
                for line in (self._cpu_dir / "cpu.stat").read_text().splitlines():
                    name, _, value = line.partition(" ")
                    if name == "usage_usec":
                        return int(value) * 1000
                return None
            return int((self._cpu_dir / "cpuacct.usage").read_text())
        except (OSError, ValueError):
            return None

    def peak_bytes(self) -> int:
        d = self._dirs[0]
        name = "memory.peak" if self._v2 else "memory.max_usage_in_bytes"
        try:
            return int((d / name).read_text())
        except (OSError, ValueError):
            return 0

    def remove(self, timeout_s: float = 5.0) -> set[int]:
        """Kill what is left, wait (bounded) until the group is empty, remove the dirs.

        Returns every pid seen in the group meanwhile, so the caller can wait for them to be
        reaped (a process leaves the group before its children are re-parented)."""
        seen: set[int] = set()
        end = time.monotonic() + timeout_s
        while True:
            pids = self.pids()
            seen.update(pids)
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            if not pids or time.monotonic() > end:
                break
            time.sleep(0.002)
        if self._count_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._count_fd)
            self._count_fd = None
        for d in self._dirs:
            with contextlib.suppress(OSError):
                d.rmdir()
        return seen
