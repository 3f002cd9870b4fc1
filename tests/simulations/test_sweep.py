"""``sweep``: a grid of scenarios x overrides x seeds, collected with confidence intervals."""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import pytest

from simulations import sweep
from simulations.sweep import Result, SweepError, load_grid, stat, t95

from .run_fixture import write_run

SCENARIO = 'name = "tiny"\nduration_s = 60\n[jobs]\nrate_per_s = 0.5\n'


def write_grid(tmp_path: Path, body: str, scenario: str = SCENARIO) -> Path:
    (tmp_path / "tiny.toml").write_text(scenario)
    grid = tmp_path / "grid.toml"
    grid.write_text('scenarios = ["tiny.toml"]\n' + body)
    return grid


def test_t_critical_values_and_intervals() -> None:
    assert t95(1) == 12.706 and t95(4) == 2.776 and t95(30) == 2.042
    assert t95(35) == 2.042  # between rows: the smaller df, conservative
    assert t95(500) == 1.960
    with pytest.raises(ValueError):
        t95(0)
    s = stat([1.0, 2.0, 3.0])
    assert (s.n, s.mean, s.stdev) == (3, 2.0, 1.0)
    assert s.half == pytest.approx(4.303 / math.sqrt(3))
    assert s.low == pytest.approx(2.0 - 4.303 / math.sqrt(3))
    one = stat([5.0])
    assert (one.mean, one.stdev, one.low, one.half) == (5.0, None, None, None)


