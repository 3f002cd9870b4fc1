"""The run report: figures computed from an output directory, the plots, the HTML page."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np
import pytest

from simulations import report
from simulations.report import ReportError, build_report, gini, load_run, lorenz

from .run_fixture import write_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_gini_of_known_distributions() -> None:
    assert gini([]) == 0.0
    assert gini([0, 0, 0]) == 0.0
    assert gini([5, 5, 5, 5]) == pytest.approx(0.0)
    assert gini([0, 0, 0, 10]) == pytest.approx(0.75)  # one of four has everything
    # Mean absolute difference over twice the mean: for 1..4, 1.25 / (2 * 2.5).
    assert gini([4, 1, 3, 2]) == pytest.approx(0.25)
    assert gini([-3, 0, 0, 10]) == pytest.approx(0.75)  # negative counts as nothing


def test_lorenz_curve_runs_from_origin_to_one() -> None:
    xs, ys = lorenz([3, 1, 0, 4])
    assert xs == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert ys == pytest.approx([0.0, 0.0, 0.125, 0.5, 1.0])
    assert lorenz([]) == ([0.0, 1.0], [0.0, 1.0])


def test_figures_read_from_the_csvs(tmp_path: Path) -> None:
    run = load_run(write_run(tmp_path / "r", jobs=100, providers=10, cheaters=3))
    lat = report.latencies_s(run)
    verified = sum(1 for j in run.jobs if j["outcome"] == "verified")
    assert len(lat) == verified == run.summary["jobs"]["verified"]
    assert all(1 <= x <= 5 for x in lat)
    found = report.detections(run)
    assert [d.kind for d in found] == ["cheater"] * 3
    # The fixture leaves the first cheater undetected.
    assert [d.detected for d in found] == [False, True, True]
    assert all(d.seconds is not None and 5 <= d.seconds <= 60 for d in found[1:])
    xs, ys = report.compute_ratio_series(run)
    assert xs == sorted(xs) and 0 < len(xs) <= 100
    used = sum(float(j["compute_s"]) for j in run.jobs)
    minimum = sum(
        float(j["compute_s"]) / float(j["replicas_run"])
        for j in run.jobs
        if j["outcome"] == "verified"
    )
    assert ys[-1] == pytest.approx(used / minimum)


def test_compute_ratio_counts_spot_checks_as_cost_only(tmp_path: Path) -> None:
    def job(end: str, compute: str, replicas: str, **more: str) -> dict[str, str]:
        return {"finished_s": end, "compute_s": compute, "replicas_run": replicas,
                "outcome": "verified", **more}  # fmt: skip

    run = report.Run(path=tmp_path, summary={}, scenario_text="", jobs=[
        job("2", "30", "3"),
        job("1", "10", "1"),
        job("3", "4", "1", spot_check="1"),  # a cost with no requester's result
        job("4", "6", "2", outcome="failed"),  # a cost too
        job("", "10", "1"),  # never finished
    ])  # fmt: skip
    assert report.compute_ratio_series(run) == ([1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 2.2, 2.5])
    # The engine's own minimum per job wins over the replica share.
    run.jobs[0]["honest_min_s"] = "5"
    run.jobs[1]["honest_min_s"] = "10"
    assert report.compute_ratio_series(run)[1][-1] == pytest.approx(50 / 15)
    run.jobs[0]["spot_check"] = "0"
    assert report.latencies_s(run) == []  # no submitted_s: nothing to measure from


def test_report_is_one_self_contained_page(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "run", name="smoke-fixture", seed=7)
    page = build_report(run_dir)
    assert page == run_dir / "report.html"
    text = page.read_text()
    # Every plot is inlined as a PNG, and nothing is loaded from anywhere.
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(images) == len(report.PLOTS)
    assert all(base64.b64decode(i).startswith(PNG_MAGIC) for i in images)
    assert len(re.findall(r"\b(?:src|href)=", text)) == len(images)
    assert "http://" not in text and "https://" not in text and "<script" not in text
    # The scenario, escaped, and the summary.
    assert "name = &quot;smoke-fixture&quot;" in text
    assert "smoke-fixture, seed 7" in text
    assert f"{7:064x}" in text  # trace hash
    assert "Gini of earnings" in text and "Verification cache on" not in text
    # Adversaries: count, delivered a wrong result, detected (the summary's), ...
    assert "<tr><td>cheater</td><td>4</td><td>4</td><td>3</td><td>7</td>" in text
    for stem, _, _ in report.PLOTS:
        assert (run_dir / "plots" / f"{stem}.png").read_bytes().startswith(PNG_MAGIC)


def test_report_labels_the_verification_cache(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "run", summary_extra={"verify_cache": True})
    assert "Verification cache on" in build_report(run_dir, tmp_path / "elsewhere").read_text()
    assert not (run_dir / "report.html").exists()


def test_report_of_a_run_without_csvs(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "run")
    for name in ("jobs.csv", "providers.csv", "series.csv"):
        (run_dir / name).unlink()
    text = build_report(run_dir).read_text()
    assert text.count("data:image/png;base64,") == len(report.PLOTS)


def test_not_an_output_directory(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="not a simulation output directory"):
        build_report(tmp_path)
    (tmp_path / "summary.json").write_text("[1, 2]")
    with pytest.raises(ReportError, match="not a JSON object"):
        build_report(tmp_path)


# --- on a real run ------------------------------------------------------------------------


def trimmed_smoke(tmp_path: Path) -> Path:
    """The shipped smoke scenario, smaller and shorter (a few seconds here)."""
    import tomllib

    from simulations import SCENARIOS_DIR
    from simulations._scenario import dump_toml
    from simulations.sweep import apply_overrides

    data = tomllib.loads((SCENARIOS_DIR / "smoke.toml").read_text())
    data = apply_overrides(
        data,
        {"nodes.providers": 150, "nodes.requesters": 10, "duration_s": 90, "drain_s": 30,
         "adversaries.cheaters": 0.1},
    )  # fmt: skip
    path = tmp_path / "smoke-trimmed.toml"
    path.write_text(dump_toml(data))
    return path


def test_sim_run_writes_a_report_that_agrees_with_its_summary(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    import simulations
    from node.cli.sim import sim_app

    out = tmp_path / "run"
    result = CliRunner().invoke(sim_app, ["run", str(trimmed_smoke(tmp_path)), "--out", str(out)])
    assert result.exit_code == 0, result.output
    # (rich wraps the line at the terminal width: the break may fall after "report:")
    assert "report: " in " ".join(result.output.split()) and (out / "report.html").is_file()
    run = load_run(out)
    s = run.summary
    assert s["jobs"]["verified"] > 0
    # The figures the plots draw from the CSVs are the summary's.
    lat = report.latencies_s(run)
    assert len(lat) == s["jobs"]["verified"]
    assert simulations.percentile(lat, 0.5) == pytest.approx(s["latency_s"]["p50"])
    assert report.compute_ratio_series(run)[1][-1] == pytest.approx(s["compute"]["ratio"], 0.02)
    honest = [float(p["earned"]) for p in run.providers if p["kind"] == "honest"]
    assert gini(honest) == pytest.approx(s["earnings"]["gini"])
    found = report.detections(run)
    assert sum(d.kind == "cheater" for d in found) == s["adversaries"]["cheater"]["count"]
    assert (
        sum(d.detected for d in found if d.kind == "cheater")
        == (s["adversaries"]["cheater"]["detected"])
    )
    text = (out / "report.html").read_text()
    assert s["trace_hash"] in text and "smoke" in text
    assert text.count("data:image/png;base64,") == len(report.PLOTS)


def test_report_command_errors_are_user_errors(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from node.cli.sim import sim_app

    result = CliRunner().invoke(sim_app, ["report", str(tmp_path)])
    assert result.exit_code == 1
    assert "not a simulation output directory" in result.output
    write_run(tmp_path / "r")
    result = CliRunner().invoke(sim_app, ["report", str(tmp_path / "r"), "--out", str(tmp_path)])
    assert result.exit_code == 0 and (tmp_path / "report.html").is_file()


def test_detection_counts_cheaters_that_never_cheated_apart(tmp_path: Path) -> None:
    def provider(kind: str, first_wrong: str, detected: str, jobs: str) -> dict[str, str]:
        return {"node": "p", "kind": kind, "first_wrong_s": first_wrong, "detected_s": detected,
                "jobs_before_detection": jobs}  # fmt: skip

    run = report.Run(path=tmp_path, summary={}, scenario_text="", providers=[
        provider("honest", "", "", ""),
        provider("cheater", "10", "12.5", "3"),  # caught after 2.5 s, 3 jobs
        provider("cheater", "20", "", ""),  # wrong, escaped
        provider("cheater", "", "", ""),  # never delivered a wrong result
        provider("lazy", "", "", ""),  # lazy: never wrong by nature, still counted
        provider("lazy", "", "40", "1"),
    ])  # fmt: skip
    found = report.detections(run)
    assert [(d.kind, d.detected, d.wrong, d.seconds) for d in found] == [
        ("cheater", True, True, 2.5),
        ("cheater", False, True, None),
        ("cheater", False, False, None),
        ("lazy", False, False, None),
        ("lazy", True, False, 40.0),
    ]
    fig = report.plot_detection([run])
    legend = fig.axes[0].get_legend()
    assert legend is not None
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels == ["cheater: 1/2 caught (1 never wrong)", "lazy: 1/2 caught"]
    # The CDF stops at the share caught: 1 of the 2 cheaters that cheated.
    assert np.asarray(fig.axes[0].get_lines()[0].get_ydata()).max() == 0.5
