"""The simulator: determinism, conservation of credits, adversaries detected as the
summary says, the smoke scenario, and scenario errors that name the key."""

from __future__ import annotations

import csv
import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import ledger
import simulations
from simulations import ScenarioError, Simulation, parse_scenario

TINY = """
name = "tiny"
duration_s = 90
drain_s = 30
block_ms = 1000
[nodes]
providers = 120
requesters = 8
[network]
loss = 0.01
[churn]
enabled = true
session_mean_s = 300
offline_mean_s = 60
[jobs]
rate_per_s = 2.0
model_mb = [0.5, 2.0]
deadline_s = 40
[adversaries]
cheaters = 0.1
lazy = 0.02
spammers = 0.02
nonpayers = 0.125
"""


def tiny(extra: str = "", *, top: str = "") -> simulations.Scenario:
    """The tiny scenario; ``top`` goes before its tables, ``extra`` after them."""
    return parse_scenario(top + TINY + extra)


@functools.cache
def tiny_run(seed: int) -> simulations.Summary:
    """``simulations.run(tiny(), seed=seed)``, run once for the tests that read it (the
    summary is only read)."""
    return simulations.run(tiny(), seed=seed)


def test_same_seed_same_trace_hash_and_another_seed_differs() -> None:
    a = simulations.run(tiny(), seed=7)
    b = simulations.run(tiny(), seed=7)
    c = simulations.run(tiny(), seed=8)
    assert a.trace_hash == b.trace_hash
    assert a["jobs"] == b["jobs"]
    assert c.trace_hash != a.trace_hash
    assert a["events"] > 1000 and a["jobs"]["verified"] > 0


def test_trace_hash_is_the_same_in_another_process(tmp_path: Path) -> None:
    """Nothing depends on the process (string hashing, set order, addresses)."""
    scenario = tmp_path / "tiny.toml"
    scenario.write_text(TINY)
    here = simulations.run(scenario, seed=3).trace_hash
    code = "import sys, simulations; print(simulations.run(sys.argv[1], seed=3).trace_hash)"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    done = subprocess.run(
        [sys.executable, "-c", code, str(scenario)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=True,
    )
    assert done.stdout.strip() == here


def test_verification_cache_changes_nothing_but_the_label() -> None:
    off = tiny_run(5)
    on = simulations.run(tiny(top="verify_cache = true\n"), seed=5)
    assert on.trace_hash == off.trace_hash
    assert on["verify_cache"] is True and off["verify_cache"] is False


def test_credits_are_conserved_at_the_end() -> None:
    sim = Simulation(tiny(), seed=11)
    sim.run()
    state = sim.state
    ledger.check_invariants(state)
    held, issued = state.conservation()
    assert held == issued == state.minted - state.burned
    # money moved: providers were paid out of escrows, requesters spent
    paid = sum(state.balance(sim.pubs[i]) for i in range(sim.P))
    assert paid > 0
    funds = sim.sc.requester_funds * sim.R
    spent = funds - sum(state.balance(sim.pubs[sim.P + r]) for r in range(sim.R))
    open_escrows = sum(e.remaining for _, e in state.escrows())  # reserved prices too
    assert spent == paid + open_escrows + state.fees
    summary = simulations.run(tiny(), seed=11)
    assert summary["ledger"]["conserved"] is True
    assert summary["ledger"]["height"] == state.height


def test_cheaters_detected_as_the_summary_says(tmp_path: Path) -> None:
    scenario = tiny().model_copy(
        update={
            "adversaries": simulations.Scenario().adversaries.model_copy(update={"cheaters": 0.2})
        }
    )
    summary = simulations.run(scenario, seed=2, out=tmp_path)
    with (tmp_path / "providers.csv").open() as f:
        rows = list(csv.DictReader(f))
    cheaters = [r for r in rows if r["kind"] == "cheater"]
    honest = [r for r in rows if r["kind"] == "honest"]
    detected = [r for r in cheaters if r["detected_s"]]
    report = summary["adversaries"]["cheater"]
    assert report["count"] == len(cheaters) == round(0.2 * 120)
    assert report["detected"] == len(detected) > 0
    # a detected cheater was refused after (or when) it first delivered a wrong result
    for r in detected:
        assert int(r["refused"]) >= 1
        assert float(r["detected_s"]) >= float(r["first_wrong_s"])
    # no honest provider is ever refused (non-colluding cheaters cannot outvote one)
    assert all(not r["detected_s"] and r["refused"] == "0" for r in honest)
    assert summary["jobs"]["wrong_accepted"] == 0
    assert summary["jobs"]["correct_accepted"] > 0


def test_colluders_can_win_against_redundancy_two() -> None:
    """Colluding cheaters share one wrong answer: with redundancy 2 two of them agree
    sometimes, and the summary counts the wrong results it accepted."""
    scenario = tiny().model_copy(
        update={
            "adversaries": simulations.Scenario().adversaries.model_copy(
                update={"cheaters": 0.5, "colluding": True}
            )
        }
    )
    summary = simulations.run(scenario, seed=4)
    assert summary["adversaries"]["colluder"]["count"] == 60
    assert summary["jobs"]["wrong_accepted"] > 0


def test_equivocating_coordinator_is_caught_by_a_replica() -> None:
    summary = simulations.run(tiny("[coordinator]\nequivocate_at_s = [20.0, 50.0]\n"), seed=1)
    eq = summary["adversaries"]["equivocating_coordinator"]
    assert eq["equivocations"] == 2
    assert eq["detected"] == 2


def test_smoke_scenario_completes_jobs(tmp_path: Path) -> None:
    summary = simulations.run(simulations.SCENARIOS_DIR / "smoke.toml", seed=0, out=tmp_path)
    jobs = summary["jobs"]
    assert summary["nodes"]["providers"] + summary["nodes"]["requesters"] >= 1000
    assert jobs["submitted"] > 300
    assert jobs["verified"] >= 0.95 * jobs["submitted"]
    assert summary["ledger"]["conserved"] is True
    data = json.loads((tmp_path / "summary.json").read_text())
    for key in (
        "scenario",
        "seed",
        "trace_hash",
        "sim_seconds",
        "wall_seconds",
        "events",
        "nodes",
        "jobs",
        "latency_s",
        "bids_per_job",
        "compute",
        "earnings",
        "adversaries",
        "ledger",
        "verify_cache",
        "peak_rss_mb",
    ):
        assert key in data
    with (tmp_path / "jobs.csv").open() as f:
        jobs_rows = list(csv.DictReader(f))
    assert sum(r["outcome"] == "verified" for r in jobs_rows) == jobs["verified"]
    with (tmp_path / "series.csv").open() as f:
        series = list(csv.DictReader(f))
    assert int(series[-1]["verified"]) == jobs["verified"]
    again = parse_scenario((tmp_path / "scenario.toml").read_text())
    assert again == simulations.load_scenario(simulations.SCENARIOS_DIR / "smoke.toml")


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[jobs]\nrate_per_s = -1\n", "jobs.rate_per_s"),
        ("[nodes]\nproviders = 0\n", "nodes.providers"),
        ("[network]\nregions = ['a']\n", "network"),
        ("[adversaries]\ncheaters = 0.9\nlazy = 0.5\n", "adversaries"),
        ("[jobs]\nrate = 1\n", "jobs.rate"),
        ("duration_s = [", "not valid TOML"),
        ("duration_s = 600\nwarmup_s = 550\n", "warmup_s must end before arrivals stop"),
    ],
)
def test_scenario_errors_name_the_key(text: str, key: str) -> None:
    with pytest.raises(ScenarioError, match=key.replace(".", r"\.")):
        parse_scenario(text)


