"""A whole network on this machine: one process per node, on loopback.

A coordinator (block producer, faucet, bootstrap peer), a workspace node (requester) and N
contributors, each with its own keys and data directory under the devnet's directory,
talking py-libp2p over 127.0.0.1. :func:`running_devnet` starts them and stops every
process on the way out, also on Ctrl-C or failure. ``aimx devnet``, the benches and the
end-to-end tests use it.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._errors import NodeError
from ._runinfo import NodeNotRunning, RunInfo, read_runinfo
from .api import ApiError, Client

CHAIN_ID = "aimx-devnet"
CREDIT = 1_000_000
BLOCK_INTERVAL_MS = 200
WORKSPACE_FUNDS = 1_000 * CREDIT
CONTRIBUTOR_FUNDS = 2 * CREDIT
CONTRIBUTOR_STAKE = 1 * CREDIT
START_TIMEOUT_S = 120.0
#: What starts a devnet node's daemon; ``--data-dir`` and ``--bootstrap`` are added.
DAEMON_COMMAND = (sys.executable, "-m", "node", "node", "start")
_PR_SET_PDEATHSIG = 1


class DevnetError(NodeError):
    """The devnet could not start, or its demo did not settle."""


@dataclass(frozen=True)
class Place:
    """Where a devnet node runs: in the network namespace ``netns``, listening on
    ``host`` (an address of that namespace), with ``config`` (top-level TOML lines, such
    as ``reachability = "private"``) added to its configuration."""

    netns: str
    host: str
    config: str = ""


@dataclass
class DevNode:
    """One daemon process of the devnet: its name, roles, data directory and, once it is
    up, its process and ``node.json``."""

    name: str
    roles: tuple[str, ...]
    data_dir: Path
    command: tuple[str, ...] = DAEMON_COMMAND
    proc: subprocess.Popen[bytes] | None = None
    info: RunInfo | None = None
    #: What it was started with (a restart uses the same).
    bootstrap: str | None = None
    genesis_hash: str = ""
    #: The network namespace it runs in (``ip netns exec``; node/testing/netns.py), or
    #: None: this machine's. Its API is then on that namespace's loopback.
    netns: str | None = None

    def alive(self) -> bool:
        """Whether its process was started and has not exited."""
        return self.proc is not None and self.proc.poll() is None

    def client(self, timeout_s: float = 30.0) -> Client:
        """A client of its API, with the token from its data directory (connecting inside
        its namespace, from any thread, when it has one)."""
        assert self.info is not None
        transport = None
        if self.netns is not None:
            from .testing.netns import NetnsTransport

            transport = NetnsTransport(self.netns)
        return Client.for_data_dir(self.data_dir, timeout_s=timeout_s, transport=transport)

    def log_tail(self, lines: int = 15) -> str:
        path = self.data_dir / "node.log"
        with contextlib.suppress(OSError):
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        return ""


def _config_toml(
    roles: tuple[str, ...],
    extra: str = "",
    block_interval_ms: int = BLOCK_INTERVAL_MS,
    top: str = 'listen = ["/ip4/127.0.0.1/tcp/0"]\n',
) -> str:
    return (
        f'chain_id = "{CHAIN_ID}"\n'
        f"roles = [{', '.join(json.dumps(r) for r in roles)}]\n"
        f"{top}"
        "[coordinator]\n"
        f"block_interval_ms = {block_interval_ms}\n"
        f"{extra}"
    )


def _die_with_parent() -> None:  # runs in the child before exec
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def spawn(node: DevNode, bootstrap: str | None, genesis_hash: str = "") -> None:
    """Start ``node``'s command (``aimx node start``) with its log in its data dir."""
    node.bootstrap, node.genesis_hash = bootstrap, genesis_hash
    node.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    args = [*node.command, "--data-dir", str(node.data_dir)]
    if bootstrap:
        args += ["--bootstrap", bootstrap]
    if genesis_hash:
        args += ["--genesis-hash", genesis_hash]
    if node.netns is not None:  # ip execs the command: the process is the daemon's
        args = ["ip", "netns", "exec", node.netns, *args]
    fd = os.open(node.data_dir / "node.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with open(fd, "ab") as log:
        node.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def wait_up(node: DevNode, timeout_s: float = START_TIMEOUT_S) -> RunInfo:
    """Wait (bounded) for the node's node.json; fail with its log if it exits first."""
    assert node.proc is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if node.proc.poll() is not None:
            raise DevnetError(
                f"{node.name} exited with code {node.proc.returncode}:\n{node.log_tail()}"
            )
        with contextlib.suppress(NodeNotRunning):
            info = read_runinfo(node.data_dir)
            if info.pid == node.proc.pid:
                node.info = info
                return info
        time.sleep(0.1)
    raise DevnetError(f"{node.name} did not start within {timeout_s:.0f} s:\n{node.log_tail()}")


def restart(node: DevNode, timeout_s: float = START_TIMEOUT_S) -> RunInfo:
    """Start ``node`` again (it was stopped or killed) on its data directory, as before.
    A coordinator comes back on the same address (``aimx node start`` keeps the port of a
    ``tcp/0`` listen address in ``listen.json``), so the others reconnect by themselves."""
    if node.alive():
        raise DevnetError(f"{node.name} is still running")
    spawn(node, node.bootstrap, node.genesis_hash)
    return wait_up(node, timeout_s)


def stop(nodes: list[DevNode], timeout_s: float = 10.0) -> None:
    """SIGTERM every node, then SIGKILL what is left after ``timeout_s``."""
    live = [n for n in nodes if n.alive()]
    for n in live:
        assert n.proc is not None
        with contextlib.suppress(ProcessLookupError):
            n.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for n in live:
        assert n.proc is not None
        try:
            n.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            n.proc.kill()
            n.proc.wait(5)


def bootstrap_address(info: RunInfo) -> str:
    """The coordinator's loopback address for the other nodes to bootstrap from."""
    for address in info.addresses:
        if "/ip4/127.0.0.1/" in address and "/p2p-circuit" not in address:
            return address
    if not info.addresses:
        raise DevnetError("the coordinator has no address to bootstrap from")
    return info.addresses[0]


@contextlib.contextmanager
def running_devnet(
    root: Path,
    contributors: int,
    *,
    say: Callable[[str], object] = lambda message: None,
    contributor_extra: Callable[[int], str] = lambda i: "",
    contributor_command: Callable[[int], tuple[str, ...]] = lambda i: DAEMON_COMMAND,
    workspace_extra: str = "",
    block_interval_ms: int = BLOCK_INTERVAL_MS,
    places: Mapping[str, Place] | None = None,
) -> Iterator[list[DevNode]]:
    """Start coordinator, workspace and contributors; stop them all on exit.

    ``places`` puts nodes (by name: ``coordinator``, ``workspace``, ``contributor-1``, ...)
    in network namespaces, listening on an address there (:class:`Place`); the others run
    on this machine's loopback.

    ``contributor_extra(i)`` and ``workspace_extra`` are more TOML lines for the
    ``[contributor]`` table of contributor ``i`` and after the workspace's configuration.
    ``contributor_command(i)`` starts contributor ``i``'s daemon (see ``DAEMON_COMMAND``;
    the end-to-end tests start faulty ones).
    ``say`` hears each step (a console's ``print``, for one).
    """
    coordinator = DevNode("coordinator", ("coordinator",), root / "coordinator")
    workspace = DevNode("workspace", ("requester",), root / "workspace")
    workers = [
        DevNode(
            f"contributor-{i + 1}",
            ("contributor",),
            root / f"contributor-{i + 1}",
            contributor_command(i),
        )
        for i in range(contributors)
    ]
    nodes = [coordinator, workspace, *workers]
    stake = f"[contributor]\nstake = {CONTRIBUTOR_STAKE}\n"
    try:
        for i, n in enumerate(nodes):
            n.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            extra = stake + contributor_extra(i - 2) if "contributor" in n.roles else ""
            if n is workspace:
                extra = workspace_extra
            place = (places or {}).get(n.name)
            top = 'listen = ["/ip4/127.0.0.1/tcp/0"]\n'
            if place is not None:
                n.netns = place.netns
                top = f'listen = ["/ip4/{place.host}/tcp/0"]\n' + place.config
            config = n.data_dir / "config.toml"
            if not config.exists():
                fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with open(fd, "w") as f:
                    f.write(_config_toml(n.roles, extra, block_interval_ms, top))
        say(f"starting the coordinator in {coordinator.data_dir}")
        spawn(coordinator, None)
        coordinator_info = wait_up(coordinator)
        boot = bootstrap_address(coordinator_info)
        for n in nodes[1:]:
            spawn(n, boot, coordinator_info.genesis_hash)
        for n in nodes[1:]:
            wait_up(n)
            say(f"{n.name} up: {n.info.peer_id if n.info else '?'}")
        with coordinator.client() as c:
            for n in nodes[1:]:
                assert n.info is not None
                amount = WORKSPACE_FUNDS if n is workspace else CONTRIBUTOR_FUNDS
                c.faucet(n.info.peer_id, amount)
        yield nodes
    finally:
        stop(nodes)


def statuses(nodes: list[DevNode]) -> dict[str, dict[str, Any]]:
    """Each started node's ``/api/status`` by name (``{"error": ...}`` where it failed)."""
    out: dict[str, dict[str, Any]] = {}
    for n in nodes:
        if n.info is None:
            continue
        try:
            with n.client() as c:
                out[n.name] = c.status()
        except ApiError as exc:
            out[n.name] = {"error": str(exc)}
    return out


def wait_ready(nodes: list[DevNode], timeout_s: float = 120.0) -> None:
    """Until the workspace is funded, contributors staked and all found by the workspace."""
    workspace = next(n for n in nodes if n.name == "workspace")
    workers = [n for n in nodes if "contributor" in n.roles]
    deadline = time.monotonic() + timeout_s
    missing = "status"
    while time.monotonic() < deadline:
        seen = statuses(nodes)
        if seen.get("workspace", {}).get("balance", 0) <= 0:
            missing = "the workspace's faucet credits"
        elif not all(seen.get(n.name, {}).get("stake", 0) > 0 for n in workers):
            missing = "the contributors' stakes"
        else:
            with workspace.client() as c:
                found = len(c.providers())
            if found >= len(workers):
                return
            missing = f"provider discovery ({found} of {len(workers)} found)"
        time.sleep(0.25)
    raise DevnetError(
        f"the devnet did not become ready in {timeout_s:.0f} s: waiting for {missing}"
    )


def tiny_model_and_inputs() -> tuple[Path, dict[str, np.ndarray[Any, Any]]]:
    """The model the sandbox ships and a deterministic input for it."""
    import onnx

    from sandbox import tiny_model_path

    path = tiny_model_path()
    model = onnx.load(str(path))
    inp = model.graph.input[0]
    dims = [d.dim_value or 1 for d in inp.type.tensor_type.shape.dim]
    x = np.linspace(-1, 1, int(np.prod(dims)), dtype=np.float32).reshape(dims)
    return path, {inp.name: x}


def verify_ledgers(nodes: list[DevNode], timeout_s: float = 120.0) -> dict[str, dict[str, Any]]:
    """``aimx ledger verify --json`` on every node's data dir (the nodes are stopped),
    all at once (a long chain replays for minutes: give it ``timeout_s``)."""
    return verify_data_dirs({n.name: n.data_dir for n in nodes}, timeout_s=timeout_s)


#: ``aimx ledger verify --json`` run with this interpreter.
VERIFY_COMMAND = (sys.executable, "-m", "node", "ledger", "verify", "--json")


def verify_data_dirs(
    data_dirs: dict[str, Path], *options: str, timeout_s: float = 120.0
) -> dict[str, dict[str, Any]]:
    """``aimx ledger verify --json [options]`` on each data directory, all at once: each
    answer's JSON, with ``ok`` (it exited 0 and said so), ``verified`` (the chain replayed:
    an exit 1 for ``--open-escrows`` still verified it) and, when not ok, ``error``."""
    procs = {
        name: subprocess.Popen(
            [*VERIFY_COMMAND, *options, "--data-dir", str(d)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, d in data_dirs.items()
    }
    out: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout_s
    for name, proc in procs.items():
        timed_out = False
        try:
            stdout, stderr = proc.communicate(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
            timed_out = True
        try:
            body: dict[str, Any] = json.loads(stdout) if stdout.strip() else {}
        except ValueError:
            body = {}
        body["verified"] = proc.returncode == 0 or bool(body.get("state_root"))
        body["ok"] = proc.returncode == 0 and bool(body.get("ok"))
        if timed_out:
            body["error"] = f"aimx ledger verify did not finish in {timeout_s:.0f} s"
        elif not body["ok"]:
            body["error"] = (stderr or stdout).strip()[-500:]
        out[name] = body
    return out
