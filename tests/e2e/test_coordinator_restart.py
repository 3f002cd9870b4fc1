"""A coordinator restart is a blip (issue 15): a devnet of processes whose coordinator is
killed with SIGKILL and started again on the same data directory about 3 s later. It comes
back on the same address, every node reconnects by itself, and a job submitted during the
outage waits and completes. The time from the coordinator being back to that job's
completion is printed (run with -s to see it)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.cli.node import LISTEN_FILE, NodeCommandError, remember_listen, remembered_listen
from node.devnet import (
    DevNode,
    bootstrap_address,
    restart,
    running_devnet,
    stop,
    tiny_model_and_inputs,
    verify_ledgers,
    wait_ready,
)

from ._devnet import by_name, sigkill, wait_for

ASKED = ("/ip4/127.0.0.1/tcp/0",)


# --- the coordinator's remembered port (no processes) ---------------------------------


def test_the_port_a_tcp0_address_got_is_used_again(tmp_path: Path) -> None:
    got = ("/ip4/127.0.0.1/tcp/40123/p2p/12D3KooWabc", "/ip4/127.0.0.1/tcp/40123/p2p-circuit")
    assert remembered_listen(tmp_path, ASKED) == ASKED  # first start: nothing kept
    remember_listen(tmp_path, ASKED, got)
    assert (tmp_path / LISTEN_FILE).stat().st_mode & 0o777 == 0o600
    assert remembered_listen(tmp_path, ASKED) == ("/ip4/127.0.0.1/tcp/40123",)
    # a configuration that asks for something else now is not overridden
    assert remembered_listen(tmp_path, ("/ip4/0.0.0.0/tcp/0",)) == ("/ip4/0.0.0.0/tcp/0",)
    # a fixed port is the operator's: nothing is kept or changed
    fixed = ("/ip4/127.0.0.1/tcp/4001",)
    assert remembered_listen(tmp_path, fixed) == fixed


def test_a_remembered_port_another_program_holds_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        remember_listen(tmp_path, ASKED, (f"/ip4/127.0.0.1/tcp/{port}/p2p/12D3KooWabc",))
        with pytest.raises(NodeCommandError, match=f"port {port} .* is taken") as info:
            remembered_listen(tmp_path, ASKED)
        assert LISTEN_FILE in str(info.value) and "--bootstrap" in str(info.value)
    kept = json.loads((tmp_path / LISTEN_FILE).read_text())
    assert kept["listen"] == [f"/ip4/127.0.0.1/tcp/{port}"]


def test_aimx_coordinator_start_on_a_taken_port_says_so_and_exits_1(tmp_path: Path) -> None:
    data_dir = tmp_path / "coordinator"
    data_dir.mkdir(mode=0o700)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        remember_listen(data_dir, ASKED, (f"/ip4/127.0.0.1/tcp/{port}/p2p/12D3KooWabc",))
        env = {k: v for k, v in os.environ.items() if k not in ("AIMX_DATA_DIR", "AIMX_DEBUG")}
        done = subprocess.run(
            [sys.executable, "-m", "node", "coordinator", "start", "--data-dir", str(data_dir),
             "--api-port", "0", "--listen", ASKED[0]],
            capture_output=True, text=True, timeout=60, env=env,
        )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    lines = output.strip().splitlines()
    assert len(lines) < 5 and "Traceback" not in output, output
    assert lines[0].startswith("error:") and f"port {port}" in output, output
    assert not (data_dir / "node.json").exists()


# --- the devnet ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[DevNode]]:
    root = tmp_path_factory.mktemp("restart")
    with running_devnet(root, 2) as nodes:
        wait_ready(nodes)
        yield nodes


def _submit(ws: DevNode) -> str:
    path, inputs = tiny_model_and_inputs()
    with ws.client() as c:
        return c.submit(path, inputs, redundancy=1, deadline_s=60.0)


@pytest.mark.slow
def test_coordinator_killed_and_restarted_jobs_resume(devnet: list[DevNode]) -> None:
    coordinator, ws = by_name(devnet, "coordinator"), by_name(devnet, "workspace")
    assert coordinator.info is not None
    address = bootstrap_address(coordinator.info)
    with ws.client() as c:  # the network works, and the workers are warm
        warm = c.wait(_submit(ws), timeout_s=60, until="closed")
        assert warm["status"] == "verified", warm

    sigkill(coordinator)
    killed_at = time.time()
    time.sleep(0.5)
    job_id = _submit(ws)  # during the outage
    with ws.client() as c:
        pending = c.job(job_id, wait_s=1.0)
        assert not pending["done"], pending  # waits, does not fail at once
    time.sleep(max(0.0, 3.0 - (time.time() - killed_at)))

    info = restart(coordinator)
    back_at = info.started_ms / 1000
    assert bootstrap_address(info) == address  # same port, same identity
    with ws.client() as c:
        status = c.wait(job_id, timeout_s=60)
        done_at = time.time()
        assert status["status"] == "verified", status
        resumed_s = done_at - back_at
        outage_s = back_at - killed_at
        print(
            f"\ncoordinator down {outage_s:.1f} s (SIGKILL to node.json); the job submitted "
            f"during the outage completed {resumed_s:.2f} s after it was back"
        )
        (Path(ws.data_dir).parent / "resume.json").write_text(
            json.dumps({"outage_s": outage_s, "resumed_s": resumed_s})
        )
        # and it is paid and closed like any other
        closed = c.wait(job_id, timeout_s=60, until="closed")
        assert closed["closed"] and closed["paid"], closed
    with coordinator.client() as c:  # everyone is back with the coordinator
        wait_for("every node to reconnect", lambda: c.status()["connected_peers"] >= 3)
    stop(devnet)
    report = verify_ledgers(devnet)
    assert all(r["ok"] for r in report.values()), report
