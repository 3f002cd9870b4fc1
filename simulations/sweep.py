"""Sweeps (``aimx sim sweep GRID.toml``): many runs of scenarios x parameter overrides x
seeds, in parallel, summarised across seeds with 95% confidence intervals.

A grid file (specs/simulator.md, "Sweeps")::

    name = "redundancy"                      # optional; default: the file's stem
    scenarios = ["smoke.toml"]               # relative to the grid file
    seeds = 5                                # 1..5, or a list: [1, 7, 42]

    [overrides]                              # applied to every run (optional)
    duration_s = 300

    [grid]                                   # every combination of these values
    "jobs.redundancy" = [1, 2, 3]

    [variants.fixed2]                        # named override sets, e.g. policies (optional)
    "jobs.redundancy" = 2
    [variants.probation]
    "jobs.redundancy" = 1

Keys are the scenario's keys, dotted (``jobs.redundancy``), quoted or as nested tables.
The points are scenarios x variants x grid combinations; each runs once per seed. A run is
fully determined by its scenario, overrides and seed, so a sweep gives the same numbers
wherever its runs are executed.

Runs execute in local worker processes (:class:`concurrent.futures.ProcessPoolExecutor`)
by default, or on a cluster that already runs Ray (``--address ray://HOST:PORT``) or Dask
(``--address tcp://HOST:PORT``); neither is a dependency, each is imported only when asked
for, and its workers need this package (the same version) installed. Locally each run's
output directory is kept under ``OUT/runs/``; on a cluster the workers may be other
machines, so only the summaries come back.

Outputs in ``OUT``: ``runs.csv`` (one row per run: its point, seed and every number of its
summary), ``sweep.csv`` (one row per point and figure: n, mean, standard deviation and the
95% confidence interval of the mean, Student's t), and ``sweep.html`` (the headline figures
as mean +- half-interval per point, plots with error bars, the grid file).
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import re
import statistics
import tomllib
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from . import report
from ._errors import SimulationError
from ._scenario import Scenario
from .report import esc, flatten, fmt, html_page, html_table

RUNS_CSV, SWEEP_CSV, SWEEP_HTML, RUNS_DIR = "runs.csv", "sweep.csv", "sweep.html", "runs"


class SweepError(SimulationError):
    """A grid file is invalid, a run failed, or the cluster asked for cannot be used."""


# --- statistics -----------------------------------------------------------------------------

#: Two-sided 95% critical values of Student's t by degrees of freedom (1-30, then some
#: larger); between rows the smaller df's (larger, conservative) value is used.
T95: dict[int, float] = {
    1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
    9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120,
    17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064,
    25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048, 29: 2.045, 30: 2.042, 40: 2.021, 60: 2.000,
    120: 1.980,
}  # fmt: skip
Z95 = 1.960


def t95(df: int) -> float:
    """The two-sided 95% critical value of Student's t with ``df`` degrees of freedom."""
    if df < 1:
        raise ValueError("a confidence interval needs at least two samples")
    return T95[max(k for k in T95 if k <= df)] if df <= 120 else Z95


@dataclass(frozen=True)
class Stat:
    """Mean of a figure across seeds with the 95% confidence interval of the mean
    (``low``/``high`` are None with a single sample)."""

    n: int
    mean: float
    stdev: float | None
    low: float | None
    high: float | None

    @property
    def half(self) -> float | None:
        return None if self.high is None else self.high - self.mean


def stat(values: Sequence[float]) -> Stat:
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = statistics.fmean(values)
    if n == 1:
        return Stat(1, mean, None, None, None)
    sd = statistics.stdev(values)
    half = t95(n - 1) * sd / math.sqrt(n)
    return Stat(n, mean, sd, mean - half, mean + half)


# --- the grid -------------------------------------------------------------------------------


