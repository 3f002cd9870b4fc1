"""``aimx devnet``: a whole network on this machine, one process per node, on loopback.

A coordinator (block producer, faucet, bootstrap peer), a workspace node (requester) and N
contributors, each with its own keys and data directory under the devnet's directory,
talking py-libp2p over 127.0.0.1. ``--demo`` runs one job end to end and checks every
ledger. Every process is stopped on the way out, also on Ctrl-C or failure.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from ._cli_common import user_errors
from ._errors import NodeError
from ._runinfo import NodeNotRunning, RunInfo, read_runinfo
from .client import ApiError, Client

devnet_app = typer.Typer(
    name="devnet",
    help="Run a coordinator, a workspace and N contributors on this machine (loopback).",
    invoke_without_command=True,
)

CHAIN_ID = "aimx-devnet"
CREDIT = 1_000_000
BLOCK_INTERVAL_MS = 200
WORKSPACE_FUNDS = 1_000 * CREDIT
CONTRIBUTOR_FUNDS = 2 * CREDIT
CONTRIBUTOR_STAKE = 1 * CREDIT
START_TIMEOUT_S = 120.0
_PR_SET_PDEATHSIG = 1


class DevnetError(NodeError):
    """The devnet could not start, or its demo did not settle."""


@dataclass
class DevNode:
    name: str
    roles: tuple[str, ...]
    data_dir: Path
    proc: subprocess.Popen[bytes] | None = None
    info: RunInfo | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def client(self) -> Client:
        assert self.info is not None
        return Client(self.info.api_url, timeout_s=30.0)

    def log_tail(self, lines: int = 15) -> str:
        path = self.data_dir / "node.log"
        with contextlib.suppress(OSError):
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        return ""


def _config_toml(
    roles: tuple[str, ...], extra: str = "", block_interval_ms: int = BLOCK_INTERVAL_MS
) -> str:
    return (
        f'chain_id = "{CHAIN_ID}"\n'
        f"roles = [{', '.join(json.dumps(r) for r in roles)}]\n"
        'listen = ["/ip4/127.0.0.1/tcp/0"]\n'
        "[coordinator]\n"
        f"block_interval_ms = {block_interval_ms}\n"
        f"{extra}"
    )


def _die_with_parent() -> None:  # runs in the child before exec
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def spawn(node: DevNode, bootstrap: str | None) -> None:
    """Start ``node`` as ``python -m node node start`` with its log in its data dir."""
    node.data_dir.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "node", "node", "start", "--data-dir", str(node.data_dir)]
    if bootstrap:
        args += ["--bootstrap", bootstrap]
    with open(node.data_dir / "node.log", "ab") as log:
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


def stop(nodes: list[DevNode], timeout_s: float = 10.0) -> None:
    """SIGTERM every node, then SIGKILL what is left after ``timeout_s``."""
    live = [n for n in nodes if n.proc is not None and n.proc.poll() is None]
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
    console: Console | None = None,
    contributor_extra: Callable[[int], str] = lambda i: "",
    workspace_extra: str = "",
    block_interval_ms: int = BLOCK_INTERVAL_MS,
) -> Iterator[list[DevNode]]:
    """Start coordinator, workspace and contributors; stop them all on exit.

    ``contributor_extra(i)`` and ``workspace_extra`` are more TOML lines for the
    ``[contributor]`` table of contributor ``i`` and after the workspace's configuration.
    """
    say = console.print if console is not None else (lambda *a, **k: None)
    coordinator = DevNode("coordinator", ("coordinator",), root / "coordinator")
    workspace = DevNode("workspace", ("requester",), root / "workspace")
    workers = [
        DevNode(f"contributor-{i + 1}", ("contributor",), root / f"contributor-{i + 1}")
        for i in range(contributors)
    ]
    nodes = [coordinator, workspace, *workers]
    stake = f"[contributor]\nstake = {CONTRIBUTOR_STAKE}\n"
    try:
        for i, n in enumerate(nodes):
            n.data_dir.mkdir(parents=True, exist_ok=True)
            extra = stake + contributor_extra(i - 2) if "contributor" in n.roles else ""
            if n is workspace:
                extra = workspace_extra
            config = n.data_dir / "config.toml"
            if not config.exists():
                config.write_text(_config_toml(n.roles, extra, block_interval_ms))
        say(f"starting the coordinator in {coordinator.data_dir}")
        spawn(coordinator, None)
        boot = bootstrap_address(wait_up(coordinator))
        for n in nodes[1:]:
            spawn(n, boot)
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


def render(nodes: list[DevNode], sts: dict[str, dict[str, Any]]) -> Table:
    table = Table(title=f"aimx devnet ({CHAIN_ID})", title_justify="left")
    for col in ("node", "peer id", "height", "balance", "stake", "peers", "work"):
        table.add_column(col, no_wrap=True)
    for n in nodes:
        s = sts.get(n.name, {})
        if "error" in s or not s:
            table.add_row(n.name, "-", "-", "-", "-", "-", "down")
            continue
        work = ", ".join(f"{k} {v}" for k, v in s["jobs"].items())
        if "provider" in s:
            p = s["provider"]
            work = f"running {p['active']}"
        table.add_row(
            n.name,
            s["peer_id"][-8:],
            str(s["height"]),
            f"{s['balance'] / CREDIT:.4f}",
            f"{s['stake'] / CREDIT:.2f}",
            str(s["connected_peers"]),
            work or "-",
        )
    return table


def wait_ready(nodes: list[DevNode], timeout_s: float = 120.0) -> None:
    """Until the workspace is funded, contributors staked and all found by the workspace."""
    workspace = next(n for n in nodes if n.name == "workspace")
    workers = [n for n in nodes if "contributor" in n.roles]
    deadline = time.monotonic() + timeout_s
    missing = "status"
    while time.monotonic() < deadline:
        sts = statuses(nodes)
        if sts.get("workspace", {}).get("balance", 0) <= 0:
            missing = "the workspace's faucet credits"
        elif not all(sts.get(n.name, {}).get("stake", 0) > 0 for n in workers):
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


def verify_ledgers(nodes: list[DevNode]) -> dict[str, dict[str, Any]]:
    """``aimx ledger verify --json`` on every node's data dir (the nodes are stopped),
    all at once."""
    procs = {
        n.name: subprocess.Popen(
            [
                sys.executable,
                "-m",
                "node",
                "ledger",
                "verify",
                "--json",
                "--data-dir",
                str(n.data_dir),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in nodes
    }
    out: dict[str, dict[str, Any]] = {}
    for name, proc in procs.items():
        try:
            stdout, stderr = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
        try:
            body = json.loads(stdout) if proc.returncode == 0 else {}
        except ValueError:
            body = {}
        body["ok"] = proc.returncode == 0 and bool(body.get("ok"))
        if not body["ok"]:
            body["error"] = (stderr or stdout).strip()[-500:]
        out[name] = body
    return out


def run_demo(
    nodes: list[DevNode], console: Console, *, redundancy: int, timeout_s: float = 120.0
) -> dict[str, Any]:
    """Submit one job with the shipped model; return what happened (see ``--demo``)."""
    workspace = next(n for n in nodes if n.name == "workspace")
    before = statuses(nodes)
    console.print(render(nodes, before))
    path, inputs = tiny_model_and_inputs()
    with workspace.client() as c:
        job_id = c.submit(path, inputs, redundancy=redundancy, deadline_s=60.0)
        console.print(f"submitted job [bold]{job_id}[/] ({path.name}, redundancy {redundancy})")
        with console.status("waiting for bids, runs and verification…") as spinner:
            status = c.wait(
                job_id,
                timeout_s=timeout_s,
                until="closed",
                on_update=lambda s: spinner.update(
                    f"job {job_id[:12]}… {s['status']}: "
                    + (s["events"][-1]["event"] if s["events"] else "submitted")
                ),
            )
        outputs = c.result(job_id) if status["status"] == "verified" else {}
    # let every replica catch up with the settling block before reading balances
    target = max(s.get("height", 0) for s in statuses(nodes).values()) + 3
    deadline = time.monotonic() + 20
    after = statuses(nodes)
    while time.monotonic() < deadline and min(s.get("height", 0) for s in after.values()) < target:
        time.sleep(0.2)
        after = statuses(nodes)
    return {
        "job_id": job_id,
        "status": status,
        "outputs": outputs,
        "before": before,
        "after": after,
    }


def report_demo(console: Console, nodes: list[DevNode], demo: dict[str, Any]) -> bool:
    status = demo["status"]
    ok = bool(status["status"] == "verified" and status["closed"])
    console.print(
        f"job {demo['job_id'][:16]}… [bold]{status['status']}[/] ({status['reason']}); "
        f"escrow {'closed' if status['closed'] else 'OPEN'}"
    )
    for name, value in demo["outputs"].items():
        console.print(f"  output [bold]{name}[/] {value.dtype} {list(value.shape)}:")
        console.print(f"    {np.array2string(value, precision=5)}")
    names = {s.get("peer_id"): name for name, s in demo["after"].items()}
    for p in status["paid"]:
        console.print(
            f"  paid {names.get(p['provider'], p['provider'])}: {p['amount'] / CREDIT:.6f} credits"
        )
    if len(status["paid"]) < status["redundancy"]:
        ok = False
    table = Table(title="balances (credits)", title_justify="left")
    for col in ("node", "before", "after", "change"):
        table.add_column(col, justify="right" if col != "node" else "left")
    for n in nodes:
        b = demo["before"].get(n.name, {}).get("balance", 0)
        a = demo["after"].get(n.name, {}).get("balance", 0)
        table.add_row(n.name, f"{b / CREDIT:.6f}", f"{a / CREDIT:.6f}", f"{(a - b) / CREDIT:+.6f}")
    console.print(table)
    return ok


@devnet_app.callback()
def devnet(
    nodes: Annotated[int, typer.Option("--nodes", min=1, max=16, help="Contributors.")] = 3,
    demo: Annotated[
        bool, typer.Option("--demo", help="Run one job end to end, check, then exit.")
    ] = False,
    redundancy: Annotated[int, typer.Option(help="The demo job's redundancy.")] = 2,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="Devnet directory (one data dir per node). Default: a temporary one.",
            show_default=False,
        ),
    ] = None,
    keep: Annotated[bool, typer.Option(help="Keep a temporary devnet directory.")] = False,
) -> None:
    """Start a local network; with --demo, submit a job, verify it and every ledger."""
    console = Console()
    with user_errors():
        temporary = data_dir is None
        root = Path(tempfile.mkdtemp(prefix="aimx-devnet-")) if data_dir is None else data_dir
        root.mkdir(parents=True, exist_ok=True)
        ok = False
        try:
            with running_devnet(root, nodes, console=console) as devnodes:
                console.print("waiting for funding, stakes and provider discovery…")
                wait_ready(devnodes)
                if not demo:
                    console.print(f"devnet up in {root}; Ctrl-C stops it")
                    table = render(devnodes, statuses(devnodes))
                    with (
                        Live(table, console=console) as live,
                        contextlib.suppress(KeyboardInterrupt),
                    ):
                        while True:
                            time.sleep(1.0)
                            live.update(render(devnodes, statuses(devnodes)))
                    ok = True
                else:
                    result = run_demo(devnodes, console, redundancy=redundancy)
                    ok = report_demo(console, devnodes, result)
            if demo:
                verified = verify_ledgers(devnodes)
                for name, body in verified.items():
                    if body["ok"]:
                        console.print(
                            f"[green]ledger ok[/] {name}: height {body['height']}, "
                            f"root {body['state_root'][:16]}…"
                        )
                    else:
                        console.print(f"[red]ledger FAILED[/] {name}: {body.get('error')}")
                ok = ok and all(b["ok"] for b in verified.values())
                console.print("[bold green]demo passed[/]" if ok else "[bold red]demo FAILED[/]")
        finally:
            if temporary and not keep and ok:
                shutil.rmtree(root, ignore_errors=True)
            elif temporary:
                console.print(f"devnet files kept in {root}")
        if not ok:
            raise typer.Exit(1)
