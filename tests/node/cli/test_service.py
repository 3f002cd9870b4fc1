"""Running as a service: ``aimx node install-service`` (into a temporary
XDG_CONFIG_HOME), ``aimx node config``, the log formats, and a real daemon that exits 0
on SIGTERM with JSON-line logs."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from node.cli import app
from node.cli.service import UNIT_NAME, Journal, JsonLines, configure_logging, to_journal
from node.config import CONFIG_FILE


def run(*args: str, env: dict[str, str | None] | None = None) -> tuple[int, str]:
    base: dict[str, str | None] = {"AIMX_DATA_DIR": None, "COLUMNS": "200"}
    result = CliRunner().invoke(app, list(args), env={**base, **(env or {})})
    return result.exit_code, result.output


def test_install_service_writes_a_user_unit_and_says_what_it_did(tmp_path: Path) -> None:
    data_dir, xdg = tmp_path / "node", tmp_path / "xdg"
    (data_dir).mkdir()
    (data_dir / CONFIG_FILE).write_text("[contributor]\nshutdown_grace_s = 45\n")
    code, out = run(
        "node", "install-service", "--dry-run", "--data-dir", str(data_dir),
        env={"XDG_CONFIG_HOME": str(xdg)},
    )  # fmt: skip
    unit = xdg / "systemd" / "user" / UNIT_NAME
    assert code == 0, out
    assert f"# would write {unit}" in out and "[Service]" in out
    assert not unit.exists()  # a dry run writes nothing

    code, out = run(
        "node", "install-service", "--data-dir", str(data_dir), env={"XDG_CONFIG_HOME": str(xdg)}
    )
    assert code == 0, out
    assert f"wrote {unit}" in out
    assert "systemctl --user enable --now aimx-node" in out
    assert "journalctl --user -u aimx-node" in out
    text = unit.read_text()
    exec_start = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    assert exec_start.endswith(f"node start --data-dir {data_dir.resolve()}"), exec_start
    assert "TimeoutStopSec=75" in text  # the grace period and 30 s to hand back and close
    assert "KillSignal=SIGTERM" in text and "WantedBy=default.target" in text
    code, out = run(
        "node", "install-service", "--data-dir", str(data_dir), env={"XDG_CONFIG_HOME": str(xdg)}
    )
    assert code == 0 and f"replaced {unit}" in out


def test_install_service_refuses_a_bad_config_at_once(tmp_path: Path) -> None:
    (tmp_path / CONFIG_FILE).write_text("[contributor]\nprice_floor = -1\n")
    code, out = run(
        "node", "install-service", "--data-dir", str(tmp_path),
        env={"XDG_CONFIG_HOME": str(tmp_path / "xdg")},
    )  # fmt: skip
    assert code == 1 and "contributor.price_floor" in out, out
    assert not (tmp_path / "xdg").exists()


def test_node_config_shows_values_and_their_sources(tmp_path: Path) -> None:
    (tmp_path / CONFIG_FILE).write_text("[contributor]\nprice_floor = 5\n")
    code, out = run(
        "node", "config", "--json", "--data-dir", str(tmp_path),
        env={"AIMX_CONTRIBUTOR_MAX_CONCURRENCY": "4"},
    )  # fmt: skip
    assert code == 0, out
    shown = json.loads(out)
    assert shown["contributor.price_floor"]["value"] == 5
    assert shown["contributor.price_floor"]["source"] == "file"
    assert shown["contributor.max_concurrency"] == {
        "value": 4,
        "source": "env",
        "env": "AIMX_CONTRIBUTOR_MAX_CONCURRENCY",
        "description": "jobs run at once",
    }
    assert shown["roles"]["source"] == "default"
    code, out = run("node", "config", "--data-dir", str(tmp_path))
    assert code == 0 and "contributor.price_floor" in out and "file" in out, out
    (tmp_path / CONFIG_FILE).write_text("[contributor]\nprice_floor = 'cheap'\n")
    code, out = run("node", "config", "--data-dir", str(tmp_path))
    assert code == 1 and "contributor.price_floor" in out, out


def _record(level: int, msg: str) -> logging.LogRecord:
    return logging.LogRecord("node.daemon", level, __file__, 1, msg, None, None)


def test_log_formats() -> None:
    line = json.loads(JsonLines().format(_record(logging.WARNING, "disk full: x")))
    assert line["level"] == "warning" and line["message"] == "disk full: x"
    assert line["logger"] == "node.daemon" and isinstance(line["ts_ms"], int)
    assert Journal().format(_record(logging.INFO, "stopping")) == "<6>node.daemon: stopping"
    assert Journal().format(_record(logging.ERROR, "a\nb")) == "<3>node.daemon: a\n<3>b"


def test_journald_is_used_only_when_stderr_is_its_stream(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    st = os.fstat(2)
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    assert to_journal()
    try:
        assert configure_logging(logging.INFO, "text") == "journal"
        assert configure_logging(logging.INFO, "json") == "json"
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino + 1}")
        assert not to_journal()
        assert configure_logging(logging.INFO, "text") == "text"
    finally:
        logging.basicConfig(force=True, handlers=[logging.NullHandler()])


def test_a_daemon_exits_0_on_sigterm_with_json_logs(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIMX_")}
    env.pop("JOURNAL_STREAM", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "node", "coordinator", "start", "--data-dir", str(tmp_path),
         "--log-format", "json", "--chain-id", "aimx-devnet-sigterm"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
        text=True,
    )  # fmt: skip
    lines: list[str] = []
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if "node up" in line:
                break
        assert any("node up" in x for x in lines), "".join(lines)
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=30)
        lines += rest.splitlines()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, "".join(lines)
    records = [json.loads(x) for x in lines if x.startswith("{")]
    assert records and all({"ts_ms", "level", "logger", "message"} <= r.keys() for r in records)
    assert any(r["message"] == "stopping" for r in records), records
    assert not (tmp_path / "node.json").exists()
