"""``aimx node ...``: the daemon's own commands. ``probe`` is here.

Other ``node`` commands (``start``, ``status``) live in their own ``_cli_*`` modules and
register on :data:`node_app` with ``@node_app.command("start")``; node/cli.py imports those
modules so that their commands exist.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ._cli_common import DataDirOption, JsonOption, resolve_data_dir, user_errors
from .probe import NOT_COMPUTE, ProbeReport, run_probe

node_app = typer.Typer(
    name="node",
    help="This node: probe its hardware, run the daemon, see its status.",
    no_args_is_help=True,
)


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{n} B"
        value /= 1024
    raise AssertionError("unreachable")


def _no(reason: str | None) -> Text:
    return Text(f"no — {reason}" if reason else "no", style="yellow")


def render(report: ProbeReport) -> Table:
    """The probe as a two-column table for people."""
    table = Table(
        title="aimx node probe", show_header=False, title_justify="left", title_style="bold"
    )
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column(overflow="fold")
    cpu = report.cpu
    table.add_row("CPU", f"{cpu.model} ({cpu.architecture})")
    cores = f"{cpu.usable_cores} usable of {cpu.logical_cores}"
    if cpu.quota_millicores is not None:
        cores += f", cgroup quota {cpu.quota_millicores / 1000:g}"
    table.add_row("cores", cores)
    table.add_row("ISA", f"{cpu.isa}  [dim]{' '.join(cpu.flags) or '-'}[/]")
    mem = report.memory
    memory = f"{_size(mem.total_bytes)} total, {_size(mem.available_bytes)} available"
    if mem.cgroup_limit_bytes is not None:
        memory += f", cgroup limit {_size(mem.cgroup_limit_bytes)}"
    table.add_row("memory", memory)
    disk = report.disk
    table.add_row(
        "disk", f"{_size(disk.free_bytes)} free of {_size(disk.total_bytes)} at {disk.path}"
    )
    gpu = report.gpu
    if gpu.devices:
        for d in gpu.devices:
            table.add_row(
                f"GPU {d.index}",
                f"{d.name}, {_size(d.memory_total_bytes)}, CUDA capability {d.cuda_capability}",
            )
        table.add_row("driver", f"{gpu.driver_version} (CUDA {gpu.cuda_driver_version})")
        if gpu.reason:
            table.add_row("GPU notes", Text(gpu.reason, style="yellow"))
    else:
        table.add_row("GPU", _no(gpu.reason))
    ort = report.onnxruntime
    if ort.installed:
        table.add_row("onnxruntime", f"{ort.version}: {', '.join(ort.working_providers) or 'none'}")
        for check in ort.checks:
            if not check.works and check.provider not in NOT_COMPUTE:
                table.add_row("", Text(f"{check.provider}: {check.detail}", style="dim"))
    else:
        table.add_row("onnxruntime", _no(ort.reason))
    torch = report.torch
    if torch.installed:
        cuda = "CUDA build " + torch.cuda_build if torch.cuda_build else "CPU build"
        if torch.imported:
            cuda += ", CUDA works" if torch.cuda_available else ", CUDA not available"
        else:
            cuda += " (run with --torch to check CUDA)"
        table.add_row("torch", f"{torch.version}, {cuda}")
    else:
        table.add_row("torch", _no(torch.reason))
    bench = report.benchmark
    if bench is None:
        table.add_row("benchmark", "skipped")
    elif bench.reason:
        table.add_row("benchmark", _no(bench.reason))
    else:
        table.add_row(
            "score",
            Text.assemble(
                (f"{bench.score:,}", "bold green"),
                f" MFLOP/s ({bench.workload}, median {bench.median_ns / 1e6:.2f} ms of "
                f"{bench.runs} runs, {bench.threads} threads)",
            ),
        )
    table.add_row("determinism", report.determinism_class or "-")
    table.add_row("probe time", f"{report.probe_ms} ms")
    return table


@node_app.command("probe")
def probe(
    ctx: typer.Context,
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
    torch: Annotated[
        bool,
        typer.Option("--torch", help="Import torch to check that CUDA works (takes seconds)."),
    ] = False,
    benchmark: Annotated[
        bool, typer.Option("--benchmark/--no-benchmark", help="Time the benchmark workload.")
    ] = True,
) -> None:
    """Probe this machine: CPU, memory, disk, GPUs, runtimes, and a benchmark score."""
    with user_errors():
        report = run_probe(resolve_data_dir(data_dir, ctx), import_torch=torch, benchmark=benchmark)
        if as_json:
            typer.echo(json.dumps(report.to_json(), indent=2))
        else:
            Console().print(render(report))
