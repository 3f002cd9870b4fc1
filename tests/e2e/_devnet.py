"""Helpers for end-to-end tests: a real devnet (separate processes, libp2p on loopback)."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from node.api import Client
from node.devnet import DevNode, statuses


def by_name(nodes: list[DevNode], name: str) -> DevNode:
    return next(n for n in nodes if n.name == name)


def status_of(member: DevNode) -> dict[str, Any]:
    with member.client() as c:
        return c.status()


def wait_for(what: str, check: Any, timeout_s: float = 30.0, step_s: float = 0.1) -> Any:
    """Poll ``check()`` (a separate process's API: there is no event to wait on) until it
    returns something truthy, at most ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(step_s)
    raise AssertionError(f"timed out waiting for {what}")


def catch_up(nodes: list[DevNode], blocks: int = 3) -> dict[str, dict[str, Any]]:
    """Wait until every live node is ``blocks`` past the highest height seen now."""
    live = [n for n in nodes if n.alive()]
    target = max(status_of(n)["height"] for n in live) + blocks
    wait_for("nodes to catch up", lambda: all(status_of(n)["height"] >= target for n in live))
    return statuses(live)


def sigkill(member: DevNode) -> None:
    assert member.proc is not None
    os.kill(member.proc.pid, signal.SIGKILL)
    member.proc.wait(10)


def balance(client: Client, peer_id: str) -> dict[str, Any]:
    return client.balance(peer_id)
