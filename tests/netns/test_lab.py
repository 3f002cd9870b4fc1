"""node/testing/netns.py: namespaces on a veth reach each other, a cut link is a partition
and heals, a masquerading router lets a home dial out and nothing dial in, and the lab is
gone after a failure. Root only (skipped with the reason otherwise)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from node.testing.netns import Lab, NetnsTransport, inside, unavailable

_why = unavailable(nat=True)
pytestmark = pytest.mark.skipif(_why is not None, reason=_why or "")


def _listener(ns: str, host: str) -> tuple[socket.socket, int]:
    """A TCP listener inside ``ns`` (opened from this thread); it accepts and answers the
    peer's address, in a thread."""
    with inside(ns):
        srv = socket.create_server((host, 0))
    port = srv.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                conn, peer = srv.accept()
            except OSError:
                return
            with conn:
                conn.sendall(peer[0].encode())

    threading.Thread(target=serve, daemon=True).start()
    return srv, port


def _ask(ns: str, host: str, port: int) -> str | None:
    """The address the listener saw us come from, or None if no connection opened."""
    try:
        with inside(ns), socket.create_connection((host, port), timeout=1.0) as s:
            return s.recv(64).decode()
    except OSError:
        return None


@pytest.fixture
def lab() -> Iterator[Lab]:
    with Lab() as made:
        yield made
    assert not any(n.startswith(made.prefix) for n in _netns_names())


def _netns_names() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return [line.split()[0] for line in out.stdout.splitlines() if line.strip()]


def test_two_namespaces_on_a_veth_reach_each_other_and_a_cut_link_heals(lab: Lab) -> None:
    a, b = lab.namespace("a"), lab.namespace("b")
    link = lab.link(a, "10.31.0.1/24", b, "10.31.0.2/24")
    srv, port = _listener(b.name, "10.31.0.2")
    with srv:
        assert _ask(a.name, "10.31.0.2", port) == "10.31.0.1"
        # this thread is back in its own namespace: the lab's address is not here
        assert _ask_here("10.31.0.2", port) is None
        lab.link_down(link)
        assert _ask(a.name, "10.31.0.2", port) is None
        lab.link_up(link)
        assert _ask(a.name, "10.31.0.2", port) == "10.31.0.1"
    # a process started inside a namespace sees only that namespace's links
    out = b.run(sys.executable, "-c", "import socket; print(socket.gethostbyname('localhost'))")
    assert out.stdout.strip() == "127.0.0.1"
    assert "10.31.0.2" in b.run("ip", "-4", "addr").stdout


def _ask_here(host: str, port: int) -> str | None:
    try:
        with socket.create_connection((host, port), timeout=0.5) as s:
            return s.recv(64).decode()
    except OSError:
        return None


def test_a_home_behind_the_router_dials_out_and_nothing_dials_in(lab: Lab) -> None:
    public, router, home = lab.namespace("pub"), lab.namespace("rtr"), lab.namespace("home")
    wan = lab.link(router, "10.32.0.2/24", public, "10.32.0.1/24")
    lab.link(router, "192.168.32.1/24", home, "192.168.32.2/24")
    lab.route(home, via="192.168.32.1")
    lab.router(router, wan.a_if)
    srv, port = _listener(public.name, "10.32.0.1")
    home_srv, home_port = _listener(home.name, "0.0.0.0")
    with srv, home_srv:
        # out: the public side sees the router's address, not the home's
        assert _ask(home.name, "10.32.0.1", port) == "10.32.0.2"
        # in: neither the home's address nor the router's answers from the public side
        lab.route(public, via="10.32.0.2", to="192.168.32.0/24")  # even with a route
        assert _ask(public.name, "192.168.32.2", home_port) is None
        assert _ask(public.name, "10.32.0.2", home_port) is None
        # a cut WAN link takes the gateway route with it; healing puts it back
        lab.link_down(wan)
        assert _ask(home.name, "10.32.0.1", port) is None
        lab.link_up(wan)
        assert _ask(home.name, "10.32.0.1", port) == "10.32.0.2"


def test_an_http_transport_connects_inside_the_namespace(lab: Lab) -> None:
    import httpx

    a = lab.namespace("a")
    with inside(a.name):
        srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            conn.recv(4096)
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    with srv, httpx.Client(transport=NetnsTransport(a.name)) as client:
        assert client.get(f"http://127.0.0.1:{port}/").text == "ok"
    t.join(5)


def test_the_lab_is_removed_after_a_failure() -> None:
    with pytest.raises(RuntimeError), Lab() as lab:
        a, b = lab.namespace("a"), lab.namespace("b")
        lab.link(a, "10.33.0.1/24", b, "10.33.0.2/24")
        prefix = lab.prefix
        assert sum(n.startswith(prefix) for n in _netns_names()) == 2
        raise RuntimeError("the test failed here")
    assert not any(n.startswith(prefix) for n in _netns_names())
    assert os.path.exists("/run/netns") and not any(
        n.startswith(prefix) for n in os.listdir("/run/netns")
    )


def test_a_lab_left_by_a_killed_process_is_removed() -> None:
    dead = next(p for p in range(4_000_000, 4_100_000) if not os.path.exists(f"/proc/{p}"))
    name = f"aimx{dead}x0left"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        with Lab():
            assert name not in _netns_names()
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
