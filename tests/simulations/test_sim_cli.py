"""``aimx sim run``: the summary table and trace hash; user errors in two lines, exit 1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from node.cli import app

SCENARIO = """
name = "cli"
duration_s = 40
drain_s = 10
[nodes]
providers = 60
requesters = 4
[jobs]
rate_per_s = 1.0
model_mb = [0.5, 1.0]
deadline_s = 20
"""


def test_sim_run_prints_the_summary_and_the_trace_hash(tmp_path: Path) -> None:
    scenario = tmp_path / "cli.toml"
    scenario.write_text(SCENARIO)
    result = CliRunner().invoke(app, ["sim", "run", str(scenario), "--seed", "3"], obj={})
    assert result.exit_code == 0, result.output
    assert "scenario cli (seed 3)" in result.output
    assert "credits conserved" in result.output
    line = next(x for x in result.output.splitlines() if x.startswith("trace hash: "))
    again = CliRunner().invoke(app, ["sim", "run", str(scenario), "--seed", "3", "--json"], obj={})
    assert again.exit_code == 0
    assert json.loads(again.output)["trace_hash"] == line.removeprefix("trace hash: ")


@pytest.mark.parametrize(
    ("text", "expected"),
    [(None, "cannot read scenario"), ("[jobs]\nredundancy = 0\n", "jobs.redundancy")],
)
def test_sim_run_user_errors(tmp_path: Path, text: str | None, expected: str) -> None:
    scenario = tmp_path / "bad.toml"
    if text is not None:
        scenario.write_text(text)
    result = CliRunner().invoke(app, ["sim", "run", str(scenario)], obj={})
    assert result.exit_code == 1
    assert expected in result.output
    assert len(result.output.strip().splitlines()) <= 2
