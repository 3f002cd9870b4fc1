"""Fixtures for the sandbox tests: a sandbox per module and hostile-model builders."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import sandbox


def worker_processes(uid: int = 65534) -> list[int]:
    """Pids of every live (non-zombie) process running as ``uid``."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if fields.get("State", "").strip().startswith("Z"):
            continue
        if int(fields.get("Uid", "-1").split()[0]) == uid:
            out.append(int(entry))
    return out


def zombie_children() -> list[int]:
    """Our own children that exited and were not reaped."""
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
            out.append(int(entry))
    return out


@pytest.fixture(scope="module")
def box() -> Iterator[sandbox.Sandbox]:
    with sandbox.Sandbox(sandbox.SandboxConfig(pool_size=2)) as sb:
        yield sb


@pytest.fixture(scope="module")
def tiny_model() -> bytes:
    return sandbox.tiny_model_path().read_bytes()
