"""``simulations.run``: run a scenario, summarise it, and write the output directory.

The output contract (specs/simulator.md): ``scenario.toml``, ``summary.json``,
``series.csv``, ``jobs.csv``, ``providers.csv``.
"""

from __future__ import annotations

import csv
import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ledger

from ._errors import SimulationError
from ._scenario import Scenario, dump_toml, load_scenario
from ._sim import KINDS, JobRecord, Simulation, peak_rss_mb

_CHEATING = ("cheater", "colluder", "sybil")


@dataclass(frozen=True, slots=True)
class Summary:
    """The figures of one run (``data`` is summary.json's content)."""

    data: dict[str, Any]

    @property
    def trace_hash(self) -> str:
        return str(self.data["trace_hash"])

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def to_json(self) -> str:
        return json.dumps(self.data, indent=2, sort_keys=True)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-quantile (0..1) by linear interpolation; ``None`` for no values."""
    if not values:
        return None
    s = sorted(values)
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def gini(values: Sequence[float]) -> float:
    """The Gini coefficient of non-negative ``values`` (0: equal, toward 1: one has all)."""
    s = sorted(v for v in values)
    n = len(s)
    total = sum(s)
    if n == 0 or total <= 0:
        return 0.0
    weighted = sum((i + 1) * v for i, v in enumerate(s))
    return (2.0 * weighted) / (n * total) - (n + 1.0) / n


def _since(sim: Simulation, i: int) -> int:
    """When provider ``i`` began to misbehave: its first wrong result, else its first win."""
    st = sim.pstats[i]
    return st.first_wrong_ms if st.first_wrong_ms >= 0 else max(0, st.first_won_ms)


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def run(scenario: Scenario | Path | str, seed: int = 0, out: Path | None = None) -> Summary:
    """Run ``scenario`` (a :class:`Scenario` or a TOML path) with ``seed``; write the
    output directory ``out`` when given. Returns the summary."""
    if not isinstance(scenario, Scenario):
        scenario = load_scenario(Path(scenario))
    if out is not None:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SimulationError(
                f"cannot create the output directory {out}: {exc.strerror}"
            ) from None
    sim = Simulation(scenario, seed)
    sim.run()
    summary = summarise(sim)
    if out is not None:
        write_outputs(sim, summary, out)
    return summary


def conserved(state: ledger.State) -> bool:
    """The real ledger's invariants hold and every credit minted is held or burned."""
    try:
        ledger.check_invariants(state)
    except ledger.LedgerError:
        return False
    held, issued = state.conservation()
    return held == issued


