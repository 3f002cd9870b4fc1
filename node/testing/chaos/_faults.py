"""The faults of the chaos suite, and how each is made and undone on a devnet node.

:data:`FAULTS` names them: ``kill-<role>`` (SIGKILL, a short outage, then
:func:`node.devnet.restart` on the same data directory; a coordinator comes back on the
same address; ``move-coordinator``: on another port, the others still knowing only the
old one), ``stop-<role>`` (SIGSTOP for longer than the scheduler's heartbeat timeout and
the transactions' lifetime, then SIGCONT), ``full-<role>`` (the node's ledger directory
is a small tmpfs, :func:`ledger_tmpfs`, mounted before it starts; a file fills it for as
long as a SIGSTOP lasts, then goes) or ``partition-contributor`` (the link of the
contributor's network namespace is cut as long, then restored: ``tests/netns/``).
:func:`inject` makes one and undoes it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from ...cli.node import LISTEN_FILE
from ...devnet import DevNode, restart
from ...ledger._service import ledger_db_path

#: Every fault the suite knows: what it does to which node.
FAULTS: dict[str, tuple[str, str]] = {
    "kill-contributor": ("kill", "contributor-1"),
    "kill-workspace": ("kill", "workspace"),
    "kill-coordinator": ("kill", "coordinator"),
    "stop-contributor": ("stop", "contributor-1"),
    "stop-coordinator": ("stop", "coordinator"),
    "full-contributor": ("full", "contributor-1"),
    "full-workspace": ("full", "workspace"),
    # its network namespace's link cut for as long as a SIGSTOP lasts (tests/netns/)
    "partition-contributor": ("partition", "contributor-1"),
    # last: the others may never find it again
    "move-coordinator": ("move", "coordinator"),
}
#: The faults that need the node's ledger on a small tmpfs (:func:`ledger_tmpfs`, root).
DISK_FAULTS = tuple(f for f, (action, _) in FAULTS.items() if action == "full")
#: The faults that need the node in a network namespace of its own (tests/netns/, root).
NETNS_FAULTS = tuple(f for f, (action, _) in FAULTS.items() if action == "partition")
#: The name of the file that fills a ledger's tmpfs.
FILLER = "chaos-filler"


class ChaosError(Exception):
    """A fault did not take effect as it should (the message says how)."""


class ChaosSkip(Exception):
    """A fault cannot be made here (not root, no tmpfs): the reason is the message."""


#: Cuts a node off the network for the duration of the ``with`` block: a partition
#: (``node.testing.netns``: the link of the node's namespace down, then up).
Partition = Callable[[DevNode], contextlib.AbstractContextManager[None]]


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``where`` (made, 0700), unmounted on the way out.
    Raises :class:`ChaosSkip` unless root and ``mount`` works."""
    if os.geteuid() != 0:
        raise ChaosSkip("mounting a tmpfs needs root")
    where.mkdir(mode=0o700, parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise ChaosSkip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@contextlib.contextmanager
def ledger_tmpfs(data_dir: Path, size: str = "64m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at the ledger directory of the node that will run on
    ``data_dir`` (before it starts), unmounted on the way out. Raises :class:`ChaosSkip`
    unless root and ``mount`` works."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    with tmpfs(ledger_db_path(data_dir).parent, size) as where:
        yield where


def fill(path: Path) -> None:
    """Write ``path`` until its file system has no byte left (bounded)."""
    with open(path, "wb", buffering=0) as f, contextlib.suppress(OSError):
        for _ in range(1 << 16):  # 256 MiB at most: more than the tmpfs holds
            f.write(b"\0" * 4096)


def by_name(nodes: list[DevNode], name: str) -> DevNode:
    return next(n for n in nodes if n.name == name)


def sigkill(node: DevNode) -> None:
    assert node.proc is not None
    with contextlib.suppress(ProcessLookupError):
        os.kill(node.proc.pid, signal.SIGKILL)
    node.proc.wait(10)


def wait_fault(node: DevNode, *, set_: bool, timeout_s: float) -> bool:
    """Until ``node``'s ``/api/status`` reports a fault (``set_``) or none; bounded."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception), node.client() as c:
            if (c.status().get("fault") is not None) == set_:
                return True
        time.sleep(0.2)
    return False


def inject(
    nodes: list[DevNode],
    fault: str,
    *,
    down_s: float,
    stop_s: float,
    fault_timeout_s: float = 120.0,
    partition: Partition | None = None,
) -> float:
    """Do ``fault`` (a key of :data:`FAULTS`) and undo it; returns when it ended (monotonic):
    the restarted node's ``node.json`` is there, SIGCONT was sent, or a full disk's fault
    cleared. Raises :class:`ChaosError` if a full disk's fault never showed or never
    cleared. A partition lasts ``stop_s`` and needs ``partition`` (else
    :class:`ChaosSkip`)."""
    action, name = FAULTS[fault]
    node = by_name(nodes, name)
    assert node.proc is not None
    if action == "partition":
        if partition is None:
            raise ChaosSkip(
                f"{fault} needs {name} in a network namespace of its own (node.testing.netns, root)"
            )
        with partition(node):
            time.sleep(stop_s)
        return time.monotonic()
    if action in ("kill", "move"):
        sigkill(node)
        time.sleep(down_s)
        if action == "move":  # it forgets the port it had: it comes back on another one
            (node.data_dir / LISTEN_FILE).unlink(missing_ok=True)
        restart(node)
        return time.monotonic()
    if action == "full":
        # SQLite reuses its WAL's pages: the first failed write may come a while after the
        # disk filled up. The fault starts when the node reports it, and lasts ``stop_s``.
        filler = ledger_db_path(node.data_dir).parent / FILLER
        try:
            fill(filler)
            if not wait_fault(node, set_=True, timeout_s=fault_timeout_s):
                raise ChaosError(
                    f"{name} reported no fault {fault_timeout_s:.0f} s into a full disk"
                )
            time.sleep(stop_s)
        finally:
            filler.unlink(missing_ok=True)
        if not wait_fault(node, set_=False, timeout_s=fault_timeout_s):
            raise ChaosError(f"{name}'s fault did not clear once the disk had space again")
        return time.monotonic()
    os.kill(node.proc.pid, signal.SIGSTOP)
    try:
        time.sleep(stop_s)
    finally:
        os.kill(node.proc.pid, signal.SIGCONT)
    return time.monotonic()
