"""``node.json``: how a running daemon tells clients (CLI, devnet, tests) where it is.

The daemon writes it atomically (mode 0600) once it listens and removes it on a clean
exit; a stale file (the process is gone) is reported as "not running". The API's token is
beside it, in ``api.token`` (``node.api``).
"""

from __future__ import annotations

import fcntl
import json
import os
import stat
from dataclasses import asdict, dataclass
from pathlib import Path

from sandbox import pid_alive

from ._errors import NodeError

RUNINFO_FILE = "node.json"
#: The daemon's lock file in its data directory (held while it runs: ``node.daemon._run``).
LOCK_FILE = "node.lock"


class NodeNotRunning(NodeError):
    """No daemon is running for this data directory."""


@dataclass(frozen=True, slots=True)
class RunInfo:
    pid: int
    peer_id: str
    roles: tuple[str, ...]
    addresses: tuple[str, ...]
    api_url: str
    chain_id: str
    started_ms: int
    #: The chain's genesis hash (hex): what a node joining through this one pins.
    genesis_hash: str = ""


def write_runinfo(data_dir: Path, info: RunInfo) -> None:
    """Write ``node.json`` atomically, readable by its owner only (0600). A failed write
    (a full disk) leaves no temporary file and raises its own error (``OSError``)."""
    tmp = data_dir / f".{RUNINFO_FILE}.tmp"
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(asdict(info), indent=2))
        os.replace(tmp, data_dir / RUNINFO_FILE)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_runinfo(data_dir: Path) -> None:
    (data_dir / RUNINFO_FILE).unlink(missing_ok=True)


def remove_stale_runinfo(data_dir: Path) -> bool:
    """Remove what a daemon killed before its clean-up left (``kill -9``): its
    ``node.json``, unless that names a live process other than this one, and the temporary
    file of an interrupted write. Called by a starting daemon that holds ``node.lock``
    (so no other daemon runs here). Whether a ``node.json`` was removed."""
    (data_dir / f".{RUNINFO_FILE}.tmp").unlink(missing_ok=True)
    path = data_dir / RUNINFO_FILE
    try:
        pid = int(json.loads(path.read_text())["pid"])
    except FileNotFoundError:
        return False
    except (OSError, ValueError, KeyError, TypeError):
        pid = 0  # unreadable: a half-written file of a killed daemon
    if pid > 0 and pid != os.getpid() and pid_alive(pid):
        return False
    path.unlink(missing_ok=True)
    return True


def read_runinfo(data_dir: Path) -> RunInfo:
    """The running daemon's ``node.json``. Trusted only when it is a regular file of ours
    (not a link), the data directory's lock is held, and its pid is a process of the
    file's owner: a killed daemon's file named a pid that another local user's process
    could take, and the CLI then sent that user the API token (review round 73, F1)."""
    path = data_dir / RUNINFO_FILE
    hint = f"start one with `aimx node start --data-dir {data_dir}`"
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or (st.st_uid != os.geteuid() and os.geteuid() != 0):
            raise NodeNotRunning(
                f"{path} is not a regular file of this user's; not trusted. {hint}"
            )
        raw = json.loads(path.read_text())
        info = RunInfo(
            pid=int(raw["pid"]),
            peer_id=str(raw["peer_id"]),
            roles=tuple(raw["roles"]),
            addresses=tuple(raw["addresses"]),
            api_url=str(raw["api_url"]),
            chain_id=str(raw["chain_id"]),
            started_ms=int(raw["started_ms"]),
            genesis_hash=str(raw.get("genesis_hash", "")),
        )
    except FileNotFoundError:
        raise NodeNotRunning(f"no node is running with data dir {data_dir}; {hint}") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise NodeNotRunning(f"unreadable {path} ({exc}); {hint}") from None
    if not pid_alive(info.pid) or not _locked(data_dir) or _uid_of(info.pid) != st.st_uid:
        raise NodeNotRunning(f"the node of {data_dir} (pid {info.pid}) is gone; {hint}")
    return info


def _locked(data_dir: Path) -> bool:
    """Whether a daemon holds ``data_dir``'s lock (it does as long as it runs)."""
    try:
        fd = os.open(data_dir / LOCK_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # (a lock we took goes with it)
    return False


def _uid_of(pid: int) -> int | None:
    """The effective uid of process ``pid`` (from its status: the owner of /proc/<pid> is
    root for a process that is not dumpable, as the daemon is)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Uid:"):
                    return int(line.split()[2])
    except (OSError, ValueError, IndexError):
        return None
    return None
