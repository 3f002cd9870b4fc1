"""``aimx ledger balance|history|verify`` against a real ledger database."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

import ledger
import protocol
from node.cli import app
from node.ledger import ledger_db_path

from ..keys import pub
from .helpers import ALICE, BOB, CHAIN, JOB, Chain, settle

runner = CliRunner()


def make_ledger(data_dir: Path) -> Chain:
    c = Chain.new()
    c.ok(c.transfer(ALICE, BOB, 1_500_000 - 1_000_000 + 250))
    c.ok(c.lock(ALICE, 300, claim_at=5, expire_at=9, per_payee=100))
    c.ok(settle(ALICE, CHAIN, 2, job_id=JOB, payouts={pub(BOB): 100}, expiry_height=20))
    with ledger.LedgerStore.open(ledger_db_path(data_dir), c.state.genesis) as store:
        for raw in c.blocks:
            store.apply_and_commit(raw)
    return c


def test_balance_json_and_text(tmp_path: Path) -> None:
    c = make_ledger(tmp_path)
    bob = protocol.peer_id(pub(BOB))
    result = runner.invoke(app, ["ledger", "balance", bob, "--data-dir", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["balance"] == c.state.balance(pub(BOB)) == 1_000_000 + 500_250 + 100
    assert info["height"] == 3 and info["account"] == bob
    result = runner.invoke(app, ["--data-dir", str(tmp_path), "ledger", "balance", pub(BOB).hex()])
    assert result.exit_code == 0, result.output
    assert "1.500350 credits" in result.output


def test_history_lists_transactions_newest_first(tmp_path: Path) -> None:
    make_ledger(tmp_path)
    result = runner.invoke(
        app,
        ["ledger", "history", protocol.peer_id(pub(BOB)), "--data-dir", str(tmp_path), "--json"],
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [r["kind"] for r in rows] == ["settle", "transfer"]
    assert rows[0]["payouts"] == {protocol.peer_id(pub(BOB)): 100}


def test_verify_ok_and_tampered(tmp_path: Path) -> None:
    make_ledger(tmp_path)
    result = runner.invoke(app, ["ledger", "verify", "--data-dir", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["ok"] and summary["height"] == 3 and summary["transactions"] == 3
    # tamper with a stored block's transaction list: verification must fail
    import sqlite3

    db = sqlite3.connect(ledger_db_path(tmp_path))
    raw = db.execute("SELECT raw FROM blocks WHERE height=1").fetchone()[0]
    db.execute("UPDATE blocks SET raw=? WHERE height=1", (raw[:-1] + bytes([raw[-1] ^ 1]),))
    db.commit()
    db.close()
    result = runner.invoke(app, ["ledger", "verify", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "FAILED" in result.output and "block 1" in result.output


def test_missing_ledger_and_bad_account(tmp_path: Path) -> None:
    result = runner.invoke(app, ["ledger", "verify", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1 and "no ledger" in result.output
    make_ledger(tmp_path)
    result = runner.invoke(app, ["ledger", "balance", "nonsense", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1 and "not an account" in result.output
    result = runner.invoke(app, ["ledger", "balance", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1 and "no ACCOUNT" in result.output