def test_shipped_scenarios_are_valid() -> None:
    names = {p.stem for p in simulations.SCENARIOS_DIR.glob("*.toml")}
    assert names >= {"cheaters-20pct", "churn", "coordinator-outage", "scale-100k", "smoke"}
    for name in sorted(names):
        simulations.load_scenario(simulations.SCENARIOS_DIR / f"{name}.toml")


def test_coordinator_outage_stops_the_chain_and_jobs_resume(tmp_path: Path) -> None:
    summary = simulations.run(
        tiny("[[coordinator.outages]]\nstart_s = 20\nend_s = 45\n"), seed=6, out=tmp_path
    )
    with (tmp_path / "series.csv").open() as f:
        series = list(csv.DictReader(f))
    during = {r["ledger_height"] for r in series if 25 <= float(r["t_s"]) <= 45}
    assert len(during) == 1  # no block while it is down
    assert int(series[-1]["ledger_height"]) > int(during.pop())
    with (tmp_path / "jobs.csv").open() as f:
        jobs = list(csv.DictReader(f))
    during_jobs = [j for j in jobs if 20 <= float(j["submitted_s"]) < 45]
    assert during_jobs and any(j["outcome"] == "verified" for j in during_jobs)
    assert summary["ledger"]["conserved"] is True


def test_a_burst_adds_arrivals() -> None:
    calm = simulations.run(tiny(), seed=9)
    burst = simulations.run(
        tiny("[[jobs.bursts]]\nstart_s = 10\nduration_s = 10\nrate_per_s = 10.0\n"), seed=9
    )
    assert burst["jobs"]["submitted"] >= calm["jobs"]["submitted"] + 50


