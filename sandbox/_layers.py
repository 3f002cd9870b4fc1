"""Which isolation layers this machine gives, and why any is missing."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

from . import _cgroup, _landlock
from ._procfs import read_status

NOBODY = 65534


@dataclass(frozen=True, slots=True)
class Layer:
    """One isolation layer: whether it is available here and what it does or lacks."""

    name: str
    available: bool
    blocks_network: bool
    detail: str


def _seccomp_layer() -> Layer:
    try:
        from ._seccomp import load_pyseccomp

        load_pyseccomp()
    except Exception as exc:  # ImportError, or OSError when libseccomp is missing
        return Layer("seccomp", False, False, f"pyseccomp/libseccomp unusable: {exc}")
    if "Seccomp" not in read_status("self"):
        return Layer("seccomp", False, False, "the kernel has no seccomp filter support")
    return Layer(
        "seccomp", True, True, "denies socket, connect, setsid, ptrace, mount, unshare, kill, ..."
    )


def _landlock_layer() -> Layer:
    abi = _landlock.abi_version()
    if abi < 1:
        return Layer(
            "landlock", False, False, "kernel without Landlock (needs 5.13+ with lsm=landlock)"
        )
    detail = f"ABI {abi}: read-only system and runtime paths, read-write job directory"
    if abi >= 4:
        detail += ", TCP bind/connect refused"
    else:
        detail += "; TCP not covered (needs ABI 4, kernel 6.7+)"
    if abi >= 6:
        detail += ", signals and abstract sockets scoped"
    return Layer("landlock", True, abi >= 4, detail)


def bwrap_unshare(as_root: bool) -> list[str]:
    """Namespace options: all of them, or (for a root daemon) all but the user namespace,
    so that the worker can still switch to the real worker user."""
    if not as_root:
        return ["--unshare-all"]
    return [
        "--unshare-ipc",
        "--unshare-pid",
        "--unshare-net",
        "--unshare-uts",
        "--unshare-cgroup-try",
    ]


def _probe_unshare(as_root: bool) -> list[str]:
    # No PID namespace in the probe: its init would be re-parented to a subreaper daemon.
    user = [] if as_root else ["--unshare-user"]
    return [*user, "--unshare-net", "--unshare-ipc", "--unshare-uts"]


def _bwrap_layer(uid: int | None) -> Layer:
    path = shutil.which("bwrap")
    if path is None:
        return Layer("bubblewrap", False, False, "bwrap is not installed (apt install bubblewrap)")
    try:
        proc = subprocess.run(
            [path, *_probe_unshare(uid is not None), "--ro-bind", "/", "/", "true"],
            capture_output=True,
            timeout=10,
            env={},
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Layer("bubblewrap", False, False, f"bwrap did not run: {exc}")
    if proc.returncode != 0:
        why = proc.stderr.decode(errors="replace").strip()[:200]
        return Layer("bubblewrap", False, False, f"bwrap cannot create namespaces here: {why}")
    return Layer(
        "bubblewrap",
        True,
        True,
        f"{path}: namespaces unshared (net, pid, ipc, uts"
        + (", user)" if uid is None else "; the worker switches user itself)"),
    )


def probe_layers(*, uid: int | None, gid: int | None) -> tuple[Layer, ...]:
    """Probe every layer, as workers run with ``uid``/``gid`` (None: the daemon's own)."""
    cg = _cgroup.probe()
    if os.geteuid() == 0 and uid not in (None, 0):
        user = Layer("user", True, False, f"workers run as uid {uid}, gid {gid}")
    elif os.geteuid() == 0:
        user = Layer("user", False, False, "workers would run as root: configure a worker user")
    else:
        user = Layer(
            "user",
            False,
            False,
            f"daemon is not root; workers share its uid {os.geteuid()} (other layers confine them)",
        )
    return (
        Layer(
            "process",
            True,
            False,
            "own session and process group, parent-death signal, group killed at job end, "
            "rlimits (address space, CPU, file size, open files, processes, no core), "
            "empty environment and job directory",
        ),
        user,
        _seccomp_layer(),
        _landlock_layer(),
        _bwrap_layer(uid),
        Layer("cgroups", cg.available, False, cg.describe()),
    )