def summarise(sim: Simulation) -> Summary:
    sc = sim.sc
    every = [sim.jobs[j] for j in sim.job_order]
    warm_ms = int(sc.warmup_s * 1000)
    recs = [r for r in every if r.submitted_ms >= warm_ms]
    real = [r for r in recs if not r.canary]
    verified = [r for r in real if r.outcome == "verified"]
    accepted = [r for r in real if r.correct >= 0]
    latencies = [(r.finished_ms - r.submitted_ms) / 1000.0 for r in verified]
    finished = [r for r in real if r.finished_ms >= 0]
    bids = [float(r.bids) for r in finished]
    used_ms = sum(r.compute_ms for r in recs)
    honest_min_ms = sum(r.min_run_ms for r in verified if r.min_run_ms >= 0)
    state = sim.state
    earned = [state.balance(sim.pubs[i]) for i in range(sim.P)]
    honest = [float(earned[i]) for i in range(sim.P) if sim.kind[i] == "honest"]
    cheats = [float(earned[i]) for i in range(sim.P) if sim.kind[i] in _CHEATING]
    adversaries: dict[str, Any] = {}
    for kind in KINDS[1:]:
        members = [i for i in range(sim.P) if sim.kind[i] == kind]
        if not members:
            continue
        det = [i for i in members if sim.pstats[i].detected_ms >= 0]
        jobs_to = [float(sim.pstats[i].jobs_before_detection) for i in det]
        s_to = [(sim.pstats[i].detected_ms - _since(sim, i)) / 1000.0 for i in det]
        adversaries[kind] = {
            "count": len(members),
            "detected": len(det),
            "median_jobs_to_detection": _median(jobs_to),
            "median_s_to_detection": _median(s_to),
        }
    if sim.nonpayer:
        first_job: dict[int, int] = {}
        for r in real:
            first_job.setdefault(r.requester, r.submitted_ms)
        s_to = [
            (ms - first_job.get(r, 0)) / 1000.0 for r, ms in sorted(sim.unpaid_first_ms.items())
        ]
        adversaries["nonpayer"] = {
            "count": len(sim.nonpayer),
            "detected": len(sim.unpaid_first_ms),
            "median_jobs_to_detection": None,
            "median_s_to_detection": _median(s_to),
            "unpaid_deliveries": sum(sim.unpaid.values()),
        }
    if sc.coordinator.equivocate_at_s:
        adversaries["equivocating_coordinator"] = {
            "count": 1,
            "equivocations": sim.equivocations,
            "detected": len(sim.equivocations_detected),
            "median_jobs_to_detection": None,
            "median_s_to_detection": 0.0 if sim.equivocations_detected else None,
            "detected_by": "ledger.Replica equivocation proof (auditing replica)",
        }
    c = sim.counters
    if warm_ms:  # the measured period's own counts (the counters cover the whole run)
        c = {
            k: sum(1 for r in real if r.outcome == k) for k in ("verified", "failed", "unverified")
        }
        c["submitted"] = len(real)
    data: dict[str, Any] = {
        "scenario": sc.name,
        "seed": sim.seed,
        "trace_hash": sim.loop.trace_hash(),
        "sim_seconds": sc.duration_s,
        "wall_seconds": round(sim.wall_s, 3),
        "cpu_seconds": round(sim.cpu_s, 3),
        "events": sim.loop.events,
        "events_per_s": round(sim.loop.events / sim.wall_s, 1) if sim.wall_s else None,
        "nodes": {
            "providers": sim.P,
            "requesters": sim.R,
            "coordinators": 1,
            "providers_instantiated": sim.instantiated,
        },
        "jobs": {
            "submitted": c["submitted"],
            "verified": c["verified"],
            "failed": c["failed"],
            "unverified": c["unverified"],
            "pending": sum(1 for r in real if r.finished_ms < 0),
            "correct_accepted": sum(1 for r in accepted if r.correct == 1),
            "wrong_accepted": sum(1 for r in accepted if r.correct == 0),
            "spot_checks": len(recs) - len(real),
        },
        "latency_s": {
            "p50": percentile(latencies, 0.5),
            "p90": percentile(latencies, 0.9),
            "p99": percentile(latencies, 0.99),
        },
        "bids_per_job": {"mean": _mean(bids), "p50": percentile(bids, 0.5)},
        "compute": {
            "used_s": used_ms / 1000.0,
            "honest_min_s": honest_min_ms / 1000.0,
            "ratio": used_ms / honest_min_ms if honest_min_ms else None,
        },
        "earnings": {
            "gini": gini(honest),
            "honest_mean": _mean(honest),
            "cheater_mean": _mean(cheats) if cheats else None,
        },
        "adversaries": adversaries,
        "ledger": {
            "height": state.height,
            "bytes": sim.block_bytes,
            "conserved": conserved(state),
            "txs_refused": sim.tx_refused,
            "slashes": sim.slashes,
            "reports_refused": sim.reports_refused,
            "burned": state.burned,
        },
        "network": {"messages": sim.messages, "lost": sim.lost, "misbehaved": sim.misbehaved},
        "verify_cache": sc.verify_cache,
        "signature_checks": sim.signature_checks,
        "measured_from_s": sc.warmup_s,
        "whole_run": _whole_run(every),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    return Summary(data)


def _whole_run(recs: list[JobRecord]) -> dict[str, Any]:
    """Every job's figures, warm-up included (equal to the measured ones without one)."""
    real = [r for r in recs if not r.canary]
    verified = [r for r in real if r.outcome == "verified"]
    used_ms = sum(r.compute_ms for r in recs)
    honest_min_ms = sum(r.min_run_ms for r in verified if r.min_run_ms >= 0)
    return {
        "submitted": len(real),
        "verified": len(verified),
        "correct_accepted": sum(1 for r in real if r.correct == 1),
        "wrong_accepted": sum(1 for r in real if r.correct == 0),
        "compute_ratio": used_ms / honest_min_ms if honest_min_ms else None,
    }


def _s(ms: int) -> str:
    return "" if ms < 0 else f"{ms / 1000.0:.3f}"


def write_outputs(sim: Simulation, summary: Summary, out: Path) -> None:
    """The output directory's files (specs/simulator.md, "Output")."""
    sc = sim.sc
    (out / "scenario.toml").write_text(dump_toml(sc.model_dump(mode="json")), encoding="utf-8")
    (out / "summary.json").write_text(summary.to_json() + "\n", encoding="utf-8")
    rows = sim.series.rows
    with (out / "series.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        cols = [
            "t_s",
            "submitted",
            "verified",
            "failed",
            "online_providers",
            "busy_providers",
            "ledger_height",
            "ledger_bytes",
            "mempool",
            "events",
        ]
        w.writerow(cols)
        for row in rows:
            w.writerow([row[c] for c in cols])
    with (out / "jobs.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "job_id",
                "requester",
                "submitted_s",
                "finished_s",
                "outcome",
                "reason",
                "redundancy",
                "replicas_run",
                "bids",
                "price",
                "compute_s",
                "correct",
                "spot_check",
                "honest_min_s",
                "locked_s",
                "awarded_s",
                "delivered_s",
                "closed_s",
            ]
        )
        for job_id in sim.job_order:
            r = sim.jobs[job_id]
            w.writerow(
                [
                    job_id.hex(),
                    f"r{r.requester}",
                    _s(r.submitted_ms),
                    _s(r.finished_ms),
                    r.outcome,
                    r.reason,
                    r.redundancy,
                    r.replicas,
                    r.bids,
                    r.price,
                    f"{r.compute_ms / 1000.0:.3f}",
                    "" if r.correct < 0 else r.correct,
                    int(r.canary),
                    _s(r.min_run_ms),
                    _s(r.locked_ms),
                    _s(r.awarded_ms),
                    _s(r.delivered_ms),
                    _s(r.closed_ms),
                ]
            )
    state = sim.state
    with (out / "providers.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "node",
                "kind",
                "tier",
                "jobs_won",
                "jobs_paid",
                "earned",
                "refused",
                "first_wrong_s",
                "detected_s",
                "jobs_before_detection",
            ]
        )
        for i in range(sim.P):
            st = sim.pstats[i]
            w.writerow(
                [
                    f"p{i}",
                    sim.kind[i],
                    sc.tiers[sim.tier[i]].name,
                    st.won,
                    st.paid_jobs,
                    state.balance(sim.pubs[i]),
                    st.refused,
                    _s(st.first_wrong_ms),
                    _s(st.detected_ms),
                    "" if st.jobs_before_detection < 0 else st.jobs_before_detection,
                ]
            )
