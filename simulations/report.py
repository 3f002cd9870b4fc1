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
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ._errors import SimulationError

#: The files of an output directory a report reads (specs/simulator.md, "Output").
SUMMARY, SCENARIO, SERIES, JOBS, PROVIDERS = (
    "summary.json",
    "scenario.toml",
    "series.csv",
    "jobs.csv",
    "providers.csv",
)
REPORT_HTML = "report.html"
PLOTS_DIR = "plots"

#: providers.csv ``kind`` of a contributor that follows the rules; every other kind is an
#: adversary of the scenario.
HONEST = "honest"
#: Kinds whose misbehaviour is a wrong result (detection counts from the first one).
CHEATING = frozenset({"cheater", "colluder", "sybil"})
#: The marketplace's target for catching a cheater (issue 16): refused within 20 jobs.
DETECTION_TARGET_JOBS = 20
#: Fixed replication (every job run twice, as BOINC does) costs 2x the honest minimum.
FIXED_REPLICATION_RATIO = 2.0
#: The compute target for the best policy: at most 1.3x the honest minimum.
COMPUTE_TARGET_RATIO = 1.3


class ReportError(SimulationError):
    """A run directory cannot be read (missing or malformed files); the message says which."""


# --- reading an output directory ------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One run's output directory, read: the summary as a dict, the CSVs as rows of text."""

    path: Path
    summary: dict[str, Any]
    scenario_text: str
    series: list[dict[str, str]] = field(default_factory=list)
    jobs: list[dict[str, str]] = field(default_factory=list)
    providers: list[dict[str, str]] = field(default_factory=list)
    label: str = ""

    @property
    def name(self) -> str:
        """How plots and tables call this run: the label, else "scenario seed N"."""
        if self.label:
            return self.label
        return f"{self.summary.get('scenario', self.path.name)} seed {self.summary.get('seed')}"


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    try:
        with path.open(newline="") as f:
            return [dict(row) for row in csv.DictReader(f)]
    except (OSError, csv.Error, UnicodeDecodeError) as exc:
        raise ReportError(f"cannot read {path}: {exc}") from exc


def load_run(path: Path, label: str = "") -> Run:
    """Read a run's output directory. A missing CSV reads as no rows (its plots say "no
    data"); a missing or malformed ``summary.json`` is an error."""
    path = Path(path)
    summary_path = path / SUMMARY
    if not summary_path.is_file():
        raise ReportError(
            f"{path} is not a simulation output directory (no {SUMMARY}): "
            "give the --out directory of `aimx sim run`"
        )
    try:
        summary = json.loads(summary_path.read_text())
    except (OSError, ValueError) as exc:
        raise ReportError(f"cannot read {summary_path}: {exc}") from exc
    if not isinstance(summary, dict):
        raise ReportError(f"{summary_path} is not a JSON object: was it written by `aimx sim run`?")
    scenario_path = path / SCENARIO
    scenario_text = scenario_path.read_text() if scenario_path.is_file() else ""
    return Run(
        path=path,
        summary=summary,
        scenario_text=scenario_text,
        series=_read_csv(path / SERIES),
        jobs=_read_csv(path / JOBS),
        providers=_read_csv(path / PROVIDERS),
        label=label,
    )


def num(row: dict[str, str], key: str) -> float | None:
    """A CSV cell as a number; empty, missing or unparsable cells are ``None``."""
    value = row.get(key)
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


# --- figures computed from the rows (pure, tested on their own) -----------------------------


def gini(values: Iterable[float]) -> float:
    """The Gini coefficient of non-negative amounts: 0 when everyone has the same, towards 1
    when one has everything. Negative amounts count as 0; no amounts (or all 0) give 0."""
    xs = sorted(max(0.0, v) for v in values)
    n, total = len(xs), sum(xs)
    if n == 0 or total <= 0:
        return 0.0
    weighted = sum((i + 1) * x for i, x in enumerate(xs))
    return (2.0 * weighted) / (n * total) - (n + 1.0) / n


