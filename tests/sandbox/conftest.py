"""Fixtures for the sandbox tests: a sandbox per module and hostile-model builders."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

import sandbox
from sandbox._procfs import all_pids, read_stat, read_status


def worker_processes(uid: int = 65534) -> list[int]:
    """Live (non-zombie) processes running as ``uid`` that descend from this process.

    Orphans of our jobs are re-parented to us (the sandbox makes the daemon a subreaper),
    so anything a job left behind is found; other programs' processes are not counted.
    """
    table = {pid: read_status(pid) for pid in all_pids()}
    me = os.getpid()
    out = []
    for pid, fields in table.items():
        if not fields or fields.get("State", "").startswith("Z"):
            continue
        if int(fields.get("Uid", "-1").split()[0]) != uid:
            continue
        cur, hops = pid, 0
        while cur not in (0, 1, me) and hops < 64:
            cur = int(table.get(cur, {}).get("PPid", "0"))
            hops += 1
        if cur == me:
            out.append(pid)
    return out


def zombie_children() -> list[tuple[int, str]]:
    """Our own children that exited and were not reaped, with their names."""
    me = os.getpid()
    stats = (read_stat(pid) for pid in all_pids())
    return [(s.pid, s.name) for s in stats if s is not None and s.state == "Z" and s.ppid == me]


@pytest.fixture(scope="module")
def box() -> Iterator[sandbox.Sandbox]:
    # No spare workers: the tests count the worker processes left after each job.
    with sandbox.Sandbox(sandbox.SandboxConfig(pool_size=2, spare_workers=0)) as sb:
        yield sb


@pytest.fixture(scope="module")
def tiny_model() -> bytes:
    return sandbox.tiny_model_path().read_bytes()
