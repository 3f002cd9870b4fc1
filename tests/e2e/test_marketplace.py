"""End to end: devnets of separate processes over py-libp2p on loopback.

Two devnets, each started once for its tests (starting one costs most of the time):
``honest`` (three honest contributors) and ``faulty`` (a cheater that undercuts, and three
slow honest contributors, so that a run can be killed in the middle). Each module of
scenarios ends by stopping the nodes and running ``aimx ledger verify`` on every one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from node.devnet import (
    DevNode,
    running_devnet,
    stop,
    tiny_model_and_inputs,
    verify_ledgers,
    wait_ready,
)

from ._devnet import by_name, catch_up, sigkill, status_of, wait_for

pytestmark = pytest.mark.slow

SLOW_MS = 2_000
#: A contributor daemon whose job runner is faulty (tests/e2e/faulty_node.py).
FAULTY_NODE = (sys.executable, str(Path(__file__).with_name("faulty_node.py")))
# A bid window long enough that every contributor's bid arrives even on a loaded 2-core
# machine: the scenarios below depend on who bids (the undercutting cheater must be awarded).
WORKSPACE = "[requester]\nbid_window_ms = 2000\n"


@pytest.fixture(scope="module")
def honest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[DevNode]]:
    root = tmp_path_factory.mktemp("honest")
    with running_devnet(root, 3, workspace_extra=WORKSPACE) as nodes:
        wait_ready(nodes)
        yield nodes


def _faulty_extra(i: int) -> str:
    if i == 0:  # contributor-1: a cheater that undercuts everyone
        return "price_floor = 500\n"
    return f"base_run_ms = {SLOW_MS + 200}\n"


def _faulty_command(i: int) -> tuple[str, ...]:
    if i == 0:  # wrong outputs
        return (*FAULTY_NODE, "corrupt")
    return (*FAULTY_NODE, "slow", str(SLOW_MS))  # waits before each run


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[DevNode]]:
    root = tmp_path_factory.mktemp("faulty")
    with running_devnet(
        root,
        4,
        contributor_extra=_faulty_extra,
        contributor_command=_faulty_command,
        workspace_extra=WORKSPACE,
    ) as nodes:
        wait_ready(nodes)
        yield nodes


def _submit(nodes: list[DevNode], **kw: object) -> str:
    path, inputs = tiny_model_and_inputs()
    with by_name(nodes, "workspace").client() as c:
        return c.submit(path, inputs, **kw)  # type: ignore[arg-type]


def _verify_all(nodes: list[DevNode]) -> None:
    stop(nodes)
    report = verify_ledgers(nodes)
    assert all(r["ok"] for r in report.values()), report


# --- honest devnet ------------------------------------------------------------------


def test_job_verified_redundancy_two_both_paid_balances_add_up(honest: list[DevNode]) -> None:
    before = catch_up(honest, 1)
    job_id = _submit(honest, redundancy=2)
    ws = by_name(honest, "workspace")
    with ws.client() as c:
        status = c.wait(job_id, timeout_s=60, until="closed")
        assert status["status"] == "verified" and status["closed"], status
        outputs = c.result(job_id)
    after = catch_up(honest)
    # The expected answer from onnxruntime in this process (the model is the package's own).
    # Not through a Sandbox here: it would make pytest a child subreaper, and the workers of
    # contributors SIGKILLed by later tests would then be re-parented to pytest.
    import onnxruntime as ort

    path, inputs = tiny_model_and_inputs()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    for name, value in zip(names, session.run(names, inputs), strict=True):
        np.testing.assert_array_equal(outputs[name], value)
    paid = {p["provider"]: p["amount"] for p in status["paid"]}
    assert len(paid) >= 2 and all(a > 0 for a in paid.values())
    spent = before["workspace"]["balance"] - after["workspace"]["balance"]
    assert spent == sum(paid.values())
    for n in honest:
        if "contributor" in n.roles:
            gained = after[n.name]["balance"] - before[n.name]["balance"]
            assert gained == paid.get(after[n.name]["peer_id"], 0)


def test_no_provider_matches_reason_and_refund(honest: list[DevNode]) -> None:
    before = status_of(by_name(honest, "workspace"))["balance"]
    # Below every floor (1000). A job nobody was awarded is refunded at its escrow's expiry
    # (a settle before it must pay the job's redundancy): a short deadline keeps that near.
    job_id = _submit(honest, max_price=10, deadline_s=4)
    with by_name(honest, "workspace").client() as c:
        status = c.wait(job_id, timeout_s=60, until="closed")
    assert status["status"] == "failed" and status["closed"]
    assert status["no_bids"]["primary"] == "price_below_floor", status
    assert status["no_bids"]["advice"]
    catch_up(honest, 1)
    assert status_of(by_name(honest, "workspace"))["balance"] == before


def test_job_commands_submit_wait_status_result(honest: list[DevNode], tmp_path: Path) -> None:
    ws = by_name(honest, "workspace")
    path, inputs = tiny_model_and_inputs()
    args = []
    for name, value in inputs.items():
        np.save(tmp_path / f"{name}.npy", value)
        args += ["--input", f"{name}={tmp_path / f'{name}.npy'}"]

    def aimx(*argv: str) -> Any:
        proc = subprocess.run(
            [sys.executable, "-m", "node", *argv, "--data-dir", str(ws.data_dir)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    done = aimx("job", "submit", str(path), *args, "--redundancy", "2", "--wait", "--json")
    assert done["status"] == "verified" and done["outputs"]
    assert aimx("job", "status", done["job_id"], "--json")["status"] == "verified"
    assert aimx("job", "result", done["job_id"], "--json") == done["outputs"]
    node = aimx("node", "status", "--json")
    assert node["roles"] == ["requester"] and node["peer_id"] == ws.info.peer_id  # type: ignore[union-attr]


def test_honest_ledgers_verify(honest: list[DevNode]) -> None:
    _verify_all(honest)


# --- faulty devnet ------------------------------------------------------------------


def test_cheater_outvoted_unpaid_and_slashed(faulty: list[DevNode]) -> None:
    cheat = status_of(by_name(faulty, "contributor-1"))
    job_id = _submit(faulty, redundancy=2, max_retries=3)
    with by_name(faulty, "workspace").client() as c:
        status = c.wait(job_id, timeout_s=90, until="closed")
        assert status["status"] == "verified", status
        paid = {p["provider"] for p in status["paid"]}
        assert cheat["peer_id"] not in paid and len(paid) >= 2
        awarded = [e for e in status["events"] if e["event"] == "awarded"]
        assert len(awarded) >= 3  # the cheater's replica was awarded and outvoted
        after = wait_for(
            "the cheater's slash",
            lambda: (b := c.balance(cheat["peer_id"]))["stake"] < cheat["stake"] and b,
        )
    assert after["reputation"] < 0.5
    assert after["balance"] == cheat["balance"]


def test_provider_sigkilled_mid_job_reassigned(faulty: list[DevNode]) -> None:
    honest = [n for n in faulty if n.name in ("contributor-2", "contributor-3", "contributor-4")]
    job_id = _submit(faulty, redundancy=1, max_retries=4)

    def running() -> DevNode | None:
        for n in honest:
            if n.alive() and status_of(n)["provider"]["active"] > 0:
                return n
        return None

    victim: DevNode = wait_for("a provider to start the job", running, timeout_s=30, step_s=0.05)
    victim_status = status_of(victim)
    victim_id = victim_status["peer_id"]
    sigkill(victim)
    with by_name(faulty, "workspace").client() as c:
        status = c.wait(job_id, timeout_s=90, until="closed")
        assert status["status"] == "verified", status
        assert victim_id not in {p["provider"] for p in status["paid"]}
        assert any(e["event"] == "replica_failed" for e in status["events"])
        catch_up(faulty, 2)
        assert c.balance(victim_id)["balance"] == victim_status["balance"]


def test_requester_killed_after_delivery_provider_paid_after_deadline(
    faulty: list[DevNode],
) -> None:
    ws = by_name(faulty, "workspace")
    coordinator = by_name(faulty, "coordinator")
    # Whoever holds a receipt must be paid: by the settle if it went out before the kill,
    # else by its claim after the deadline. A receipt is held from its arrival until the
    # settle's block, which can be a few milliseconds; so the coordinator is frozen once the
    # escrow is locked (the 2 s bid window is still open), and no block can end the window.
    workers = [n for n in faulty if "contributor" in n.roles and n.alive()]
    before = {n.name: status_of(n)["balance"] for n in workers}
    job_id = _submit(faulty, redundancy=1, max_retries=3, deadline_s=8.0)
    with ws.client() as c:
        wait_for("the escrow lock", lambda: c.job(job_id)["phase"] != "locking", step_s=0.01)
    os.kill(coordinator.proc.pid, signal.SIGSTOP)
    try:

        def receipted() -> DevNode | None:
            for n in workers:
                work = status_of(n)["provider"]["work"]
                if work.get("receipted") or work.get("claimed"):
                    return n
            return None

        lucky: DevNode = wait_for("a receipt", receipted, timeout_s=30, step_s=0.05)
        sigkill(ws)
    finally:
        os.kill(coordinator.proc.pid, signal.SIGCONT)
    wait_for(
        "the provider's claim to pay",
        lambda: status_of(lucky)["balance"] > before[lucky.name],
        timeout_s=60,
        step_s=0.5,
    )


def test_faulty_ledgers_verify(faulty: list[DevNode]) -> None:
    _verify_all(faulty)
