"""``aimx ledger verify --open-escrows BLOCKS`` (issue 15): the escrows still open more than
BLOCKS blocks past their expiry are listed and the command exits 1; none, it exits 0."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

import ledger
from ledger import tx
from node.cli import app
from node.ledger import ledger_db_path

from ...ledger.helpers import ALICE, CHAIN, JOB, Chain

runner = CliRunner()
EXPIRY = 5


def _store(data_dir: Path, c: Chain) -> None:
    with ledger.LedgerStore.open(ledger_db_path(data_dir), c.state.genesis) as store:
        for raw in c.blocks:
            store.apply_and_commit(raw)


def _locked_and_left(until: int) -> Chain:
    """ALICE locks JOB (expiry height 5) and never refunds; the chain goes on to ``until``."""
    c = Chain.new()
    c.ok(c.lock(ALICE, 300, claim_at=3, expire_at=EXPIRY, per_payee=100))
    c.until(until)
    return c


def _verify(data_dir: Path, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["ledger", "verify", "--data-dir", str(data_dir), *args])
    return result.exit_code, result.output


def test_an_escrow_open_past_its_expiry_is_listed_and_fails_verify(tmp_path: Path) -> None:
    _store(tmp_path, _locked_and_left(EXPIRY + 8))
    code, output = _verify(tmp_path, "--open-escrows", "3")
    assert code == 1, output
    assert JOB.hex() in output and "8 blocks ago" in output
    assert "1 escrows are open more than 3 blocks past their expiry" in output
    code, output = _verify(tmp_path, "--open-escrows", "3", "--json")
    assert code == 1, output
    summary = json.loads(output)
    assert summary["ok"] is False
    [late] = summary["open_past_expiry"]
    assert late["job_id"] == JOB.hex() and late["blocks_past_expiry"] == 8
    assert late["remaining"] == 300 and late["expiry_height"] == EXPIRY
    # within the margin, or without the flag, it passes
    code, output = _verify(tmp_path, "--open-escrows", "8")
    assert code == 0 and "no escrow is open more than 8 blocks" in output, output
    assert _verify(tmp_path)[0] == 0


def test_a_refunded_escrow_is_not_listed(tmp_path: Path) -> None:
    c = _locked_and_left(EXPIRY)
    c.ok(tx.refund(ALICE, CHAIN, c.seq(ALICE), job_id=JOB, expiry_height=c.height + 10))
    c.until(EXPIRY + 20)
    _store(tmp_path, c)
    code, output = _verify(tmp_path, "--open-escrows", "0", "--json")
    assert code == 0, output
    assert json.loads(output)["open_past_expiry"] == []
