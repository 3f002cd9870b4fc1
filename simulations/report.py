"""What people look at after a run: plots of an output directory and one HTML page.

The input is a run's output directory as specs/simulator.md defines it (``summary.json``,
``scenario.toml``, ``series.csv``, ``jobs.csv``, ``providers.csv``); nothing here needs the
engine, so a report can be rebuilt from a directory copied off another machine.

:func:`build_report` writes ``plots/*.png`` and ``report.html`` into the directory (or into
``out``). The HTML page is self-contained: the plots are inlined as base64 ``data:`` URIs,
the scenario and the summary are in it, and it loads nothing from anywhere.

The plot functions take a sequence of runs and overlay them, so ``compare`` draws two runs
with the same code. They build :class:`matplotlib.figure.Figure` objects directly (the Agg
canvas, never ``pyplot``'s global figure registry), so several reports can be built in one
process, or in parallel ones, without sharing state.

The code lives in three modules by concern, and every name is importable from here:
:mod:`._report_data` (reading a directory, figures computed from its rows),
:mod:`._report_plots` (the plots, PNG bytes) and :mod:`._report_html` (the HTML helpers and
the report page).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from matplotlib.figure import Figure

# Every name of the three modules is importable from here; the private helpers are
# re-exported with ``as`` because sweep.py reaches them through this module.
from ._report_data import (
    CHEATING,
    COMPUTE_TARGET_RATIO,
    DETECTION_TARGET_JOBS,
    FIXED_REPLICATION_RATIO,
    HONEST,
    JOBS,
    PLOTS_DIR,
    PROVIDERS,
    REPORT_HTML,
    SCENARIO,
    SERIES,
    SUMMARY,
    Detection,
    ReportError,
    Run,
    compute_ratio_series,
    detections,
    earnings,
    ecdf,
    gini,
    is_spot_check,
    latencies_s,
    load_run,
    lorenz,
    num,
    outcome_times,
    series_column,
)
from ._report_data import _read_csv as _read_csv
from ._report_html import _CSS as _CSS
from ._report_html import (
    HEADLINE,
    adversary_rows,
    esc,
    flatten,
    fmt,
    html_page,
    html_table,
    img_tag,
    render_report,
    verify_cache_note,
)
from ._report_plots import (
    COLOURS,
    KIND_COLOURS,
    PLOTS,
    draw_lorenz,
    plot_bids,
    plot_completed,
    plot_compute,
    plot_detection,
    plot_earnings,
    plot_latency_cdf,
    plot_ledger,
    plot_lorenz,
    plot_providers,
    png,
)
from ._report_plots import _colour as _colour
from ._report_plots import _figure as _figure
from ._report_plots import _no_data as _no_data
from ._report_plots import _prefix as _prefix

#: The public names of the three modules, so callers keep importing them from here.
__all__ = [
    "CHEATING",
    "COLOURS",
    "COMPUTE_TARGET_RATIO",
    "DETECTION_TARGET_JOBS",
    "FIXED_REPLICATION_RATIO",
    "HEADLINE",
    "HONEST",
    "JOBS",
    "KIND_COLOURS",
    "PLOTS",
    "PLOTS_DIR",
    "PROVIDERS",
    "REPORT_HTML",
    "SCENARIO",
    "SERIES",
    "SUMMARY",
    "Detection",
    "ReportError",
    "Run",
    "adversary_rows",
    "build_report",
    "compute_ratio_series",
    "detections",
    "draw_lorenz",
    "earnings",
    "ecdf",
    "esc",
    "flatten",
    "fmt",
    "gini",
    "html_page",
    "html_table",
    "img_tag",
    "is_spot_check",
    "latencies_s",
    "load_run",
    "lorenz",
    "num",
    "outcome_times",
    "plot_bids",
    "plot_completed",
    "plot_compute",
    "plot_detection",
    "plot_earnings",
    "plot_latency_cdf",
    "plot_ledger",
    "plot_lorenz",
    "plot_providers",
    "png",
    "render_plots",
    "render_report",
    "series_column",
    "verify_cache_note",
]


def render_plots(
    runs: Sequence[Run],
    which: Sequence[tuple[str, str, Callable[[Sequence[Run]], Figure]]] = PLOTS,
) -> list[tuple[str, str, bytes]]:
    return [(stem, caption, png(draw(runs))) for stem, caption, draw in which]


def build_report(run_dir: Path, out: Path | None = None) -> Path:
    """Write ``plots/*.png`` and ``report.html`` for the run in ``run_dir`` (into ``out``,
    default the run directory itself) and return the HTML page's path."""
    run = load_run(Path(run_dir))
    target = Path(out) if out is not None else run.path
    plots = render_plots([run])
    plots_dir = target / PLOTS_DIR
    plots_dir.mkdir(parents=True, exist_ok=True)
    for stem, _caption, data in plots:
        (plots_dir / f"{stem}.png").write_bytes(data)
    page = target / REPORT_HTML
    page.write_text(render_report(run, plots))
    return page
