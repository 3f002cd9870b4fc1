"""``aimx sim``: the network simulator. ``aimx sim run SCENARIO.toml [--seed N] [--out DIR]``
runs a scenario in virtual time and prints its summary and trace hash (specs/simulator.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from .._errors import NodeError
from ._common import JsonOption, command_group, user_errors
from .sim_report import compare, report, sweep

sim_app = command_group("sim", "Simulate the network: the real marketplace and ledger code.")


class SimCommandError(NodeError):
    """``aimx sim`` cannot run the scenario as given."""


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def summary_table(data: dict[str, Any]) -> Table:
    """The summary as a two-column table (what ``aimx sim run`` prints)."""
    table = Table(title=f"scenario {data['scenario']} (seed {data['seed']})", show_header=False)
    table.add_column("figure", style="bold")
    table.add_column("value", justify="right")
    nodes = data["nodes"]
    jobs = data["jobs"]
    rows: list[tuple[str, Any]] = [
        ("simulated / wall seconds", f"{data['sim_seconds']:,.0f} / {data['wall_seconds']:,.1f}"),
        ("events (per wall second)", f"{data['events']:,} ({_fmt(data.get('events_per_s'))})"),
        ("providers / requesters", f"{nodes['providers']:,} / {nodes['requesters']:,}"),
        ("jobs submitted", jobs["submitted"]),
        (
            "verified / failed / unverified",
            f"{jobs['verified']:,} / {jobs['failed']:,} / {jobs['unverified']:,}",
        ),
        ("accepted correct / wrong", f"{jobs['correct_accepted']:,} / {jobs['wrong_accepted']:,}"),
        (
            "latency p50 / p90 / p99 (s)",
            " / ".join(_fmt(data["latency_s"][k]) for k in ("p50", "p90", "p99")),
        ),
        ("bids per job (mean)", data["bids_per_job"]["mean"]),
        ("compute used / honest minimum", _fmt(data["compute"]["ratio"])),
        ("earnings Gini (honest)", data["earnings"]["gini"]),
        ("ledger height / bytes", f"{data['ledger']['height']:,} / {data['ledger']['bytes']:,}"),
        ("credits conserved", "yes" if data["ledger"]["conserved"] else "NO"),
        ("verification cache", "ON (signature checks cached)" if data["verify_cache"] else "off"),
        ("peak RSS (MB)", data["peak_rss_mb"]),
    ]
    for kind, adv in sorted(data["adversaries"].items()):
        rows.append((f"{kind}: detected / count", f"{adv['detected']} / {adv['count']}"))
    for name, value in rows:
        table.add_row(name, _fmt(value))
    return table


@sim_app.command("run")
def run_command(
    scenario: Annotated[Path, typer.Argument(help="The scenario file (TOML).")],
    seed: Annotated[int, typer.Option("--seed", help="The run's seed.")] = 0,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Write summary.json, the CSV files and the scenario here."),
    ] = None,
    json_out: JsonOption = False,
) -> None:
    """Run SCENARIO in virtual time; print the summary and the trace hash."""
    import simulations

    console = Console()
    with user_errors():
        try:
            summary = simulations.run(scenario, seed=seed, out=out)
        except simulations.SimulationError as exc:
            raise SimCommandError(str(exc)) from None
    if json_out:
        print(json.dumps(summary.data, indent=2, sort_keys=True))
        return
    console.print(summary_table(summary.data))
    console.print(f"trace hash: {summary.trace_hash}")
    if out is not None:
        from simulations.report import build_report

        console.print(f"wrote {out}; report: {build_report(out)}")


# Looking at runs (node/cli/sim_report.py).
sim_app.command("report")(report)
sim_app.command("compare")(compare)
sim_app.command("sweep")(sweep)
