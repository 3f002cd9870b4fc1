"""Calibration: one scenario's jobs as a devnet of real daemons ran them and as the
simulator ran them, phase by phase, side by side (specs/simulator.md, "Calibration";
``bench/calibrate.py`` runs both).

Both sides are read from what they record about each job, as seen by its requester:

- the daemon's job records (``GET /api/jobs/<id>``, :func:`from_api_records`):
  ``submitted_ms`` and the timed ``events`` (``locked``, ``awarded``, ``delivered``,
  ``done``, ``escrow_closed``), the requester machine's ``NotifyUser`` events as the
  workspace's daemon noted them;
- the simulator's ``jobs.csv`` (:func:`from_jobs_csv`): ``submitted_s``, ``locked_s``,
  ``awarded_s``, ``delivered_s``, ``finished_s``, ``closed_s``, noted from the same
  events of the same machine.

The phases (:data:`PHASES`), each from one mark to another, in ms:

- ``lock``: submitted to the escrow seen in a block;
- ``award``: submitted to the first award (bids collected, escrow locked);
- ``deliver``: the first award to the last result received before the verdict (the
  provider's fetch, run and the result's way back, and any replacement);
- ``verify``: submitted to the verdict (end to end);
- ``settle``: the verdict to the escrow seen closed (the Settle in a block).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._run import percentile

#: (phase, from mark, to mark).
PHASES: tuple[tuple[str, str, str], ...] = (
    ("lock", "submitted", "locked"),
    ("award", "submitted", "awarded"),
    ("deliver", "awarded", "delivered"),
    ("verify", "submitted", "done"),
    ("settle", "done", "closed"),
)
#: A phase whose p50 differs by more than this factor either way is flagged.
FLAG_RATIO = 2.0
QUANTILES = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))


@dataclass(frozen=True, slots=True)
class JobTimes:
    """One job: how it ended (``verified``, ``unverified``, ``failed``, ``pending``),
    when its requester saw each mark (ms; a mark never reached is absent), its id (hex)."""

    outcome: str
    marks: Mapping[str, int] = field(default_factory=dict)
    job_id: str = ""

    def phase_ms(self, start: str, end: str) -> int | None:
        a, b = self.marks.get(start), self.marks.get(end)
        return None if a is None or b is None else b - a


def from_api_records(records: Iterable[Mapping[str, Any]]) -> list[JobTimes]:
    """Jobs from the daemon API's job records (``Client.job``'s answers)."""
    out = []
    for rec in records:
        marks: dict[str, int] = {"submitted": int(rec["submitted_ms"])}
        for ev in rec.get("events", ()):
            name, at = str(ev["event"]), int(ev["at_ms"])
            if name in ("locked", "awarded"):
                marks.setdefault(name, at)
            elif name == "delivered" and "done" not in marks:
                marks["delivered"] = at
            elif name == "done":
                marks.setdefault("done", at)
            elif name == "escrow_closed":
                marks["closed"] = at
        out.append(JobTimes(str(rec.get("status", "pending")), marks, str(rec["job_id"])))
    return out


_CSV_MARKS = (
    ("submitted", "submitted_s"),
    ("locked", "locked_s"),
    ("awarded", "awarded_s"),
    ("delivered", "delivered_s"),
    ("done", "finished_s"),
    ("closed", "closed_s"),
)


def from_jobs_csv(path: Path) -> list[JobTimes]:
    """Jobs from a simulator run's ``jobs.csv`` (spot-check canaries left out)."""
    out = []
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row.get("spot_check") == "1":
                continue
            marks = {
                mark: round(float(row[col]) * 1000)
                for mark, col in _CSV_MARKS
                if row.get(col, "") != ""
            }
            out.append(JobTimes(row["outcome"], marks, row["job_id"]))
    return out


def counts(jobs: Sequence[JobTimes]) -> dict[str, int]:
    """Jobs submitted, and how many ended verified, failed (failed or unverified) and
    not at all (pending)."""
    return {
        "submitted": len(jobs),
        "verified": sum(1 for j in jobs if j.outcome == "verified"),
        "failed": sum(1 for j in jobs if j.outcome in ("failed", "unverified")),
        "pending": sum(1 for j in jobs if j.outcome not in ("verified", "failed", "unverified")),
    }


def phase_figures(jobs: Sequence[JobTimes]) -> dict[str, dict[str, float | int | None]]:
    """Per phase: ``n`` (jobs that reached both marks) and p50 / p90 / p99 in ms."""
    out: dict[str, dict[str, float | int | None]] = {}
    for name, start, end in PHASES:
        values = [float(v) for j in jobs if (v := j.phase_ms(start, end)) is not None]
        figures: dict[str, float | int | None] = {"n": len(values)}
        for label, q in QUANTILES:
            p = percentile(values, q)
            figures[label] = None if p is None else round(p, 1)
        out[name] = figures
    return out


def _ratio(sim: float | int | None, real: float | int | None) -> float | None:
    if sim is None or real is None or real <= 0:
        return None
    return round(float(sim) / float(real), 2)


def compare(real: Sequence[JobTimes], sim: Sequence[JobTimes]) -> dict[str, Any]:
    """Both sides' counts and phase figures, with sim / real ratios per quantile and the
    phases whose p50 differs beyond :data:`FLAG_RATIO` either way."""
    real_f, sim_f = phase_figures(real), phase_figures(sim)
    phases: dict[str, Any] = {}
    flagged = []
    for name, _, _ in PHASES:
        ratios = {label: _ratio(sim_f[name][label], real_f[name][label]) for label, _ in QUANTILES}
        phases[name] = {"real": real_f[name], "sim": sim_f[name], "ratio": ratios}
        r = ratios["p50"]
        if r is not None and not 1 / FLAG_RATIO <= r <= FLAG_RATIO:
            flagged.append(name)
    return {
        "jobs": {"real": counts(real), "sim": counts(sim)},
        "phases": phases,
        "flagged": flagged,
    }


def _cell(v: float | int | None) -> str:
    return "-" if v is None else f"{v:.0f}" if isinstance(v, int) or v >= 100 else f"{v:.1f}"


def _rcell(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def table(result: Mapping[str, Any], title: str = "") -> str:
    """The side-by-side table of :func:`compare`'s result, as text."""
    lines = [title] if title else []
    jr, js = result["jobs"]["real"], result["jobs"]["sim"]
    lines.append(f"{'jobs':10} {'devnet':>8} {'sim':>8}")
    for key in ("submitted", "verified", "failed", "pending"):
        lines.append(f"{key:10} {jr[key]:8d} {js[key]:8d}")
    lines.append("")
    head = "phase (ms)    n  | devnet p50    p90    p99 |   sim p50    p90    p99 | sim/devnet"
    lines += [head, "-" * len(head)]
    for name, _, _ in PHASES:
        ph = result["phases"][name]
        real, sim, ratio = ph["real"], ph["sim"], ph["ratio"]
        flag = "  !" if name in result["flagged"] else ""
        lines.append(
            f"{name:9} {real['n']:3d}/{sim['n']:<3d}|"
            f" {_cell(real['p50']):>10} {_cell(real['p90']):>6} {_cell(real['p99']):>6} |"
            f" {_cell(sim['p50']):>9} {_cell(sim['p90']):>6} {_cell(sim['p99']):>6} |"
            f" {_rcell(ratio['p50'])} {_rcell(ratio['p90'])} {_rcell(ratio['p99'])}{flag}"
        )
    return "\n".join(lines)


def load_api_records(path: Path) -> list[dict[str, Any]]:
    """Job records saved by ``bench/calibrate.py`` (a JSON list of API answers)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of job records")
    return data
