"""``aimx sim report``, ``aimx sim compare`` and ``aimx sim sweep``: looking at simulation
runs (the engine's ``aimx sim run`` is in ``sim.py``, which registers these commands)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from .._errors import NodeError
from ._common import user_errors


class SimReportError(NodeError):
    """A simulation command could not do what was asked (the message says why)."""


@contextmanager
def _errors() -> Iterator[None]:
    """The simulator's own errors (bad grid file, not a run directory) as user errors."""
    from simulations._errors import SimulationError

    with user_errors():
        try:
            yield
        except SimulationError as exc:
            raise SimReportError(str(exc)) from None


OutOption = Annotated[
    Path | None,
    typer.Option("--out", "-o", help="Directory to write into.", show_default=False),
]


def report(
    run_dir: Annotated[Path, typer.Argument(help="A run's output directory (aimx sim run --out).")],
    out: OutOption = None,
) -> None:
    """Build the plots and the HTML report of a run (default: into its directory)."""
    with _errors():
        from simulations.report import build_report

        page = build_report(run_dir, out)
    Console().print(f"report: {page}", soft_wrap=True)


def compare(
    a: Annotated[Path, typer.Argument(help="Run A's output directory.")],
    b: Annotated[Path, typer.Argument(help="Run B's output directory.")],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Directory for compare.html and its plots. Default: compare-A-B next to A.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Two runs side by side: their figures with the difference, and overlaid plots."""
    with _errors():
        from simulations import compare as cmp

        run_a, run_b = cmp.load_pair(a, b)
        console = Console()
        console.print(cmp.table(run_a, run_b))
        page = cmp.build_compare(a, b, out)
    console.print(f"comparison: {page}", soft_wrap=True)


def sweep(
    grid: Annotated[Path, typer.Argument(help="The grid file (TOML; specs/simulator.md).")],
    workers: Annotated[
        int | None,
        typer.Option("--workers", "-w", min=1, help="Local worker processes. Default: CPUs."),
    ] = None,
    address: Annotated[
        str | None,
        typer.Option(
            "--address",
            help="Run on a Ray (ray://HOST:PORT) or Dask (tcp://HOST:PORT) cluster.",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Directory for the runs and the report. Default: sweep-NAME here.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run a grid of scenarios x overrides x seeds in parallel; report means and 95% CIs."""
    console = Console()
    with _errors():
        from simulations import sweep as sw

        grid_spec = sw.load_grid(grid)
        sw.executor_for(address)
        target = out if out is not None else Path(f"sweep-{grid_spec.name}")
        where = address or f"{workers or 'all'} local worker(s)"
        console.print(
            f"sweep {grid_spec.name}: {len(grid_spec.points)} points x "
            f"{len(grid_spec.seeds)} seeds = {grid_spec.runs} runs on {where}"
        )

        def progress(result: sw.Result, done: int, total: int) -> None:
            s = result.summary
            jobs = s.get("jobs", {})
            console.print(
                f"  [{done}/{total}] {result.point.label} seed {result.seed}: "
                f"{jobs.get('verified', '?')} verified, {s.get('wall_seconds', 0):.1f} s"
            )

        results = sw.run_sweep(
            grid_spec, target, workers=workers, address=address, progress=progress
        )
        page = sw.write_report(grid_spec, results, target)
    console.print(f"sweep report: {page}", soft_wrap=True)
