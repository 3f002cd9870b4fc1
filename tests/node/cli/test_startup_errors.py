"""Start-up mistakes (issue 18): each runs the real ``aimx`` in a process of its own and gets a
message under five lines that names the fix, exit status 1, nothing lost (the ledger file
is neither deleted nor rewritten) and no process left behind. ``--debug`` shows the
traceback instead."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import ledger
import protocol
from node.config import CONFIG_FILE
from node.daemon.genesis import write_genesis
from node.ledger import ledger_db_path

from ...keys import key, pub
from ...ledger.helpers import ALICE, BOB, CHAIN, Chain

AIMX = (sys.executable, "-m", "node")


def aimx(*args: str, timeout: float = 60) -> tuple[int, str]:
    """Run ``aimx ARGS`` in a session of its own; check that nothing of it outlives it."""
    env = {k: v for k, v in os.environ.items() if k not in ("AIMX_DATA_DIR", "AIMX_DEBUG")}
    proc = subprocess.Popen(
        [*AIMX, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait()
    with pytest.raises(ProcessLookupError):  # no child (a worker, a thread's process) left
        os.killpg(proc.pid, 0)
    return proc.returncode, out.decode()


def short_error(output: str, *fixes: str) -> None:
    lines = output.strip().splitlines()
    assert len(lines) < 5, output
    assert "Traceback" not in output, output
    assert lines[-1].startswith("error:") or lines[-2].startswith("error:"), output
    for fix in fixes:
        assert fix in output, output


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def data_dir_with_ledger(data_dir: Path) -> Path:
    """A requester's data directory on the test chain: genesis.bin and a 3-block ledger
    whose block 1 moves 500,250 micro-credits from Alice to Bob."""
    chain = Chain.new()
    chain.ok(chain.transfer(ALICE, BOB, 500_250))
    chain.until(3)
    data_dir.mkdir(mode=0o700)
    write_genesis(data_dir, chain.state.genesis)
    with ledger.LedgerStore.open(ledger_db_path(data_dir), chain.state.genesis) as store:
        for raw in chain.blocks:
            store.apply_and_commit(raw)
    return ledger_db_path(data_dir)


def alter(db: Path, sql: str, *params: object) -> bytes:
    """Run ``sql`` on the ledger database directly; its bytes after (WAL checkpointed)."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute(sql, params)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return db.read_bytes()


def start(data_dir: Path, *extra: str) -> tuple[int, str]:
    return aimx(
        "node", "start", "--data-dir", str(data_dir), "--role", "requester",
        "--chain-id", CHAIN, "--api-port", "0", "--listen", "/ip4/127.0.0.1/tcp/0", *extra,
    )  # fmt: skip