def test_lazy_providers_spammers_and_nonpayers_detected_as_the_summary_says(
    tmp_path: Path,
) -> None:
    base = tiny()
    scenario = base.model_copy(
        update={"adversaries": base.adversaries.model_copy(update={"lazy": 0.05, "spammers": 0.05})}
    )
    summary = simulations.run(scenario, seed=3, out=tmp_path)
    with (tmp_path / "providers.csv").open() as f:
        rows = list(csv.DictReader(f))
    adv = summary["adversaries"]
    for kind in ("lazy", "spammer"):
        members = [r for r in rows if r["kind"] == kind]
        detected = [r for r in members if r["detected_s"]]
        assert adv[kind]["count"] == len(members) > 0
        assert adv[kind]["detected"] == len(detected) > 0
        # the requester gives up on a silent replica well within the job's deadline
        assert adv[kind]["median_s_to_detection"] <= 40
        assert all(int(r["jobs_won"]) >= 1 for r in detected)
    assert adv["nonpayer"] == {
        "count": 1,
        "detected": 1,
        "median_jobs_to_detection": None,
        "median_s_to_detection": adv["nonpayer"]["median_s_to_detection"],
        "unpaid_deliveries": adv["nonpayer"]["unpaid_deliveries"],
    }
    assert adv["nonpayer"]["unpaid_deliveries"] > 0
    assert not any(r["detected_s"] for r in rows if r["kind"] == "honest")


def test_refused_locks_fail_their_jobs_and_the_lane_recovers(tmp_path: Path) -> None:
    """A requester short of credits: its locks beyond what it holds are dropped when the
    block is made; those jobs fail, the sequence gap is filled, later jobs still run."""
    text = TINY.replace("requesters = 8", "requesters = 1").replace(
        'name = "tiny"', 'name = "tiny"\nrequester_funds = 45000'
    )
    # A small, lossy world: a seed whose first jobs hold most of the credits in escrows
    # until expiry runs nothing verified for a while; this one shows the recovery.
    summary = simulations.run(parse_scenario(text), seed=5, out=tmp_path)
    assert summary["ledger"]["txs_refused"] > 0
    assert summary["ledger"]["conserved"] is True
    with (tmp_path / "jobs.csv").open() as f:
        jobs = list(csv.DictReader(f))
    refused = [j for j in jobs if j["reason"].startswith("escrow not locked")]
    assert refused
    first = min(float(j["submitted_s"]) for j in refused)
    later = [j for j in jobs if float(j["submitted_s"]) > first + 5 and j["outcome"] == "verified"]
    assert later


def test_requesters_past_the_genesis_limit_are_funded_by_mints() -> None:
    """A genesis holds 4,096 balances; the rest are minted in blocks before time 0."""
    sim = Simulation(
        parse_scenario(
            "duration_s = 60\ndrain_s = 20\n[nodes]\nproviders = 100\nrequesters = 4200\n"
            "[jobs]\nrate_per_s = 2.0\nmodel_mb = [0.5, 1.0]\ndeadline_s = 30\n"
        ),
        seed=1,
    )
    assert sim.state.height == 1
    last = sim.pubs[sim.P + 4199]
    assert sim.state.balance(last) == sim.sc.requester_funds
    sim.run()
    minted_ones = {sim.jobs[j].requester for j in sim.job_order if sim.jobs[j].requester >= 4096}
    assert minted_ones
    assert all(
        sim.jobs[j].outcome == "verified"
        for j in sim.job_order
        if sim.jobs[j].requester in minted_ones
    )
    ledger.check_invariants(sim.state)


def test_a_warm_up_is_run_but_left_out_of_the_figures(tmp_path: Path) -> None:
    # The same run with and without a warm-up (the trace is the same: only the figures
    # differ): the measured figures count exactly the jobs submitted from warmup_s on, and
    # whole_run keeps every job's.
    whole = tiny_run(5)
    measured = simulations.run(tiny(top="warmup_s = 30\n"), seed=5, out=tmp_path)
    assert measured.trace_hash == whole.trace_hash
    assert measured["measured_from_s"] == 30
    with (tmp_path / "jobs.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["spot_check"] == "0"]
    late = [r for r in rows if float(r["submitted_s"]) >= 30]
    assert 0 < len(late) < len(rows)
    assert measured["jobs"]["submitted"] == len(late)
    assert measured["jobs"]["verified"] == sum(r["outcome"] == "verified" for r in late)
    assert measured["whole_run"] == whole["whole_run"]
    assert whole["whole_run"]["submitted"] == whole["jobs"]["submitted"] == len(rows)
    assert measured["compute"]["ratio"] != whole["compute"]["ratio"]
