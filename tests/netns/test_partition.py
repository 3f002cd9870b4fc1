"""A partition (issue 15): contributor-1 in a network namespace of its own, the rest of the
devnet in another, one veth between them. Under a job stream (node/testing/chaos/) the
link is cut for 10 s, then restored. Afterwards every ledger verifies with no escrow open
past its expiry, the nodes hold the same blocks, nobody is paid twice, every job is
verified or failed with a reason and a closed escrow, a job is verified after the heal, and
jobs that need every contributor (redundancy 3) complete: the cut one is back. Root only;
skipped with the reason otherwise. Run with -s to see the chaos table row."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.devnet import (
    DAEMON_COMMAND,
    DevNode,
    Place,
    running_devnet,
    tiny_model_and_inputs,
    wait_ready,
)
from node.ledger._txqueue import TX_LIFETIME_BLOCKS
from node.testing.chaos import PhaseResult, by_name, run_fault, table
from node.testing.netns import Lab, Link, unavailable

_why = unavailable()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(_why is not None, reason=_why or "")]

BLOCK_MS = 200
CUT_S = 10.0
#: contributor-1 waits this long before each run (tests/e2e/faulty_node.py), so that it
#: has work in flight when the link is cut
SLOW_MS = 1500
SLOW_NODE = (sys.executable, str(Path(__file__).parent.parent / "e2e" / "faulty_node.py"))


@pytest.fixture(scope="module")
def partitioned(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Lab, Link, list[DevNode], Path]]:
    root = tmp_path_factory.mktemp("partition")
    with Lab() as lab:
        rest, alone = lab.namespace("rest"), lab.namespace("alone")
        link = lab.link(rest, "10.78.0.1/24", alone, "10.78.0.2/24")
        places = {
            name: Place(rest.name, "10.78.0.1")
            for name in ("coordinator", "workspace", "contributor-2", "contributor-3")
        }
        places["contributor-1"] = Place(alone.name, "10.78.0.2")
        with running_devnet(
            root / "devnet",
            3,
            places=places,
            workspace_extra="[requester]\nbid_window_ms = 300\n",
            contributor_extra=lambda i: "max_concurrency = 4\nwarm_workers = 1\n",
            contributor_command=lambda i: (
                (*SLOW_NODE, "slow", str(SLOW_MS)) if i == 0 else DAEMON_COMMAND
            ),
            block_interval_ms=BLOCK_MS,
        ) as nodes:
            wait_ready(nodes)
            yield lab, link, nodes, root / "snapshots"


def test_a_partitioned_contributor_loses_nothing_and_comes_back(
    partitioned: tuple[Lab, Link, list[DevNode], Path],
) -> None:
    lab, link, nodes, snapshots = partitioned
    in_flight: list[dict[str, int]] = []

    @contextlib.contextmanager
    def cut(node: DevNode) -> Iterator[None]:
        assert node.netns == link.b.name
        # cut while it runs something (bounded): its API is on its own namespace's loopback
        with node.client() as c:
            deadline = time.monotonic() + 15
            work: dict[str, int] = {}
            while not work and time.monotonic() < deadline:
                work = c.status()["provider"]["work"]
                time.sleep(0.05)
        lab.link_down(link)
        in_flight.append(work)
        try:
            yield
        finally:
            lab.link_up(link)

    result: PhaseResult = run_fault(
        nodes,
        "partition-contributor",
        snapshots,
        duration_s=4.0,
        threads=2,
        deadline_s=8.0,
        stop_s=CUT_S,
        open_escrows=TX_LIFETIME_BLOCKS + 10,
        block_interval_ms=BLOCK_MS,
        say=lambda m: print(f"{time.monotonic():.1f} {m}"),
        partition=cut,
    )
    print("\n" + table([result]))
    assert in_flight and in_flight[0], f"nothing in flight on contributor-1: {in_flight}"
    assert result.problems == [], table([result])
    assert result.conserved and result.heights_agree
    assert result.open_past_expiry == 0 and result.paid_twice == 0 and result.stuck == 0
    assert result.ok > 0 and result.recovery_s is not None
    # jobs submitted after the heal that need all three contributors complete
    model, inputs = tiny_model_and_inputs()
    with by_name(nodes, "workspace").client(timeout_s=60) as c:
        jobs = [c.submit(model, inputs, redundancy=3, deadline_s=20) for _ in range(2)]
        done = [c.wait(job, timeout_s=40) for job in jobs]
    assert [d["status"] for d in done] == ["verified", "verified"], done
    alone = by_name(nodes, "contributor-1")
    assert alone.info is not None
    for d in done:
        assert alone.info.peer_id in {p["provider"] for p in d["paid"]}, d