def test_bad_bootstrap_garbage_no_peer_id_or_none(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    for bad in ("garbage", "/ip4/127.0.0.1/tcp/4001"):
        code, output = aimx("node", "start", "--data-dir", str(data_dir), "--bootstrap", bad)
        assert code == 1, output
        short_error(output, "--bootstrap", "/ip4/HOST/tcp/PORT/p2p/PEER_ID")
    code, output = aimx("node", "start", "--data-dir", str(data_dir))
    assert code == 1, output
    short_error(output, "--bootstrap ADDRESS", "--genesis-hash HASH", "aimx coordinator start")
    assert not (data_dir / "genesis.bin").exists() and not (data_dir / "node.json").exists()


def test_unreachable_bootstrap(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    address = f"/ip4/127.0.0.1/tcp/{free_port()}/p2p/{protocol.peer_id(pub(key('nobody')))}"
    code, output = aimx(
        "node", "start", "--data-dir", str(data_dir), "--api-port", "0",
        "--listen", "/ip4/127.0.0.1/tcp/0", "--bootstrap", address, "--genesis-hash", "ab" * 32,
    )  # fmt: skip
    assert code == 1, output
    short_error(output, "runs and is reachable")
    assert not (data_dir / "genesis.bin").exists() and not (data_dir / "node.json").exists()


def test_corrupt_ledger_sqlite(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    db = data_dir_with_ledger(data_dir)
    garbage = os.urandom(4096)
    db.write_bytes(garbage)
    code, output = start(data_dir)
    assert code == 1, output
    short_error(output, "not a database", "aimx ledger verify", "aimx ledger reset")
    assert db.read_bytes() == garbage
    assert not (data_dir / "node.json").exists()


def test_altered_ledger_is_refused_until_reset(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    db = data_dir_with_ledger(data_dir)
    with ledger.LedgerStore.open(db) as store:
        raw = store.block(1)
    assert raw is not None
    amount = protocol.pack(500_250)
    assert raw.count(amount) == 1  # Alice sends Bob 9,500,250 in block 1, not 500,250
    altered = alter(
        db, "UPDATE blocks SET raw=? WHERE height=1", raw.replace(amount, protocol.pack(9_500_250))
    )
    code, output = start(data_dir)
    assert code == 1, output
    short_error(output, "block 1 was altered", "aimx ledger verify", "aimx ledger reset")
    assert db.read_bytes() == altered and not (data_dir / "node.json").exists()

    code, output = aimx(
        "--debug", "node", "start", "--data-dir", str(data_dir), "--role", "requester",
        "--chain-id", CHAIN, "--api-port", "0", "--listen", "/ip4/127.0.0.1/tcp/0",
    )  # fmt: skip
    assert code == 1, output
    assert "Traceback (most recent call last)" in output and "LedgerUnusable" in output, output

    code, output = aimx("ledger", "verify", "--data-dir", str(data_dir))
    assert code == 1, output
    short_error(output, "verification FAILED", "aimx ledger reset")

    code, output = aimx("ledger", "reset", "--data-dir", str(data_dir))
    assert code == 0, output
    kept = list(db.parent.glob("ledger.sqlite3.broken-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == altered, output
    assert not db.exists() and "next start" in output


def test_altered_balance_is_refused(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    db = data_dir_with_ledger(data_dir)
    altered = alter(
        db,
        "UPDATE leaves SET value=? WHERE key=?",
        ledger.Account(balance=10**12).encode(),
        b"\x01" + pub(ALICE),
    )
    code, output = start(data_dir)
    assert code == 1, output
    short_error(output, "state root", "aimx ledger reset")
    assert db.read_bytes() == altered


def test_unusable_data_dir(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    code, output = aimx("node", "start", "--data-dir", str(tmp_path / "file" / "node"))
    assert code == 1, output
    short_error(output, "Not a directory", "another --data-dir")
    if os.geteuid() == 0:
        return  # root writes anywhere: the read-only directory below is for other users
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    code, output = aimx("node", "start", "--data-dir", str(locked))
    assert code == 1, output
    short_error(output, "Permission denied", "another --data-dir")


def test_an_api_port_in_use_is_named(tmp_path: Path) -> None:
    # Review round 69: "internal error: OSError: [Errno 98] Address already in use".
    data_dir = tmp_path / "node"
    data_dir_with_ledger(data_dir)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        code, output = aimx(
            "node", "start", "--data-dir", str(data_dir), "--role", "requester",
            "--chain-id", CHAIN, "--api-port", port, "--listen", "/ip4/127.0.0.1/tcp/0",
        )  # fmt: skip
    assert code == 1, output
    short_error(output, f"127.0.0.1:{port}", "set api_port in config.toml")


def test_bad_config_value(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    data_dir.mkdir()
    text = 'api_port = "eighty"\ncolour = "blue"\n'
    (data_dir / CONFIG_FILE).write_text(text)
    code, output = aimx("node", "start", "--data-dir", str(data_dir))
    assert code == 1, output
    short_error(output, "api_port", "colour: unknown setting", str(data_dir / CONFIG_FILE))
    assert (data_dir / CONFIG_FILE).read_text() == text


def test_an_unexpected_error_is_an_internal_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from node import cli
    from node.cli import node as node_cli

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(node_cli, "run_probe", broken)
    monkeypatch.setattr(sys, "argv", ["aimx", "node", "probe", "--no-benchmark"])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert err.strip() == (
        "internal error: RuntimeError: boom; rerun with --debug for the traceback"
    )
    monkeypatch.setattr(sys, "argv", ["aimx", "--debug", "node", "probe", "--no-benchmark"])
    with pytest.raises(RuntimeError, match="boom"):
        cli.main()


def test_a_usage_error_is_two_lines_and_exit_1(tmp_path: Path) -> None:
    code, output = aimx("node", "start", "--data-dir", str(tmp_path), "--api-port", "eighty")
    assert code == 1, output
    short_error(output, "--api-port", "see: aimx node start --help")
    assert len(output.strip().splitlines()) == 2, output


def test_ledger_reset_is_refused_while_the_node_runs_or_on_the_only_coordinator(
    tmp_path: Path,
) -> None:
    from typer.testing import CliRunner

    from node.cli import app
    from node.daemon._run import data_dir_lock
    from node.keystore import load_or_create_identity

    runner = CliRunner()
    data_dir = tmp_path / "node"
    db = data_dir_with_ledger(data_dir)
    before = db.read_bytes()
    with data_dir_lock(data_dir):
        result = runner.invoke(app, ["ledger", "reset", "--data-dir", str(data_dir)])
    assert result.exit_code == 1 and f"pid {os.getpid()}" in result.output, result.output
    assert db.read_bytes() == before

    coordinator = tmp_path / "coordinator"
    me = load_or_create_identity(coordinator).public_key
    genesis = ledger.make_genesis(CHAIN, [me], {})
    write_genesis(coordinator, genesis)
    ledger.LedgerStore.open(ledger_db_path(coordinator), genesis).close()
    result = runner.invoke(app, ["ledger", "reset", "--data-dir", str(coordinator)])
    assert result.exit_code == 1 and "only coordinator" in result.output, result.output
    assert ledger_db_path(coordinator).exists()