class _Grid(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = ""
    scenarios: list[str] = Field(min_length=1)
    seeds: int | list[int] = 3
    overrides: dict[str, Any] = {}
    grid: dict[str, Any] = {}
    variants: dict[str, dict[str, Any]] = {}


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A copy of scenario ``data`` (parsed TOML) with each dotted key set to its value."""
    out: dict[str, Any] = json.loads(json.dumps(data))  # TOML values are JSON ones (dates aside)
    for key, value in overrides.items():
        node = out
        *parents, last = key.split(".")
        for part in parents:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise SweepError(f"override {key}: {part} is not a table in the scenario")
            node = child
        node[last] = value
    return out


@dataclass(frozen=True)
class Point:
    """One cell of the grid: a scenario with its overrides (all seeds of it share it)."""

    scenario: str  # the scenario's name
    variant: str  # "" if the grid has no variants
    params: tuple[tuple[str, Any], ...]  # this cell's [grid] values, in the file's order
    overrides: dict[str, Any] = field(hash=False, compare=False)
    scenario_text: str = field(hash=False, compare=False, repr=False)

    @property
    def label(self) -> str:
        parts = [self.scenario]
        if self.variant:
            parts.append(self.variant)
        parts += [f"{k}={json.dumps(v)}" for k, v in self.params]
        return " ".join(parts)

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.=-]+", "_", self.label.replace(" ", "_"))[:120]


@dataclass(frozen=True)
class Sweep:
    """A grid file, read and expanded."""

    name: str
    path: Path
    text: str
    points: list[Point]
    seeds: list[int]
    param_keys: list[str]

    @property
    def runs(self) -> int:
        return len(self.points) * len(self.seeds)


def scenario_of(point: Point) -> Scenario:
    """The point's scenario, validated; errors name the grid cell and the key."""
    data = apply_overrides(tomllib.loads(point.scenario_text), point.overrides)
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        msg = first["msg"].removeprefix("Value error, ")
        raise SweepError(f"{point.label}: {where}: {msg}") from None


def load_grid(path: Path) -> Sweep:
    """Read a grid file, expand it and validate every point's scenario (so a bad key stops
    the sweep before anything runs)."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SweepError(f"cannot read grid file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SweepError(f"{path}: not valid TOML: {exc}") from None
    try:
        spec = _Grid.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise SweepError(f"{path}: {where}: {first['msg']}") from None
    seeds = list(range(1, spec.seeds + 1)) if isinstance(spec.seeds, int) else spec.seeds
    if not seeds or len(set(seeds)) != len(seeds):
        raise SweepError(f"{path}: seeds: give a positive count or a list of distinct seeds")
    grid = flatten(spec.grid)  # nested tables as dotted keys
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise SweepError(f"{path}: grid.{key}: give a non-empty list of values")
    base = flatten(spec.overrides)
    variants = {name: flatten(v) for name, v in spec.variants.items()} or {"": {}}
    points = []
    for entry in spec.scenarios:
        file = (path.parent / entry).resolve()
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise SweepError(f"{path}: scenarios: cannot read {entry}: {exc.strerror}") from None
        try:
            name = str(tomllib.loads(text).get("name") or file.stem)
        except tomllib.TOMLDecodeError as exc:
            raise SweepError(f"{file}: not valid TOML: {exc}") from None
        for variant, vover in variants.items():
            for combo in itertools.product(*grid.values()):
                params = tuple(zip(grid, combo, strict=True))
                overrides = {**base, **vover, **dict(params)}
                points.append(Point(name, variant, params, overrides, text))
    labels = [p.label for p in points]
    if len(set(labels)) != len(labels):
        raise SweepError(f"{path}: two scenarios are named alike; give each a distinct name")
    for point in points:
        scenario_of(point)
    return Sweep(spec.name or path.stem, path, path.read_text(), points, seeds, list(grid))


# --- running --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    """What a worker needs to run one seed of one point: plain data, picklable, with no
    file the worker must be able to read (it may be another machine)."""

    label: str
    scenario_text: str
    overrides: dict[str, Any]
    seed: int
    out: str | None


def summary_dict(summary: object) -> dict[str, Any]:
    """A run's summary as the dict of summary.json, whatever type the engine returns."""
    if isinstance(summary, dict):
        return {str(k): v for k, v in summary.items()}
    data = getattr(summary, "data", None)  # simulations.Summary
    if isinstance(data, dict):
        return {str(k): v for k, v in data.items()}
    for method in ("to_json_dict", "as_dict", "to_dict", "model_dump"):
        fn = getattr(summary, method, None)
        if callable(fn):
            value = fn()
            if isinstance(value, dict):
                return value
    import dataclasses

    if dataclasses.is_dataclass(summary) and not isinstance(summary, type):
        return dataclasses.asdict(summary)
    raise SweepError(f"cannot read a summary of type {type(summary).__name__}")


def run_task(task: Task) -> dict[str, Any]:
    """Run one seed of one point (in a worker) and return its summary as a dict."""
    import simulations

    data = apply_overrides(tomllib.loads(task.scenario_text), task.overrides)
    scenario = Scenario.model_validate(data)
    out = Path(task.out) if task.out is not None else None
    summary = simulations.run(scenario, task.seed, out)
    if out is not None and (out / report.SUMMARY).is_file():
        loaded: dict[str, Any] = json.loads((out / report.SUMMARY).read_text())
        return loaded
    return summary_dict(summary)


@dataclass(frozen=True)
class Result:
    point: Point
    seed: int
    summary: dict[str, Any]
    run_dir: Path | None


Progress = Callable[[Result, int, int], None]


def _local(tasks: list[Task], workers: int) -> Iterable[tuple[int, dict[str, Any]]]:
    pool = ProcessPoolExecutor(max_workers=workers)
    try:
        futures = {pool.submit(run_task, t): i for i, t in enumerate(tasks)}
        for future in as_completed(futures):
            i = futures[future]
            try:
                yield i, future.result()
            except SimulationError as exc:
                raise SweepError(f"{tasks[i].label} seed {tasks[i].seed}: {exc}") from None
    finally:
        # On an error (or Ctrl-C) the runs not started yet are dropped, not waited for.
        pool.shutdown(wait=True, cancel_futures=True)


def _ray(tasks: list[Task], address: str) -> Iterable[tuple[int, dict[str, Any]]]:
    try:
        import ray  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        raise SweepError(
            f"--address {address}: the ray package is not installed here; install the Ray "
            "version the cluster runs (pip install 'ray[client]'), or leave out --address"
        ) from None
    ray.init(address=address)
    try:
        remote = ray.remote(run_task)
        refs = [remote.remote(t) for t in tasks]
        index = {ref: i for i, ref in enumerate(refs)}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                yield index[ref], ray.get(ref)
    finally:
        ray.shutdown()


def _dask(tasks: list[Task], address: str) -> Iterable[tuple[int, dict[str, Any]]]:
    try:
        from dask.distributed import Client  # type: ignore[import-not-found,unused-ignore]
        from dask.distributed import as_completed as dask_completed
    except ImportError:
        raise SweepError(
            f"--address {address}: the dask.distributed package is not installed here; install "
            "the version the cluster runs (pip install 'distributed'), or leave out --address"
        ) from None
    with Client(address) as client:
        futures = client.map(run_task, tasks, pure=False)
        index = {f.key: i for i, f in enumerate(futures)}
        for future in dask_completed(futures):
            yield index[future.key], future.result()


def executor_for(address: str | None) -> str:
    """Which engine an ``--address`` names: ``local``, ``ray`` or ``dask``."""
    if address is None:
        return "local"
    if address.startswith("ray://") or address == "auto":
        return "ray"
    if address.startswith(("tcp://", "tls://")):
        return "dask"
    raise SweepError(
        f"--address {address}: give ray://HOST:PORT (a Ray cluster), tcp://HOST:PORT (a Dask "
        "scheduler), or leave it out to use local worker processes"
    )


def run_sweep(
    sweep: Sweep,
    out: Path,
    *,
    workers: int | None = None,
    address: str | None = None,
    progress: Progress | None = None,
) -> list[Result]:
    """Run every point of the sweep for every seed; results in grid order (points, then
    seeds). Locally each run's output directory is ``OUT/runs/<n>-<point>-s<seed>``."""
    engine = executor_for(address)
    out = Path(out)
    specs: list[tuple[Point, int, Path | None]] = []
    for n, point in enumerate(sweep.points):
        for seed in sweep.seeds:
            # The index keeps directories apart where long labels cut to the same slug.
            name = f"{n:03d}-{point.slug}-s{seed}"
            run_dir = out / RUNS_DIR / name if engine == "local" else None
            specs.append((point, seed, run_dir))
    tasks = [
        Task(p.label, p.scenario_text, p.overrides, seed, str(d) if d else None)
        for p, seed, d in specs
    ]
    if engine == "local":
        stream = _local(tasks, workers or os.cpu_count() or 1)
    elif engine == "ray":
        stream = _ray(tasks, address or "")
    else:
        stream = _dask(tasks, address or "")
    results: dict[int, Result] = {}
    for i, summary in stream:
        point, seed, run_dir = specs[i]
        results[i] = Result(point, seed, summary, run_dir)
        if progress is not None:
            progress(results[i], len(results), len(tasks))
    return [results[i] for i in range(len(tasks))]


# --- collecting -----------------------------------------------------------------------------


def numbers(summary: dict[str, Any]) -> dict[str, float]:
    """Every number of a summary by dotted key (booleans as 0/1: ``ledger.conserved``),
    except the seed (its own column)."""
    out = {}
    for key, value in flatten(summary).items():
        if key == "seed":
            continue
        if isinstance(value, bool):
            out[key] = 1.0 if value else 0.0
        elif isinstance(value, int | float) and math.isfinite(value):
            out[key] = float(value)
    return out


def aggregate(results: Sequence[Result]) -> dict[Point, dict[str, Stat]]:
    """Per point, each summary figure's mean and confidence interval across its seeds (a
    figure missing from some runs counts over the runs that have it)."""
    values: dict[Point, dict[str, list[float]]] = {}
    for r in results:
        per = values.setdefault(r.point, {})
        for key, v in numbers(r.summary).items():
            per.setdefault(key, []).append(v)
    return {p: {k: stat(v) for k, v in figs.items()} for p, figs in values.items()}


#: Figures of the sweep page's table and plots: (dotted key, what it is).
SWEEP_FIGURES: tuple[tuple[str, str], ...] = (
    ("jobs.verified", "jobs verified"),
    ("jobs.failed", "jobs failed"),
    ("jobs.wrong_accepted", "wrong results accepted"),
    ("latency_s.p50", "submit to result p50 (s)"),
    ("latency_s.p99", "submit to result p99 (s)"),
    ("bids_per_job.mean", "bids per job"),
    ("compute.ratio", "compute / honest minimum"),
    ("earnings.gini", "Gini of earnings"),
    ("wall_seconds", "wall seconds"),
)


def _cell(s: Stat | None) -> str:
    if s is None:
        return ""
    if s.half is None:
        return fmt(s.mean)
    return f"{fmt(s.mean)} ± {fmt(s.half)}"


def write_csvs(sweep: Sweep, results: Sequence[Result], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    keys: dict[str, None] = {}
    for r in results:
        keys.update(dict.fromkeys(numbers(r.summary)))
    head = ["scenario", "variant", *sweep.param_keys, "seed", "trace_hash", "run_dir"]
    with (out / RUNS_CSV).open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(head + list(keys))
        for r in results:
            nums = numbers(r.summary)
            w.writerow(
                [r.point.scenario, r.point.variant, *[json.dumps(v) for _, v in r.point.params]]
                + [r.seed, r.summary.get("trace_hash", ""), r.run_dir or ""]
                + [repr(nums[k]) if k in nums else "" for k in keys]
            )
    stats = aggregate(results)
    with (out / SWEEP_CSV).open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["scenario", "variant", *sweep.param_keys, "figure", "n", "mean", "stdev",
                    "ci95_low", "ci95_high"])  # fmt: skip
        for point in sweep.points:
            for key, s in stats.get(point, {}).items():
                w.writerow(
                    [point.scenario, point.variant, *[json.dumps(v) for _, v in point.params]]
                    + [key, s.n, repr(s.mean)]
                    + ["" if x is None else repr(x) for x in (s.stdev, s.low, s.high)]
                )


def plot_figure(sweep: Sweep, stats: dict[Point, dict[str, Stat]], key: str, title: str) -> bytes:
    """One figure across the sweep's points: the mean per point with its 95% interval."""
    fig, (ax,) = report._figure()
    points = [p for p in sweep.points if key in stats.get(p, {})]
    means = [stats[p][key].mean for p in points]
    errs = [stats[p][key].half or 0.0 for p in points]
    if points:
        ax.bar(range(len(points)), means, yerr=errs, capsize=4, color=report.COLOURS[0])
        ax.set_xticks(range(len(points)), [p.label for p in points], rotation=20, ha="right",
                      fontsize="small")  # fmt: skip
    else:
        report._no_data(ax, "no runs reported it")
    ax.set(title=f"{title} (mean, 95% CI over {len(sweep.seeds)} seeds)", ylabel=title)
    return report.png(fig)


def render_sweep(sweep: Sweep, results: Sequence[Result]) -> str:
    stats = aggregate(results)
    figures = [(k, t) for k, t in SWEEP_FIGURES if any(k in s for s in stats.values())]
    body = [
        f"<p>{len(sweep.points)} points x {len(sweep.seeds)} seeds "
        f"({', '.join(map(str, sweep.seeds))}) = {len(results)} runs. Cells: mean ± half "
        "the 95% confidence interval of the mean across seeds (Student's t).</p>"
    ]
    if any(r.summary.get("verify_cache") for r in results):
        body.append(report.verify_cache_note({"verify_cache": True}))
    body.append("<h2>Figures</h2>")
    body.append(
        html_table(
            ["point"] + [t for _, t in figures],
            [[p.label] + [_cell(stats.get(p, {}).get(k)) for k, _ in figures]
             for p in sweep.points],
        )
    )  # fmt: skip
    body.append("<h2>Plots</h2>")
    for key, title in figures:
        body.append(f"<figure>{report.img_tag(plot_figure(sweep, stats, key, title), key)}"
                    "</figure>")  # fmt: skip
    body.append("<h2>Runs</h2>")
    body.append(
        html_table(
            ["point", "seed", "jobs verified", "compute ratio", "trace hash"],
            [[r.point.label, str(r.seed), fmt(flatten(r.summary).get("jobs.verified")),
              fmt(flatten(r.summary).get("compute.ratio")),
              str(r.summary.get("trace_hash", ""))[:16]] for r in results],
        )
    )  # fmt: skip
    body.append(f"<h2>Grid file</h2><pre>{esc(sweep.text)}</pre>")
    return html_page(f"Simulation sweep: {sweep.name}", "\n".join(body))


def write_report(sweep: Sweep, results: Sequence[Result], out: Path) -> Path:
    """Write runs.csv, sweep.csv and sweep.html into ``out``; the page's path."""
    write_csvs(sweep, results, out)
    page = out / SWEEP_HTML
    page.write_text(render_sweep(sweep, results))
    return page
