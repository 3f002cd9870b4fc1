"""``aimx node probe`` through the real typer app."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from node.cli import app
from node.probe import SCHEMA

runner = CliRunner()


def test_probe_json(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    result = runner.invoke(app, ["node", "probe", "--json", "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["schema"] == SCHEMA
    assert report["disk"]["path"] == str(tmp_path)  # nearest existing parent
    assert not data_dir.exists()  # the probe creates nothing
    assert report["benchmark"]["score"] > 0
    assert "CPUExecutionProvider" in report["onnxruntime"]["working_providers"]


def test_probe_json_without_benchmark_uses_environment_data_dir(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["node", "probe", "--json", "--no-benchmark"], env={"AIMX_DATA_DIR": str(tmp_path)}
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["benchmark"] is None
    assert report["disk"]["path"] == str(tmp_path)


def test_probe_table(tmp_path: Path) -> None:
    result = runner.invoke(app, ["--data-dir", str(tmp_path), "node", "probe"])
    assert result.exit_code == 0, result.output
    for label in ("CPU", "cores", "memory", "disk", "GPU", "onnxruntime", "score"):
        assert label in result.stdout
    assert "MFLOP/s" in result.stdout and "determinism" in result.stdout