def lorenz(values: Iterable[float]) -> tuple[list[float], list[float]]:
    """The Lorenz curve: share of contributors (poorest first) against share of earnings,
    both from 0 to 1, starting at (0, 0)."""
    xs = sorted(max(0.0, v) for v in values)
    n, total = len(xs), sum(xs)
    if n == 0:
        return [0.0, 1.0], [0.0, 1.0]
    shares, running = [0.0], 0.0
    for x in xs:
        running += x
        shares.append(running / total if total > 0 else 0.0)
    return [i / n for i in range(n + 1)], shares


def ecdf(values: Iterable[float]) -> tuple[list[float], list[float]]:
    """The empirical CDF as step points: sorted values and the fraction at or below each."""
    xs = sorted(values)
    n = len(xs)
    return xs, [(i + 1) / n for i in range(n)]


def latencies_s(run: Run) -> list[float]:
    """Submit-to-result seconds of the verified jobs (jobs.csv)."""
    out = []
    for row in run.jobs:
        if row.get("outcome") != "verified" or is_spot_check(row):
            continue
        start, end = num(row, "submitted_s"), num(row, "finished_s")
        if start is not None and end is not None:
            out.append(end - start)
    return out


def earnings(run: Run) -> list[float]:
    """What each contributor earned (providers.csv ``earned``; an empty cell is 0)."""
    return [num(row, "earned") or 0.0 for row in run.providers]


def outcome_times(run: Run, outcome: str) -> list[float]:
    """Sorted finish times (s) of the jobs with this outcome; ``failed`` takes every outcome
    other than ``verified`` that has a finish time."""
    times = []
    for row in run.jobs:
        if is_spot_check(row):
            continue
        got = row.get("outcome", "")
        wanted = got == outcome if outcome == "verified" else got not in ("verified", "")
        end = num(row, "finished_s")
        if wanted and end is not None:
            times.append(end)
    return sorted(times)


@dataclass(frozen=True)
class Detection:
    """One adversary contributor: its kind and, if it was caught, how long and how many of
    its jobs it took (from its first wrong result when known, else from the run's start)."""

    node: str
    kind: str
    detected: bool
    seconds: float | None
    jobs: float | None
    #: It delivered at least one wrong result (``first_wrong_s`` is set).
    wrong: bool = False


def detections(run: Run) -> list[Detection]:
    """Every non-honest contributor of providers.csv."""
    out = []
    for row in run.providers:
        kind = row.get("kind", HONEST) or HONEST
        if kind == HONEST:
            continue
        detected_s = num(row, "detected_s")
        first_wrong = num(row, "first_wrong_s")
        seconds = None
        if detected_s is not None:
            seconds = detected_s - (first_wrong if first_wrong is not None else 0.0)
        out.append(
            Detection(
                node=row.get("node", ""),
                kind=kind,
                detected=detected_s is not None,
                seconds=seconds,
                jobs=num(row, "jobs_before_detection") if detected_s is not None else None,
                wrong=first_wrong is not None,
            )
        )
    return out


def is_spot_check(row: dict[str, str]) -> bool:
    """A job the marketplace made up to test a provider (jobs.csv ``spot_check`` = 1): it
    costs compute but is no requester's job, so latency, bids and counts leave it out."""
    return row.get("spot_check", "") not in ("", "0")


