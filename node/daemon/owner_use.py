"""A contributor's availability, driven: the owner's pause (kept over a restart), the
schedule, and pause-on-use sampled from NVML and ``/proc``.

:class:`Pausing` holds the :class:`~node.daemon.availability.Availability` machine and
does what its verdicts ask (specs/daemon.md, "Availability and pause"): while paused the
Provider machine bids on nothing (``set_draining``); with ``contributor.on_pause =
"abort"`` the replicas running when the pause starts are aborted and handed back (a
Result ``crashed``, "handed back: ...", so the requester reassigns them at once).

The samples come through a :class:`UseSampler` (the seam: tests hand in their own):
:class:`MachineSampler` reads NVML's process lists and ``/proc``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import trio

from .._procfs import machine_ticks
from ..config import ContributorConfig, zone_of
from .availability import Availability, Schedule, Settings, Verdict

if TYPE_CHECKING:
    from ._node import Node

log = logging.getLogger(__name__)

#: The owner's pause, kept in the data directory so that a restart stays paused.
PAUSE_FILE = "pause.json"


class UseSampler(Protocol):
    """What pause-on-use samples. Both are called from a worker thread."""

    def gpu_users(self) -> list[str]:
        """Processes other than this node's that use a GPU now (``"1234 name"``)."""
        ...

    def cpu_share_permille(self) -> int | None:
        """Other processes' share of the machine's CPU since the last call, per mille
        (``None`` on the first call or when it cannot be read)."""
        ...


def settings_of(contributor: ContributorConfig) -> Settings:
    """The machine's settings from the configuration (the time zone resolved here: the
    machine's own is read from ``/etc/localtime``)."""
    a = contributor.availability
    schedule = Schedule.parse(a.days, a.hours, zone_of(a.time_zone), a.time_zone)
    p = contributor.pause_on_use
    return Settings(
        schedule=None if schedule.always else schedule,
        gpu=p.gpu,
        cpu_permille=p.cpu_percent * 10,
        busy_ms=p.busy_s * 1000,
        quiet_ms=p.quiet_s * 1000,
    )


class Pausing:
    """The availability machine of one node and what its verdicts do."""

    def __init__(self, node: Node, sampler: UseSampler | None, state_dir: Path | None) -> None:
        self._node = node
        self.sampler = sampler
        self._path = state_dir / PAUSE_FILE if state_dir is not None else None
        self.machine: Availability | None = None
        self._wake = trio.Event()

    @property
    def verdict(self) -> Verdict | None:
        return self.machine.verdict if self.machine is not None else None

    def start(self, now_ms: int) -> None:
        """Make the machine (once the node's clock runs), with a kept owner's pause."""
        self.machine = Availability(
            settings_of(self._node.config.contributor), now_ms, owner_reason=self._load()
        )
        self._apply(self.machine.verdict)

    # --- the owner's controls (the API) ----------------------------------------------

    def pause(self, reason: str) -> Verdict:
        machine = self._machine()
        self._changed(machine.pause(reason, self._node.now_ms()))
        self._save(machine.owner)
        return machine.verdict

    def resume(self) -> Verdict:
        machine = self._machine()
        self._changed(machine.resume(self._node.now_ms()))
        self._save(None)
        return machine.verdict

    def reconfigure(self) -> None:
        """The configuration changed: new schedule and pause-on-use settings."""
        machine = self._machine()
        self._changed(machine.configure(settings_of(self._node.config.contributor), self._now()))
        self._wake.set()

    # --- sampling ----------------------------------------------------------------------

    async def run(self) -> None:
        """Sample and tick every ``pause_on_use.sample_ms`` until cancelled."""
        machine = self._machine()
        while True:
            p = self._node.config.contributor.pause_on_use
            sampler = self.sampler
            gpu: list[str] | None = None
            cpu: int | None = None
            if sampler is not None and (p.gpu or p.cpu_percent):
                gpu, cpu = await trio.to_thread.run_sync(_sample, sampler, p.gpu, p.cpu_percent)
            now = self._now()
            if gpu is not None:
                self._changed(machine.gpu_sample(gpu, now))
            if cpu is not None:
                self._changed(machine.cpu_sample(cpu, now))
            self._changed(machine.tick(now))
            provider = self._node.provider
            if (
                machine.verdict.paused
                and self._node.config.contributor.on_pause == "abort"
                and provider is not None
                and provider.active
            ):
                # an award for a bid made before the pause started a run meanwhile
                self._node.hand_back(f"handed back: {machine.verdict.reason}")
            with trio.move_on_after(p.sample_ms / 1000):
                await self._wake.wait()
            self._wake = trio.Event()

    # --- internals ---------------------------------------------------------------------

    def _machine(self) -> Availability:
        if self.machine is None:
            from ._errors import RoleMissing

            raise RoleMissing("this node is not a contributor: it has nothing to pause")
        return self.machine

    def _now(self) -> int:
        return self._node.now_ms()

    def _changed(self, verdict: Verdict | None) -> None:
        if verdict is None:
            return
        if verdict.paused:
            log.info("paused: %s", verdict.reason)
        else:
            log.info("available again")
        self._node.metrics.paused.set(1 if verdict.paused else 0)
        if verdict.cause is not None:
            self._node.metrics.pauses.labels(verdict.cause).inc()
        self._apply(verdict)

    def _apply(self, verdict: Verdict) -> None:
        node = self._node
        provider = node.provider
        if provider is None:
            return
        node.update_draining()
        if verdict.paused and node.config.contributor.on_pause == "abort":
            node.hand_back(f"handed back: {verdict.reason}")

    def _load(self) -> str | None:
        if self._path is None:
            return None
        try:
            data = json.loads(self._path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("cannot read %s (%s): starting unpaused", self._path, exc)
            return None
        reason = data.get("reason") if isinstance(data, dict) else None
        return reason if isinstance(reason, str) else None

    def _save(self, reason: str | None) -> None:
        if self._path is None:
            return
        try:
            if reason is None:
                self._path.unlink(missing_ok=True)
                return
            tmp = self._path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"reason": reason}))
            os.replace(tmp, self._path)
        except OSError as exc:
            log.warning("cannot keep the pause in %s (a restart forgets it): %s", self._path, exc)


