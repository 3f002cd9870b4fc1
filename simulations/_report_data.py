"""Reading a run's output directory and the figures computed from its rows (pure, tested on
their own); :mod:`simulations.report` re-exports every name here.

The input is a run's output directory as specs/simulator.md defines it (``summary.json``,
``scenario.toml``, ``series.csv``, ``jobs.csv``, ``providers.csv``); nothing here needs the
engine, so a report can be rebuilt from a directory copied off another machine.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
