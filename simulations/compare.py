"""Two runs side by side (``aimx sim compare A B``): the summary figures with their
difference, and one HTML page with the plots of both runs overlaid.

Typical use: the same scenario under two policies (fixed redundancy 2 against adaptive
replication), or two seeds, or before and after a change to the marketplace.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from . import report
from .report import Run, esc, flatten, fmt, html_page, html_table, load_run

COMPARE_HTML = "compare.html"

#: The overlaid plots of the comparison page: stem, caption, function.
PLOTS = (
    ("latency_cdf", "Submit-to-result time of verified jobs (CDF).", report.plot_latency_cdf),
    ("completed", "Jobs verified, failed and submitted over time.", report.plot_completed),
    ("lorenz", "Earnings per contributor: Lorenz curves and Gini.", report.plot_lorenz),
    ("compute", "Compute used over the honest minimum.", report.plot_compute),
    ("detection", "Adversaries: time and jobs until refused.", report.plot_detection),
    ("bids", "Bids each job drew.", report.plot_bids),
)


@dataclass(frozen=True)
class Row:
    """One figure of both runs; ``diff`` (B - A) and ``change`` (relative to A) only where
    both are numbers (``change`` is None where A is 0)."""

    key: str
    label: str
    a: Any
    b: Any
    diff: float | None
    change: float | None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def rows(a: Run, b: Run) -> list[Row]:
    """The headline figures first (in the report's order), then every other leaf of either
    summary, with the difference where both are numbers."""
    fa, fb = flatten(a.summary), flatten(b.summary)
    labels = dict(report.HEADLINE)
    keys = [k for k, _ in report.HEADLINE if k in fa or k in fb]
    keys += [k for k in {**fa, **fb} if k not in labels]
    out = []
    for key in keys:
        va, vb = fa.get(key), fb.get(key)
        na, nb = _number(va), _number(vb)
        diff = nb - na if na is not None and nb is not None else None
        change = diff / abs(na) if diff is not None and na else None
        out.append(Row(key, labels.get(key, key), va, vb, diff, change))
    return out


def _signed(value: float | None, percent: bool = False) -> str:
    if value is None:
        return ""
    if percent:
        return f"{value * 100:+.1f}%"
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value):+,}"
    return f"{value:+.4g}" if abs(value) < 1e6 else f"{value:+,.0f}"


def labels(a: Run, b: Run) -> tuple[str, str]:
    """Column names: "A: scenario seed N" and "B: ..." (the directory names where the runs
    would otherwise read the same)."""
    na, nb = Run(a.path, a.summary, "").name, Run(b.path, b.summary, "").name
    if na == nb:
        na, nb = a.path.name, b.path.name
    return f"A: {na}", f"B: {nb}"


def table(a: Run, b: Run, figures: Sequence[Row] | None = None) -> Table:
    """The comparison as a rich table for the terminal."""
    la, lb = labels(a, b)
    t = Table(title="Simulation runs compared")
    for name, justify in (
        ("figure", "left"),
        (la, "right"),
        (lb, "right"),
        ("B - A", "right"),
        ("change", "right"),
    ):
        t.add_column(name, justify=justify)  # type: ignore[arg-type]
    for r in figures if figures is not None else rows(a, b):
        t.add_row(r.label, fmt(r.a), fmt(r.b), _signed(r.diff), _signed(r.change, True))
    return t


def render_compare(a: Run, b: Run, plots: Sequence[tuple[str, str, bytes]]) -> str:
    """The comparison page: the table, the overlaid plots, both scenarios and their diff."""
    la, lb = labels(a, b)
    figures = rows(a, b)
    body = [report.verify_cache_note(a.summary) or report.verify_cache_note(b.summary)]
    body.append("<h2>Figures</h2>")
    body.append(
        html_table(
            ["figure", la, lb, "B - A", "change"],
            [
                [r.label, fmt(r.a), fmt(r.b), _signed(r.diff), _signed(r.change, True)]
                for r in figures
            ],
        )
    )
    body.append("<h2>Plots</h2>")
    for stem, caption, data in plots:
        body.append(
            f"<figure>{report.img_tag(data, stem)}<figcaption>{esc(caption)} "
            f"Blue: {esc(la)}; orange: {esc(lb)}.</figcaption></figure>"
        )
    diff = "\n".join(
        difflib.unified_diff(
            a.scenario_text.splitlines(), b.scenario_text.splitlines(), la, lb, lineterm=""
        )
    )
    body.append("<h2>Scenario differences</h2>")
    body.append(f"<pre>{esc(diff or '(the scenario files are the same)')}</pre>")
    for name, run in ((la, a), (lb, b)):
        body.append(f"<h2>Scenario {esc(name)}</h2><pre>{esc(run.scenario_text)}</pre>")
    return html_page(f"Simulation runs compared: {la} and {lb}", "\n".join(p for p in body if p))


def default_out(a_dir: Path, b_dir: Path) -> Path:
    """Where the page goes without ``--out``: next to run A, ``compare-A-B``."""
    return Path(a_dir).resolve().parent / f"compare-{Path(a_dir).name}-{Path(b_dir).name}"


def load_pair(a_dir: Path, b_dir: Path) -> tuple[Run, Run]:
    a, b = load_run(Path(a_dir)), load_run(Path(b_dir))
    la, lb = labels(a, b)
    return load_run(Path(a_dir), la), load_run(Path(b_dir), lb)


def build_compare(a_dir: Path, b_dir: Path, out: Path | None = None) -> Path:
    """Write ``compare.html`` (and ``plots/*.png``) for runs A and B into ``out`` (default
    :func:`default_out`) and return the page's path."""
    a, b = load_pair(a_dir, b_dir)
    target = Path(out) if out is not None else default_out(a_dir, b_dir)
    plots = report.render_plots([a, b], PLOTS)
    (target / report.PLOTS_DIR).mkdir(parents=True, exist_ok=True)
    for stem, _caption, data in plots:
        (target / report.PLOTS_DIR / f"{stem}.png").write_bytes(data)
    page = target / COMPARE_HTML
    page.write_text(render_compare(a, b, plots))
    return page