def compute_ratio_series(run: Run) -> tuple[list[float], list[float]]:
    """Compute used over the honest minimum, cumulative by job finish time.

    Used: every finished job's ``compute_s``, spot checks included. The minimum: each
    verified job's ``honest_min_s`` where the engine writes one, else one replica's share
    of its compute (``compute_s / replicas_run``), what it would have cost run once by an
    honest contributor."""
    points = []
    for row in run.jobs:
        end, used = num(row, "finished_s"), num(row, "compute_s")
        if end is None or used is None:
            continue
        minimum = 0.0
        if row.get("outcome") == "verified" and not is_spot_check(row):
            minimum = num(row, "honest_min_s") or 0.0
            if "honest_min_s" not in row:
                replicas = num(row, "replicas_run")
                minimum = used / replicas if replicas else 0.0
        points.append((end, used, minimum))
    points.sort()
    xs, ys, total_used, total_min = [], [], 0.0, 0.0
    for end, used, minimum in points:
        total_used += used
        total_min += minimum
        if total_min > 0:
            xs.append(end)
            ys.append(total_used / total_min)
    return xs, ys


def series_column(run: Run, key: str) -> tuple[list[float], list[float]]:
    """(t_s, value) pairs of one series.csv column, rows with either cell empty left out."""
    xs, ys = [], []
    for row in run.series:
        t, v = num(row, "t_s"), num(row, key)
        if t is not None and v is not None:
            xs.append(t)
            ys.append(v)
    return xs, ys


# --- plots ----------------------------------------------------------------------------------

#: Colours of overlaid runs (A, B, ...) and of outcome pairs; colour-blind safe (Okabe-Ito).
COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
KIND_COLOURS = {
    "honest": "#0072B2",
    "cheater": "#D55E00",
    "colluder": "#CC79A7",
    "lazy": "#E69F00",
    "sybil": "#009E73",
    "spammer": "#56B4E9",
}