def test_grid_expands_scenarios_variants_and_values(tmp_path: Path) -> None:
    grid = write_grid(
        tmp_path,
        "seeds = [3, 9]\n[overrides]\nduration_s = 30\n"
        '[grid]\n"jobs.redundancy" = [1, 2]\njobs.max_retries = [0, 1, 2]\n'
        '[variants.fixed]\n"jobs.spot_check_permille" = 0\n'
        "[variants.checked.jobs]\nspot_check_permille = 100\n",
    )
    sw = load_grid(grid)
    assert sw.name == "grid" and sw.seeds == [3, 9]
    assert sw.param_keys == ["jobs.redundancy", "jobs.max_retries"]
    assert len(sw.points) == 2 * 2 * 3 and sw.runs == 24
    first = sw.points[0]
    assert first.label == "tiny fixed jobs.redundancy=1 jobs.max_retries=0"
    last = sw.points[-1]
    assert last.overrides == {
        "duration_s": 30,
        "jobs.spot_check_permille": 100,
        "jobs.redundancy": 2,
        "jobs.max_retries": 2,
    }
    scenario = sweep.scenario_of(last)
    assert (scenario.duration_s, scenario.jobs.redundancy, scenario.jobs.rate_per_s) == (
        30,
        2,
        0.5,  # from the scenario file, not overridden
    )
    assert scenario.jobs.spot_check_permille == 100
    assert load_grid(write_grid(tmp_path, "seeds = 4\n")).seeds == [1, 2, 3, 4]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('[grid]\n"jobs.redundancyy" = [1]\n', r"tiny jobs\.redundancyy=1: jobs\.redundancyy: "),
        ('[grid]\n"jobs.redundancy" = [1, 99]\n', r"jobs\.redundancy=99: jobs\.redundancy: "),
        ('[grid]\n"jobs.redundancy" = 2\n', r"grid\.jobs\.redundancy: give a non-empty list"),
        ("seeds = []\n", "seeds: give a positive count"),
        ("colour = 1\n", r"grid\.toml: colour: "),
        ('[overrides]\n"name.x" = 1\n', "override name.x: name is not a table"),
    ],
)
def test_grid_errors_name_the_key(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(SweepError, match=message):
        load_grid(write_grid(tmp_path, body))


def test_missing_files(tmp_path: Path) -> None:
    with pytest.raises(SweepError, match="cannot read grid file"):
        load_grid(tmp_path / "nope.toml")
    grid = tmp_path / "g.toml"
    grid.write_text('scenarios = ["absent.toml"]\n')
    with pytest.raises(SweepError, match=r"scenarios: cannot read absent\.toml"):
        load_grid(grid)


def test_cluster_engines_are_optional(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert sweep.executor_for(None) == "local"
    assert sweep.executor_for("ray://head:10001") == "ray"
    assert sweep.executor_for("tcp://10.0.0.1:8786") == "dask"
    with pytest.raises(SweepError, match="give ray://HOST:PORT"):
        sweep.executor_for("http://head")
    sw = load_grid(write_grid(tmp_path, "seeds = 1\n"))
    # As on a machine without them (None in sys.modules makes the import fail).
    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.setitem(sys.modules, "dask.distributed", None)
    with pytest.raises(SweepError, match="the ray package is not installed"):
        sweep.run_sweep(sw, tmp_path / "out", address="ray://127.0.0.1:1")
    with pytest.raises(SweepError, match=r"dask\.distributed package is not installed"):
        sweep.run_sweep(sw, tmp_path / "out", address="tcp://127.0.0.1:1")
    assert not (tmp_path / "out").exists()


def test_report_collects_seeds_with_intervals(tmp_path: Path) -> None:
    sw = load_grid(write_grid(tmp_path, 'seeds = 3\n[grid]\n"jobs.redundancy" = [1, 2]\n'))
    results = []
    for point in sw.points:
        for seed in sw.seeds:
            ratio = float(point.overrides["jobs.redundancy"]) + seed / 10
            run = write_run(
                tmp_path / f"{point.slug}-{seed}",
                seed=seed,
                summary_extra={"compute": {"used_s": 1.0, "honest_min_s": 1.0, "ratio": ratio}},
            )
            summary = json.loads((run / "summary.json").read_text())
            results.append(Result(point, seed, summary, run))
    page = sweep.write_report(sw, results, tmp_path / "out")
    rows = list(csv.DictReader((tmp_path / "out" / "sweep.csv").open()))
    ratio_rows = [r for r in rows if r["figure"] == "compute.ratio"]
    assert [r["jobs.redundancy"] for r in ratio_rows] == ["1", "2"]
    expected = stat([1.1, 1.2, 1.3])
    got = ratio_rows[0]
    assert int(got["n"]) == 3
    assert float(got["mean"]) == pytest.approx(1.2)
    assert float(got["ci95_low"]) == pytest.approx(expected.low)
    assert float(got["ci95_high"]) == pytest.approx(expected.high)
    assert [r["figure"] for r in rows if r["figure"] == "ledger.conserved"]  # bool as 0/1
    runs = list(csv.DictReader((tmp_path / "out" / "runs.csv").open()))
    assert [(r["jobs.redundancy"], r["seed"]) for r in runs] == [
        ("1", "1"), ("1", "2"), ("1", "3"), ("2", "1"), ("2", "2"), ("2", "3"),
    ]  # fmt: skip
    assert float(runs[4]["compute.ratio"]) == pytest.approx(2.2)
    text = page.read_text()
    assert "tiny jobs.redundancy=2" in text and "2.2 ± 0.2484" in text
    assert text.count("data:image/png;base64,") == len(sweep.SWEEP_FIGURES)
    assert "http://" not in text and "https://" not in text


TINY = """name = "tiny"
duration_s = 40
drain_s = 15
[nodes]
providers = 40
requesters = 4
[jobs]
rate_per_s = 1.0
[adversaries]
cheaters = 0.1
"""


def test_sweep_runs_in_local_workers(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from node.cli.sim import sim_app

    grid = write_grid(tmp_path, 'seeds = 2\n[grid]\n"jobs.redundancy" = [1, 2]\n', TINY)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        sim_app, ["sweep", str(grid), "--workers", "2", "--out", str(out)], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    assert "2 points x 2 seeds = 4 runs" in result.output and "[4/4]" in result.output
    runs = list(csv.DictReader((out / "runs.csv").open()))
    assert [(r["jobs.redundancy"], r["seed"]) for r in runs] == [
        ("1", "1"), ("1", "2"), ("2", "1"), ("2", "2"),
    ]  # fmt: skip
    for r in runs:
        summary = json.loads((Path(r["run_dir"]) / "summary.json").read_text())
        assert summary["trace_hash"] == r["trace_hash"] and summary["seed"] == int(r["seed"])
        assert summary["jobs"]["verified"] > 0
    # A worker's run is the run: the same point and seed here give the same trace.
    sw = load_grid(grid)
    again = sweep.run_task(sweep.Task("x", TINY, sw.points[1].overrides, 2, None))
    assert again["trace_hash"] == runs[3]["trace_hash"]
    # Redundancy 2 costs more compute than redundancy 1.
    stats = {r["jobs.redundancy"]: r for r in csv.DictReader((out / "sweep.csv").open())
             if r["figure"] == "compute.ratio"}  # fmt: skip
    assert float(stats["2"]["mean"]) > float(stats["1"]["mean"])
    assert "tiny jobs.redundancy=2" in (out / "sweep.html").read_text()


def test_a_failed_run_stops_the_sweep_and_names_it(tmp_path: Path) -> None:
    sw = load_grid(write_grid(tmp_path, "seeds = [4]\n", TINY))
    out = tmp_path / "out"
    out.mkdir()
    (out / "runs").write_text("not a directory")  # so the run cannot write its output
    with pytest.raises(SweepError, match=r"^tiny seed 4: cannot create the output directory"):
        sweep.run_sweep(sw, out, workers=1)
