"""``compare``: two runs side by side, as a table with differences and one HTML page."""

from __future__ import annotations

import base64
import re
from pathlib import Path

from rich.console import Console

from simulations import compare
from simulations.report import load_run

from .run_fixture import write_run


def test_rows_give_the_difference_of_each_figure(tmp_path: Path) -> None:
    a = load_run(write_run(tmp_path / "a", seed=1))
    b = load_run(
        write_run(
            tmp_path / "b",
            seed=2,
            summary_extra={
                "compute": {"used_s": 1000.0, "honest_min_s": 800.0, "ratio": 2.0},
                "verify_cache": True,
            },
        )
    )
    by_key = {r.key: r for r in compare.rows(a, b)}
    ratio = by_key["compute.ratio"]
    assert (ratio.a, ratio.b, ratio.diff) == (1.25, 2.0, 0.75)
    assert ratio.change == 0.6
    assert ratio.label == "compute / honest minimum"
    # Keys in only one summary, strings and booleans: shown, no difference.
    assert by_key["trace_hash"].diff is None and by_key["verify_cache"].diff is None
    assert by_key["adversaries.cheater.detected"].diff == 0
    keys = list(by_key)
    assert keys.index("jobs.submitted") < keys.index("nodes.providers")  # headline first
    console = Console(width=160, record=True)
    console.print(compare.table(a, b))
    text = console.export_text()
    assert "compute / honest minimum" in text and "+0.75" in text and "+60.0%" in text


def test_same_name_runs_are_told_apart_by_directory(tmp_path: Path) -> None:
    a = load_run(write_run(tmp_path / "fixed2"))
    b = load_run(write_run(tmp_path / "adaptive"))
    assert compare.labels(a, b) == ("A: fixed2", "B: adaptive")
    a, b = compare.load_pair(a.path, b.path)  # labelled: the labels stay the same
    assert a.name == "A: fixed2" and compare.labels(a, b) == ("A: fixed2", "B: adaptive")


def test_compare_page_overlays_both_runs(tmp_path: Path) -> None:
    a_dir = write_run(tmp_path / "a", name="fixed2", seed=1)
    b_dir = write_run(tmp_path / "b", name="adaptive", seed=1, slow=3.0, providers=60)
    page = compare.build_compare(a_dir, b_dir)
    assert page == tmp_path / "compare-a-b" / "compare.html"
    text = page.read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(images) == len(compare.PLOTS)
    assert all(base64.b64decode(i).startswith(b"\x89PNG") for i in images)
    assert "http://" not in text and "https://" not in text
    assert "A: fixed2 seed 1" in text and "B: adaptive seed 1" in text
    # The scenario diff shows what changed between the two.
    assert "-name = &quot;fixed2&quot;" in text and "+providers = 60" in text
    assert (tmp_path / "compare-a-b" / "plots" / "lorenz.png").exists()
    out = compare.build_compare(a_dir, b_dir, tmp_path / "x")
    assert out == tmp_path / "x" / "compare.html"


def test_compare_command(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from node.cli.sim import sim_app

    a_dir = write_run(tmp_path / "a", seed=1)
    b_dir = write_run(tmp_path / "b", seed=2, slow=2.0)
    out = tmp_path / "cmp"
    result = CliRunner().invoke(
        sim_app, ["compare", str(a_dir), str(b_dir), "--out", str(out)], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    assert "compute / honest minimum" in result.output and "submit to result p50" in result.output
    assert (out / "compare.html").is_file()
    result = CliRunner().invoke(sim_app, ["compare", str(a_dir), str(tmp_path / "nope")])
    assert result.exit_code == 1 and "not a simulation output directory" in result.output
