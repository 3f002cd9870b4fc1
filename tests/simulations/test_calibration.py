"""Calibration (specs/simulator.md, "Calibration"): the calibration scenario runs in the
simulator with its phases in jobs.csv, and the comparison puts a devnet's job records (a
real tiny run of bench/calibrate.py, kept in data/) beside the simulator's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import simulations
from simulations import calibration

DEVNET = Path(__file__).parent / "data" / "calibration_devnet.json"
MARKS = ("submitted", "locked", "awarded", "delivered", "done", "closed")


def scenario(**jobs: Any) -> simulations.Scenario:
    base = simulations.load_scenario(simulations.SCENARIOS_DIR / "calibration.toml")
    return base.model_copy(update={"jobs": base.jobs.model_copy(update=jobs)})


@pytest.fixture(scope="module")
def devnet() -> dict[str, Any]:
    body: dict[str, Any] = json.loads(DEVNET.read_text())
    return body


@pytest.fixture(scope="module")
def sim_run(devnet: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The calibration scenario at the devnet run's redundancy and number of jobs."""
    out = tmp_path_factory.mktemp("calibration")
    sc = scenario(redundancy=devnet["redundancy"], max_jobs=len(devnet["records"]))
    simulations.run(sc, seed=0, out=out)
    return out


def test_calibration_scenario_records_every_phase_in_jobs_csv(
    devnet: dict[str, Any], sim_run: Path
) -> None:
    jobs = calibration.from_jobs_csv(sim_run / "jobs.csv")
    summary = json.loads((sim_run / "summary.json").read_text())
    # max_jobs ends the arrivals at the devnet's count
    assert len(jobs) == summary["jobs"]["submitted"] == len(devnet["records"])
    assert all(j.outcome == "verified" for j in jobs)
    sc = scenario()
    latency, delay = sc.network.latency_ms[0][0], sc.network.block_delay_ms
    for j in jobs:
        times = [j.marks[m] for m in MARKS]
        assert times == sorted(times), j
        # a lock waits for its message, at most a block, and the block's way back; the
        # settle's block comes after the verdict and takes the block delay to be seen
        assert j.marks["locked"] - j.marks["submitted"] <= latency + sc.block_ms + delay + 1
        assert j.marks["closed"] - j.marks["done"] >= delay


def test_comparison_table_of_devnet_records_and_simulator_jobs(
    devnet: dict[str, Any], sim_run: Path
) -> None:
    real = calibration.from_api_records(devnet["records"])
    sim = calibration.from_jobs_csv(sim_run / "jobs.csv")
    n = len(real)
    # the devnet's records carry every phase too (the daemon's timed events)
    assert all(set(MARKS) <= set(j.marks) for j in real)
    result = calibration.compare(real, sim)
    assert result["jobs"]["real"] == {"submitted": n, "verified": n, "failed": 0, "pending": 0}
    assert result["jobs"]["sim"] == result["jobs"]["real"]
    for name, start, end in calibration.PHASES:
        ph = result["phases"][name]
        assert ph["real"]["n"] == ph["sim"]["n"] == n
        real_values = sorted(j.phase_ms(start, end) or 0 for j in real)
        assert ph["real"]["p50"] == pytest.approx(
            (real_values[n // 2 - 1] + real_values[n // 2]) / 2
        )
        assert ph["ratio"]["p50"] == pytest.approx(ph["sim"]["p50"] / ph["real"]["p50"], abs=0.01)
        flagged = not 0.5 <= ph["sim"]["p50"] / ph["real"]["p50"] <= 2.0
        assert (name in result["flagged"]) == flagged
    text = calibration.table(result, "calibration")
    assert f"submitted  {n:8d} {n:8d}" in text
    for name, _, _ in calibration.PHASES:
        assert any(line.startswith(name) for line in text.splitlines())


def test_sandbox_start_up_lengthens_a_providers_first_run(tmp_path: Path) -> None:
    """A run waits for its worker: the spare's start-up on a provider's first run of the
    model, a worker of its own while the spare is being made again, none when warm."""
    sc = scenario(
        run_ms=10.0, startup_ms=1000.0, worker_start_ms=2000.0, run_noise=0.0, max_jobs=12
    )
    simulations.run(sc, seed=1, out=tmp_path)
    jobs = calibration.from_jobs_csv(tmp_path / "jobs.csv")
    deliver = [j.phase_ms("awarded", "delivered") for j in jobs]
    assert all(d is not None for d in deliver)
    assert deliver[0] is not None and deliver[0] >= 1000  # cold: the spare worker
    # warm workers later: the run, the result with its sealed bytes, its receipt, and the
    # claim's block that publishes the key (two trips, at most a block and its delay)
    block = sc.block_ms + sc.network.block_delay_ms
    warm = min(d for d in deliver if d is not None)
    assert warm < 1000 and warm < 250 + block
