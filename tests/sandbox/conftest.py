"""Fixtures for the sandbox tests: a sandbox per module and hostile-model builders."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import sandbox


def _status(pid: str) -> dict[str, str]:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def worker_processes(uid: int = 65534) -> list[int]:
    """Live (non-zombie) processes running as ``uid`` that descend from this process.

    Orphans of our jobs are re-parented to us (the sandbox makes the daemon a subreaper),
    so anything a job left behind is found; other programs' processes are not counted.
    """
    table = {entry: _status(entry) for entry in os.listdir("/proc") if entry.isdigit()}
    me = str(os.getpid())
    out = []
    for pid, fields in table.items():
        if not fields or fields.get("State", "").strip().startswith("Z"):
            continue
        if int(fields.get("Uid", "-1").split()[0]) != uid:
            continue
        cur, hops = pid, 0
        while cur not in ("0", "1", me) and hops < 64:
            cur = table.get(cur, {}).get("PPid", "0").strip()
            hops += 1
        if cur == me:
            out.append(int(pid))
    return out


def zombie_children() -> list[tuple[int, str]]:
    """Our own children that exited and were not reaped, with their names."""
    me = os.getpid()
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()
        if fields[0] == b"Z" and int(fields[1]) == me:
            name = stat[stat.index(b"(") + 1 : stat.rindex(b")")].decode(errors="replace")
            out.append((int(entry), name))
    return out


@pytest.fixture(scope="module")
def box() -> Iterator[sandbox.Sandbox]:
    # No spare workers: the tests count the worker processes left after each job.
    with sandbox.Sandbox(sandbox.SandboxConfig(pool_size=2, spare_workers=0)) as sb:
        yield sb


@pytest.fixture(scope="module")
def tiny_model() -> bytes:
    return sandbox.tiny_model_path().read_bytes()