def _sample(sampler: UseSampler, gpu: bool, cpu: int) -> tuple[list[str] | None, int | None]:
    return (sampler.gpu_users() if gpu else None, sampler.cpu_share_permille() if cpu else None)


# --- the machine's own samples ------------------------------------------------------------


def _stat(pid: str) -> tuple[int, int] | None:
    """``(ppid, cpu ticks of the process and its reaped children)`` from /proc/PID/stat."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode(errors="replace")
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()
    try:
        return int(fields[1]), sum(int(x) for x in fields[11:15])
    except (IndexError, ValueError):
        return None


def own_tree(root: int) -> dict[int, int]:
    """The processes of ``root``'s tree (it and every descendant) and their CPU ticks."""
    stats: dict[int, tuple[int, int]] = {}
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                found = _stat(entry.name)
                if found is not None:
                    stats[int(entry.name)] = found
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    tree: dict[int, int] = {}
    todo = [root]
    while todo:
        pid = todo.pop()
        if pid in stats and pid not in tree:
            tree[pid] = stats[pid][1]
            todo.extend(children.get(pid, ()))
    return tree


class MachineSampler:
    """Samples this machine: NVML's compute and graphics process lists (processes outside
    this daemon's tree and visible in its ``/proc``), and other processes' CPU share
    (``/proc/stat`` less this daemon's tree, sandbox workers included). Without NVML the
    GPU sample is always empty (said once in the log)."""

    def __init__(self, root_pid: int | None = None) -> None:
        self._root = os.getpid() if root_pid is None else root_pid
        self._last: tuple[int, int, int] | None = None
        self._nvml: Any = None
        self._nvml_tried = False

    def cpu_share_permille(self) -> int | None:
        machine = machine_ticks()
        if machine is None:
            return None
        ours = sum(own_tree(self._root).values())
        last, self._last = self._last, (machine[0], machine[1], ours)
        if last is None:
            return None
        total = machine[1] - last[1]
        if total <= 0:
            return None
        others = (machine[0] - last[0]) - max(0, ours - last[2])
        return max(0, min(1000, 1000 * others // total))

    def _open_nvml(self) -> Any:
        if not self._nvml_tried:
            self._nvml_tried = True
            try:
                import pynvml

                pynvml.nvmlInit()
                self._nvml = pynvml
            except Exception as exc:  # no package, library or driver: no GPU sample
                log.info("pause on GPU use is off: NVML is not available (%s)", exc)
        return self._nvml

    def gpu_users(self) -> list[str]:
        nvml = self._open_nvml()
        if nvml is None:
            return []
        pids: set[int] = set()
        try:
            for i in range(nvml.nvmlDeviceGetCount()):
                handle = nvml.nvmlDeviceGetHandleByIndex(i)
                for query in (
                    nvml.nvmlDeviceGetComputeRunningProcesses,
                    nvml.nvmlDeviceGetGraphicsRunningProcesses,
                ):
                    with contextlib.suppress(nvml.NVMLError):
                        pids.update(p.pid for p in query(handle))
        except nvml.NVMLError as exc:
            log.debug("NVML process list failed: %s", exc)
            return []
        if not pids:
            return []
        ours = own_tree(self._root)
        users = []
        for pid in sorted(pids - ours.keys()):
            try:
                name = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                continue  # not in our pid namespace: cannot tell whose it is
            users.append(f"{pid} {name}")
        return users
