"""``aimx sandbox check`` and ``aimx sandbox run``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

import sandbox
from node.cli import app

runner = CliRunner()


def test_check_lists_layers(tmp_path: Path) -> None:
    result = runner.invoke(app, ["sandbox", "check", "--json", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    names = [layer["name"] for layer in report["layers"]]
    assert names == ["process", "user", "seccomp", "landlock", "bubblewrap", "cgroups"]
    for layer in report["layers"]:
        assert layer["detail"]
    assert report["untrusted_jobs"] is any(
        layer["available"] and layer["blocks_network"] for layer in report["layers"]
    )
    human = runner.invoke(app, ["sandbox", "check", "--data-dir", str(tmp_path)])
    assert human.exit_code == 0 and "untrusted jobs" in human.stdout


def test_run_tiny_model(tmp_path: Path) -> None:
    x = tmp_path / "x.npy"
    np.save(x, np.ones((2, 16), np.float32))
    out = tmp_path / "out"
    args = ["sandbox", "run", str(sandbox.tiny_model_path()), "--input", f"x={x}"]
    result = runner.invoke(app, [*args, "--json", "--save", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["outcome"] == "ok"
    assert report["runtime_us"] > 0
    assert report["outputs"] == {"y": {"dtype": "float32", "shape": [2, 4]}}
    y = np.load(out / "y.npy")
    assert bytes.fromhex(report["commitment"]) == sandbox.output_commitment({"y": y})
    human = runner.invoke(app, args)
    assert human.exit_code == 0 and "outcome: ok" in human.stdout
    assert "runtime:" in human.stdout


def test_run_reports_rejection_and_bad_arguments(tmp_path: Path) -> None:
    x = tmp_path / "x.npy"
    np.save(x, np.ones((2, 3), np.float32))
    model = str(sandbox.tiny_model_path())
    result = runner.invoke(app, ["sandbox", "run", model, "--input", f"x={x}", "--json"])
    assert result.exit_code == 2
    assert json.loads(result.stdout)["outcome"] == "rejected"
    bad = runner.invoke(app, ["sandbox", "run", model, "--input", "x"])
    assert bad.exit_code == 1 and "NAME=FILE.npy" in bad.output
    missing = runner.invoke(app, ["sandbox", "run", str(tmp_path / "nope.onnx")])
    assert missing.exit_code == 1 and "cannot read the model" in missing.output
    garbage = tmp_path / "g.npy"
    garbage.write_bytes(b"not numpy")
    unreadable = runner.invoke(app, ["sandbox", "run", model, "--input", f"x={garbage}"])
    assert unreadable.exit_code == 1 and "as .npy" in unreadable.output
