"""``node.json``: how a running daemon tells clients (CLI, devnet, tests) where it is.

The daemon writes it atomically (mode 0600) once it listens and removes it on a clean
exit; a stale file (the process is gone) is reported as "not running". The API's token is
beside it, in ``api.token`` (``node.api``).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from sandbox import pid_alive

from ._errors import NodeError

RUNINFO_FILE = "node.json"


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
    path = data_dir / RUNINFO_FILE
    hint = f"start one with `aimx node start --data-dir {data_dir}`"
    try:
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
    if not pid_alive(info.pid):
        raise NodeNotRunning(f"the node of {data_dir} (pid {info.pid}) is gone; {hint}")
    return info
