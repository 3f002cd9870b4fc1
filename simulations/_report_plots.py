"""The report's plots: each takes a sequence of runs and overlays them, so ``compare`` draws
two runs with the same code; :mod:`simulations.report` re-exports every name here.

They build :class:`matplotlib.figure.Figure` objects directly (the Agg canvas, never
``pyplot``'s global figure registry), so several reports can be built in one process, or in
parallel ones, without sharing state.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ._report_data import (
    CHEATING,
    COMPUTE_TARGET_RATIO,
    DETECTION_TARGET_JOBS,
    FIXED_REPLICATION_RATIO,
    HONEST,
    Detection,
    Run,
    compute_ratio_series,
    detections,
    earnings,
    ecdf,
    gini,
    is_spot_check,
    latencies_s,
    lorenz,
    num,
    outcome_times,
    series_column,
)

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