def _figure(ncols: int = 1) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=(6.4 * ncols if ncols > 1 else 7.0, 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


def _no_data(ax: Axes, what: str) -> None:
    ax.text(0.5, 0.5, what, ha="center", va="center", transform=ax.transAxes, color="#666666")


def _colour(i: int) -> str:
    return COLOURS[i % len(COLOURS)]


def _prefix(runs: Sequence[Run], run: Run) -> str:
    return f"{run.name}: " if len(runs) > 1 else ""


def plot_completed(runs: Sequence[Run]) -> Figure:
    """Jobs verified and failed over time (cumulative, by finish time), and submitted."""
    fig, (ax,) = _figure()
    drawn = False
    for i, run in enumerate(runs):
        pre = _prefix(runs, run)
        submitted = sorted(
            t for r in run.jobs if not is_spot_check(r) and (t := num(r, "submitted_s")) is not None
        )
        for times, what, style in (
            (outcome_times(run, "verified"), "verified", "-"),
            (outcome_times(run, "failed"), "failed", "--"),
            (submitted, "submitted", ":"),
        ):
            if times:
                drawn = True
                counts = list(range(1, len(times) + 1))
                ax.step(
                    times,
                    counts,
                    where="post",
                    ls=style,
                    color=_colour(i)
                    if len(runs) > 1
                    else {"verified": "#009E73", "failed": "#D55E00"}.get(what, "#666666"),
                    label=f"{pre}{what} ({len(times)})",
                )
    if not drawn:
        _no_data(ax, "no jobs")
    else:
        ax.legend(fontsize="small")
    ax.set(title="Jobs over time", xlabel="simulated time (s)", ylabel="jobs (cumulative)")
    return fig


def plot_latency_cdf(runs: Sequence[Run]) -> Figure:
    """The submit-to-result CDF of verified jobs, with the median marked."""
    fig, (ax,) = _figure()
    drawn = False
    for i, run in enumerate(runs):
        values = latencies_s(run)
        if not values:
            continue
        drawn = True
        xs, ys = ecdf(values)
        med = sorted(values)[len(values) // 2]
        ax.step(
            xs,
            ys,
            where="post",
            color=_colour(i),
            label=f"{_prefix(runs, run)}p50 {med:.2f} s, n={len(values)}",
        )
    if drawn:
        ax.legend(fontsize="small", loc="lower right")
        ax.set_ylim(0, 1.02)
    else:
        _no_data(ax, "no verified jobs")
    ax.set(title="Submit to result (verified jobs)", xlabel="seconds", ylabel="fraction of jobs")
    ax.grid(alpha=0.3)
    return fig


def plot_bids(runs: Sequence[Run]) -> Figure:
    """How many bids each job drew (histogram, one bin per count)."""
    fig, (ax,) = _figure()
    per_run = [
        [b for r in run.jobs if not is_spot_check(r) and (b := num(r, "bids")) is not None]
        for run in runs
    ]
    values = [b for bids in per_run for b in bids]
    if not values:
        _no_data(ax, "no jobs")
    else:
        top = int(max(values))
        bins = [b - 0.5 for b in range(top + 2)]
        for i, (run, bids) in enumerate(zip(runs, per_run, strict=True)):
            if bids:
                mean = sum(bids) / len(bids)
                ax.hist(
                    bids,
                    bins=bins,
                    color=_colour(i),
                    alpha=0.55 if len(runs) > 1 else 0.9,
                    histtype="stepfilled",
                    label=f"{_prefix(runs, run)}mean {mean:.1f}",
                )
        ax.legend(fontsize="small")
    ax.set(title="Bids per job", xlabel="bids", ylabel="jobs")
    return fig


def draw_lorenz(ax: Axes, runs: Sequence[Run]) -> bool:
    """Lorenz curves of earnings with each run's Gini coefficient; False if no contributors."""
    ax.plot([0, 1], [0, 1], color="#999999", lw=0.8, ls="--", label="equal")
    any_rows = False
    for i, run in enumerate(runs):
        values = earnings(run)
        if not values:
            continue
        any_rows = True
        xs, ys = lorenz(values)
        ax.plot(
            xs,
            ys,
            color=_colour(i),
            label=f"{_prefix(runs, run)}Gini {gini(values):.3f}, n={len(values)}",
        )
    ax.legend(fontsize="small", loc="upper left")
    ax.set(
        title="Earnings: Lorenz curve",
        xlabel="share of contributors (poorest first)",
        ylabel="share of earnings",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    return any_rows


def plot_lorenz(runs: Sequence[Run]) -> Figure:
    """Earnings per contributor as Lorenz curves, one per run."""
    fig, (ax,) = _figure()
    draw_lorenz(ax, runs)
    return fig


def plot_earnings(runs: Sequence[Run]) -> Figure:
    """Earnings per contributor: the Lorenz curve with the Gini coefficient (left) and the
    distribution of earnings by kind of contributor (right; the first run only)."""
    fig, (left, right) = _figure(2)
    any_rows = draw_lorenz(left, runs)
    run = runs[0]
    by_kind: dict[str, list[float]] = {}
    for row in run.providers:
        by_kind.setdefault(row.get("kind", HONEST) or HONEST, []).append(num(row, "earned") or 0.0)
    if any_rows and by_kind:
        kinds = sorted(by_kind, key=lambda k: (k != HONEST, k))
        right.hist(
            [by_kind[k] for k in kinds],
            bins=30,
            stacked=True,
            color=[KIND_COLOURS.get(k, "#999999") for k in kinds],
            label=[f"{k} (mean {sum(by_kind[k]) / len(by_kind[k]):.1f})" for k in kinds],
        )
        if len(run.providers) > 200:  # a few rich and many poor: show both
            right.set_yscale("log")
        right.legend(fontsize="small")
    else:
        _no_data(right, "no contributors")
    right.set(
        title=f"Earnings by kind{': ' + run.name if len(runs) > 1 else ''}",
        xlabel="credits earned",
        ylabel="contributors",
    )
    return fig


def plot_detection(runs: Sequence[Run]) -> Figure:
    """How long adversaries worked before the marketplace refused them: simulated seconds
    from their first wrong result (CDF, left) and their jobs until then (histogram, right,
    with the target of 20)."""
    fig, (left, right) = _figure(2)
    drawn = False
    for i, run in enumerate(runs):
        found = detections(run)
        by_kind: dict[str, list[Detection]] = {}
        for d in found:
            by_kind.setdefault(d.kind, []).append(d)
        for j, (kind, group) in enumerate(sorted(by_kind.items())):
            seconds = [d.seconds for d in group if d.seconds is not None]
            colour = KIND_COLOURS.get(kind, "#999999") if len(runs) == 1 else _colour(i)
            style = ("-", "--", ":", "-.")[j % 4] if len(runs) > 1 else "-"
            caught = sum(d.detected for d in group)
            # A cheater that never delivered a wrong result had nothing to be caught for:
            # count it apart. Other kinds misbehave without wrong results: all of them count.
            acted = [d for d in group if d.wrong or d.detected] if kind in CHEATING else group
            label = f"{_prefix(runs, run)}{kind}: {caught}/{len(acted)} caught"
            if len(acted) < len(group):
                label += f" ({len(group) - len(acted)} never wrong)"
            if seconds:
                drawn = True
                xs, ys = ecdf(seconds)
                # Fractions of those counted: the curve stops below 1 if some escaped.
                ys = [y * len(seconds) / len(acted) for y in ys]
                left.step(xs, ys, where="post", color=colour, ls=style, label=label)
            jobs = [d.jobs for d in group if d.jobs is not None]
            if jobs:
                top = int(max(jobs)) + 1
                step = max(1, top // 40)
                bins = [b - 0.5 for b in range(0, top + step + 1, step)]
                right.hist(
                    jobs, bins=bins, histtype="step", color=colour, ls=style, lw=1.5, label=label
                )
    if drawn:
        left.legend(fontsize="small", loc="lower right")
        left.set_ylim(0, 1.02)
        right.axvline(
            DETECTION_TARGET_JOBS,
            color="#666666",
            ls="--",
            lw=0.8,
            label=f"target {DETECTION_TARGET_JOBS}",
        )
        right.legend(fontsize="small")
    else:
        _no_data(left, "no adversary was detected")
        _no_data(right, "no adversary was detected")
    left.set(
        title="Detection time",
        xlabel="simulated seconds from first wrong result",
        ylabel="fraction of adversaries",
    )
    right.set(title="Jobs before detection", xlabel="jobs", ylabel="adversaries")
    return fig


def plot_compute(runs: Sequence[Run]) -> Figure:
    """Compute used over the honest minimum, cumulative over time, against 1x (the minimum),
    the target and fixed replication."""
    fig, (ax,) = _figure()
    drawn = False
    for i, run in enumerate(runs):
        xs, ys = compute_ratio_series(run)
        if xs:
            drawn = True
            ax.plot(xs, ys, color=_colour(i), label=f"{_prefix(runs, run)}final {ys[-1]:.2f}x")
    for level, text in (
        (1.0, "honest minimum"),
        (COMPUTE_TARGET_RATIO, "target"),
        (FIXED_REPLICATION_RATIO, "fixed redundancy 2"),
    ):
        ax.axhline(level, color="#999999", lw=0.8, ls=":")
        ax.annotate(
            text,
            (0, level),
            xycoords=("axes fraction", "data"),
            fontsize="x-small",
            color="#666666",
            va="bottom",
        )
    if drawn:
        ax.legend(fontsize="small", loc="upper right")
    else:
        _no_data(ax, "no finished jobs with compute")
    ax.set(
        title="Redundant compute",
        xlabel="simulated time (s)",
        ylabel="compute used / honest minimum",
    )
    ax.set_ylim(bottom=0)
    return fig


def plot_ledger(runs: Sequence[Run]) -> Figure:
    """Ledger growth: height (left axis) and bytes (right axis) over time."""
    fig, (ax,) = _figure()
    twin = ax.twinx()
    drawn = False
    for i, run in enumerate(runs):
        pre = _prefix(runs, run)
        xs, heights = series_column(run, "ledger_height")
        if xs:
            drawn = True
            ax.plot(xs, heights, color=_colour(i), label=f"{pre}height")
        xs, sizes = series_column(run, "ledger_bytes")
        if xs:
            drawn = True
            twin.plot(xs, [s / 1e6 for s in sizes], color=_colour(i), ls="--", label=f"{pre}MB")
    if drawn:
        lines = ax.get_legend_handles_labels()
        more = twin.get_legend_handles_labels()
        ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize="small", loc="upper left")
    else:
        _no_data(ax, "no series")
    ax.set(title="Ledger growth", xlabel="simulated time (s)", ylabel="height (blocks)")
    twin.set_ylabel("size (MB, dashed)")
    return fig


def plot_providers(runs: Sequence[Run]) -> Figure:
    """Contributors online and busy over time (churn and load)."""
    fig, (ax,) = _figure()
    drawn = False
    for i, run in enumerate(runs):
        pre = _prefix(runs, run)
        for key, style in (("online_providers", "-"), ("busy_providers", "--")):
            xs, ys = series_column(run, key)
            if xs:
                drawn = True
                ax.plot(xs, ys, color=_colour(i), ls=style, label=f"{pre}{key.split('_')[0]}")
    if drawn:
        ax.legend(fontsize="small")
    else:
        _no_data(ax, "no series")
    ax.set(title="Contributors online and busy", xlabel="simulated time (s)", ylabel="contributors")
    ax.set_ylim(bottom=0)
    return fig


#: The report's plots: file stem, caption, function. Order is the page's order.
PLOTS: tuple[tuple[str, str, Callable[[Sequence[Run]], Figure]], ...] = (
    ("completed", "Jobs verified, failed and submitted over time (cumulative).", plot_completed),
    ("latency_cdf", "Submit-to-result time of verified jobs (CDF).", plot_latency_cdf),
    ("bids", "Bids each job drew.", plot_bids),
    (
        "earnings",
        "Earnings per contributor: Lorenz curve and Gini coefficient; distribution by kind.",
        plot_earnings,
    ),
    (
        "detection",
        "Adversaries: time and jobs from their first wrong result until refused.",
        plot_detection,
    ),
    ("compute", "Compute used over the honest minimum (one honest run per job).", plot_compute),
    ("ledger", "Ledger height and size over time.", plot_ledger),
    ("providers", "Contributors online and busy over time.", plot_providers),
)


def png(fig: Figure) -> bytes:
    """The figure as PNG bytes, without the "Software" text chunk (so the bytes depend only
    on the data and matplotlib's drawing)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return buf.getvalue()


# --- HTML -----------------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.5em 0; }
td, th { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: right; }
td:first-child, th:first-child { text-align: left; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; }
figure { margin: 1em 0; } figcaption { color: #555; font-size: 0.9em; }
img { max-width: 100%; }
.warn { background: #fff3cd; border: 1px solid #e0c36c; padding: 0.5em 1em; }
"""


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: object) -> str:
    """A summary value for a table: floats to 4 significant digits, the rest as text."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        if value != value:  # NaN
            return "nan"
        return f"{value:.4g}" if abs(value) < 1e6 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10000 else str(value)
    return str(value)


def flatten(summary: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested summary as dotted keys (``jobs.verified``), leaves only, in order."""
    out: dict[str, Any] = {}
    for key, value in summary.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def img_tag(data: bytes, alt: str) -> str:
    encoded = base64.b64encode(data).decode("ascii")
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{encoded}">'


def html_table(header: Sequence[str], rows: Iterable[Sequence[str]], raw: bool = False) -> str:
    """A table; cells are escaped unless ``raw`` (then the caller escaped them)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{c if raw else esc(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def html_page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)}</title><style>{_CSS}</style></head>"
        f"<body><h1>{esc(title)}</h1>\n{body}\n</body></html>\n"
    )


#: The headline figures at the top of a report, (dotted summary key, what it is).
HEADLINE: tuple[tuple[str, str], ...] = (
    ("jobs.submitted", "jobs submitted"),
    ("jobs.verified", "jobs verified"),
    ("jobs.failed", "jobs failed"),
    ("jobs.correct_accepted", "correct results accepted"),
    ("jobs.wrong_accepted", "wrong results accepted"),
    ("latency_s.p50", "submit to result p50 (s)"),
    ("latency_s.p90", "submit to result p90 (s)"),
    ("latency_s.p99", "submit to result p99 (s)"),
    ("bids_per_job.mean", "bids per job (mean)"),
    ("compute.ratio", "compute / honest minimum"),
    ("earnings.gini", "Gini of earnings (honest providers)"),
    ("earnings.honest_mean", "honest contributor earned (mean)"),
    ("earnings.cheater_mean", "cheater earned (mean)"),
    ("ledger.height", "ledger height"),
    ("ledger.conserved", "credits conserved"),
    ("events", "events"),
    ("sim_seconds", "simulated seconds"),
    ("wall_seconds", "wall seconds"),
    ("peak_rss_mb", "peak RSS (MB)"),
    ("trace_hash", "trace hash"),
)


def adversary_rows(run: Run) -> list[list[str]]:
    """The summary's adversaries, with how many of each kind delivered a wrong result
    (providers.csv; blank for kinds that are not providers)."""
    adversaries = run.summary.get("adversaries") or {}
    wrong: dict[str, int] = {}
    for d in detections(run):
        wrong[d.kind] = wrong.get(d.kind, 0) + d.wrong
    rows = []
    for kind, figures in sorted(adversaries.items()):
        if not isinstance(figures, dict):
            continue
        rows.append(
            [kind, fmt(figures.get("count")), str(wrong[kind]) if kind in wrong else ""]
            + [
                fmt(figures.get(k))
                for k in ("detected", "median_jobs_to_detection", "median_s_to_detection")
            ]
        )
    return rows


def verify_cache_note(summary: dict[str, Any]) -> str:
    if summary.get("verify_cache"):
        return (
            '<p class="warn"><b>Verification cache on:</b> a signature check of exact bytes '
            "known to pass (checked before, or signed by the run itself over those bytes) "
            "was answered from a cache (the scenario asked for it); other bytes were checked "
            "for real. Every message is still signed.</p>"
        )
    return ""


def render_report(run: Run, plots: Sequence[tuple[str, str, bytes]]) -> str:
    """The report page of one run; ``plots`` are (stem, caption, PNG bytes)."""
    s = run.summary
    flat = flatten(s)
    title = f"Simulation report: {s.get('scenario', run.path.name)}, seed {s.get('seed')}"
    parts = [verify_cache_note(s)]
    parts.append("<h2>Summary</h2>")
    parts.append(
        html_table(
            ["figure", "value"], [[text, fmt(flat[key])] for key, text in HEADLINE if key in flat]
        )
    )
    rows = adversary_rows(run)
    if rows:
        parts.append("<h2>Adversaries</h2>")
        parts.append(
            html_table(
                [
                    "kind",
                    "count",
                    "delivered a wrong result",
                    "detected",
                    "median jobs to detection",
                    "median s to detection",
                ],
                rows,
            )
        )
    parts.append("<h2>Plots</h2>")
    for stem, caption, data in plots:
        parts.append(
            f"<figure>{img_tag(data, stem)}<figcaption>{esc(caption)}</figcaption></figure>"
        )
    parts.append("<h2>Scenario</h2>")
    parts.append(f"<pre>{esc(run.scenario_text or '(scenario.toml missing)')}</pre>")
    parts.append("<h2>All summary figures</h2>")
    parts.append(html_table(["key", "value"], [[k, fmt(v)] for k, v in flat.items()]))
    return html_page(title, "\n".join(p for p in parts if p))


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
