"""Home NAT (issue 17): a contributor and a requester, each in a home behind its own
masquerading router, and the coordinator (bootstrap peer and relay) and a second
contributor on the public side, which also routes between the two routers (the internet).

    home1 192.168.77.2 (contributor-1) -- router1 10.77.0.2 --+
                                                              public 10.77.0.1, 10.78.0.1
    home2 192.168.78.2 (workspace)     -- router2 10.78.0.2 --+  coordinator, contributor-2

A router forwards into its home only what answers a connection made from inside, and
drops the rest silently, as home routers do; nothing routes to a home's private addresses.
So every connection to contributor-1 or to the workspace is one they dialled out, a
circuit through the coordinator's relay, or a hole punched through both routers. Both are
told they are private: they take a relay reservation at the coordinator and advertise the
relayed address. The tests submit jobs of redundancy 2 (both contributors must run each)
from the workspace and expect them verified; each private node's status says it is
relayed, through the coordinator; and the relayed connection between the two homes is
upgraded to a direct one by hole punching (DCUtR). Root only; skipped with the reason
otherwise."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.devnet import DevNode, Place, running_devnet, tiny_model_and_inputs, wait_ready
from node.testing.netns import Lab, inside, unavailable

_why = unavailable(nat=True)
pytestmark = [pytest.mark.slow, pytest.mark.skipif(_why is not None, reason=_why or "")]

PRIVATE = 'reachability = "private"\n'


@pytest.fixture(scope="module")
def home_nat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Lab, list[DevNode]]]:
    root: Path = tmp_path_factory.mktemp("nat")
    with Lab() as lab:
        public = lab.namespace("pub")
        router1, router2 = lab.namespace("rtr1"), lab.namespace("rtr2")
        home1, home2 = lab.namespace("home1"), lab.namespace("home2")
        wan1 = lab.link(router1, "10.77.0.2/24", public, "10.77.0.1/24")
        wan2 = lab.link(router2, "10.78.0.2/24", public, "10.78.0.1/24")
        lab.link(router1, "192.168.77.1/24", home1, "192.168.77.2/24")
        lab.link(router2, "192.168.78.1/24", home2, "192.168.78.2/24")
        lab.forwarding(public)
        lab.route(router1, via="10.77.0.1")
        lab.route(router2, via="10.78.0.1")
        lab.route(home1, via="192.168.77.1")
        lab.route(home2, via="192.168.78.1")
        lab.router(router1, wan1.a_if)
        lab.router(router2, wan2.a_if)
        places = {
            "coordinator": Place(public.name, "10.77.0.1"),
            "contributor-2": Place(public.name, "10.77.0.1"),
            "contributor-1": Place(home1.name, "192.168.77.2", PRIVATE),
            "workspace": Place(home2.name, "192.168.78.2", PRIVATE),
        }
        with running_devnet(
            root,
            2,
            places=places,
            workspace_extra="[requester]\nbid_window_ms = 1000\n",
        ) as nodes:
            wait_ready(nodes, timeout_s=90)
            yield lab, nodes


def _by(nodes: list[DevNode], name: str) -> DevNode:
    return next(n for n in nodes if n.name == name)


def _status(node: DevNode) -> dict[str, object]:
    with node.client() as c:
        return c.status()


def test_the_homes_cannot_be_dialled(home_nat: tuple[Lab, list[DevNode]]) -> None:
    """The lab is a NAT: a home dials out, nothing dials in, the homes do not see each
    other (so what follows can only work through the relay)."""
    lab, nodes = home_nat
    by_ns = {ns.name.removeprefix(lab.prefix): ns.name for ns in lab.namespaces}
    with inside(by_ns["home1"]):
        listener = socket.create_server(("192.168.77.2", 0))
    port = listener.getsockname()[1]

    def accept() -> None:
        with contextlib.suppress(OSError):  # closed at the end of the test
            listener.accept()[0].close()

    threading.Thread(target=accept, daemon=True).start()
    with listener:
        for source, host in (("pub", "192.168.77.2"), ("home2", "192.168.77.2")):
            with inside(by_ns[source]), pytest.raises(OSError):
                socket.create_connection((host, port), timeout=1.0).close()
        # nor through its router's public address (no port is forwarded)
        with inside(by_ns["home2"]), pytest.raises(OSError):
            socket.create_connection(("10.77.0.2", port), timeout=1.0).close()
        # out: the home reaches the coordinator's libp2p port
        with inside(by_ns["home1"]):
            socket.create_connection(("10.77.0.1", _p2p_port(_by(nodes, "coordinator"))), 1.0)


def _p2p_port(node: DevNode) -> int:
    assert node.info is not None
    return int(node.info.addresses[0].split("/tcp/")[1].split("/")[0])


def test_private_nodes_hold_a_reservation_at_the_coordinator(
    home_nat: tuple[Lab, list[DevNode]],
) -> None:
    _, nodes = home_nat
    coordinator = _by(nodes, "coordinator")
    assert coordinator.info is not None
    relay = coordinator.info.peer_id
    assert _status(coordinator)["reachability"] == "direct"
    for name in ("contributor-1", "workspace"):
        status = _status(_by(nodes, name))
        assert status["reachability"] == "relayed", (name, status)
        assert status["relay"] == relay
        addresses = status["addresses"]
        assert isinstance(addresses, list)
        assert any(f"/p2p/{relay}/p2p-circuit/p2p/" in a for a in addresses), addresses
    assert _status(_by(nodes, "contributor-2"))["reachability"] == "unknown"


def test_a_contributor_and_a_requester_behind_nat_complete_jobs(
    home_nat: tuple[Lab, list[DevNode]],
) -> None:
    _, nodes = home_nat
    workspace, home = _by(nodes, "workspace"), _by(nodes, "contributor-1")
    model, inputs = tiny_model_and_inputs()
    earned_before = _earned(home)
    started = time.monotonic()
    with workspace.client(timeout_s=60) as c:
        jobs = [c.submit(model, inputs, redundancy=2, deadline_s=30) for _ in range(3)]
        done = [c.wait(job, timeout_s=60) for job in jobs]
    took = time.monotonic() - started
    assert [d["status"] for d in done] == ["verified"] * 3, done
    # each job ran on both contributors: the one behind the NAT was found, won, ran it and
    # was paid
    assert home.info is not None
    for d in done:
        assert home.info.peer_id in {p["provider"] for p in d["paid"]}, d
    print(f"3 jobs of redundancy 2 through the relay in {took:.1f} s")
    deadline = time.monotonic() + 20
    while _earned(home) <= earned_before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _earned(home) > earned_before


def _earned(node: DevNode) -> int:
    provider = _status(node).get("provider")
    assert isinstance(provider, dict)
    return int(provider.get("earned", 0))


def test_the_relayed_connection_between_the_homes_becomes_direct(
    home_nat: tuple[Lab, list[DevNode]],
) -> None:
    """After the jobs, contributor-1 is connected to the coordinator and contributor-2
    (it dialled them) and to the workspace in the other home: first through the relay,
    then (DCUtR: both dial each other's router at once, from their listen ports) directly.
    No peer is left that it reaches only through the relay."""
    _, nodes = home_nat
    home = _by(nodes, "contributor-1")
    deadline = time.monotonic() + 60
    status = _status(home)
    while time.monotonic() < deadline and not (
        status["connected_peers"] == 3 and status["relayed_peers"] == 0
    ):
        time.sleep(0.5)
        status = _status(home)
    assert (status["connected_peers"], status["relayed_peers"]) == (3, 0), status
    assert status["reachability"] == "relayed"  # it keeps its reservation
