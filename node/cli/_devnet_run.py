"""What ``aimx devnet`` does once called (imported only then: :mod:`node.devnet` and
numpy would slow every other command's start): start the network, show it live, or with
``--demo`` run one job end to end and check every ledger."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.live import Live
from rich.table import Table

from ..devnet import (
    CHAIN_ID,
    CREDIT,
    DevNode,
    running_devnet,
    statuses,
    tiny_model_and_inputs,
    verify_ledgers,
    wait_ready,
)


def render(nodes: list[DevNode], by_name: dict[str, dict[str, Any]]) -> Table:
    """One row per node from its status (``by_name``, as :func:`node.devnet.statuses`)."""
    table = Table(title=f"aimx devnet ({CHAIN_ID})", title_justify="left")
    for col in ("node", "peer id", "height", "balance", "stake", "peers", "work"):
        table.add_column(col, no_wrap=True)
    for n in nodes:
        status = by_name.get(n.name, {})
        if "error" in status or not status:
            table.add_row(n.name, "-", "-", "-", "-", "-", "down")
            continue
        work = ", ".join(f"{k} {v}" for k, v in status["jobs"].items())
        if "provider" in status:
            work = f"running {status['provider']['active']}"
        table.add_row(
            n.name,
            status["peer_id"][-8:],
            str(status["height"]),
            f"{status['balance'] / CREDIT:.4f}",
            f"{status['stake'] / CREDIT:.2f}",
            str(status["connected_peers"]),
            work or "-",
        )
    return table


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
                    f"job {job_id} {s['status']}: "
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
        f"job {demo['job_id']} [bold]{status['status']}[/] ({status['reason']}); "
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


def run(*, nodes: int, demo: bool, redundancy: int, data_dir: Path | None, keep: bool) -> bool:
    """Run the devnet (until Ctrl-C, or through the demo); whether all went well."""
    console = Console()
    temporary = data_dir is None
    root = Path(tempfile.mkdtemp(prefix="aimx-devnet-")) if data_dir is None else data_dir
    root.mkdir(parents=True, exist_ok=True)
    ok = False
    try:
        with running_devnet(root, nodes, say=console.print) as devnodes:
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
    return ok
