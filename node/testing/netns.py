"""Network namespaces for tests: a small lab of isolated network stacks on this machine.

A :class:`Lab` (a context manager) creates Linux network namespaces with unique names,
veth pairs between them with addresses and routes, a masquerading router (a home NAT), and
deletes all of it on the way out, also after a failure. Tests and the chaos suite use it
for a partition (:meth:`Lab.link_down` / :meth:`Lab.link_up`) and a home NAT
(:meth:`Lab.router`). It needs root, ``ip`` (iproute2) and, for a router, ``nft``
(nftables); :func:`unavailable` says why a lab cannot be made here.

Only the namespaces of the lab are touched: both ends of a veth are created inside them
(``ip -n NS link add ... peer ... netns NS2``), so the host's own interfaces, addresses
and routes never change. A process runs inside a namespace by :meth:`Namespace.command`
(``ip netns exec``); this process reaches a namespace's sockets from any thread through
:func:`inside` (``setns(2)`` on the calling thread, undone on exit) or a
:class:`NetnsTransport` for httpx, which opens each connection inside the namespace (a
node's API answers only on the loopback of its own namespace).
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpcore
import httpx

__all__ = [
    "Lab",
    "LabError",
    "Link",
    "Namespace",
    "NetnsTransport",
    "inside",
    "remove_stale",
    "unavailable",
]

_CLONE_NEWNET = 0x40000000
_counter = itertools.count()
_counter_lock = threading.Lock()


class LabError(Exception):
    """A namespace, link, address, route or rule could not be made (the message says which
    command failed and what it printed)."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise LabError(f"`ip {' '.join(args)}` failed: {done.stderr.strip()}")
    return done


def unavailable(*, nat: bool = False) -> str | None:
    """Why a lab cannot be made here (``None`` when it can): not root, no ``ip``, no
    namespaces in this kernel or container, or (``nat``) no ``nft``."""
    if os.geteuid() != 0:
        return "network namespaces need root (run the test as root, as CI does)"
    if shutil.which("ip") is None:
        return "no `ip` command (install iproute2)"
    if nat and shutil.which("nft") is None:
        return "no `nft` command for the NAT router (install nftables: scripts/setup.sh)"
    name = f"aimxprobe{os.getpid()}"
    done = _ip("netns", "add", name, check=False)
    if done.returncode != 0:
        return f"`ip netns add` does not work here: {done.stderr.strip()}"
    _ip("netns", "del", name, check=False)
    return None


def remove_stale() -> list[str]:
    """Delete the namespaces of labs whose process is gone (a test killed with SIGKILL
    never ran its cleanup); returns their names."""
    removed: list[str] = []
    with contextlib.suppress(OSError):
        for name in os.listdir("/run/netns"):
            found = re.fullmatch(r"aimx(\d+)x\d+\w*", name)
            if found is None or os.path.exists(f"/proc/{found.group(1)}"):
                continue
            if _ip("netns", "del", name, check=False).returncode == 0:
                removed.append(name)
    return removed


@contextlib.contextmanager
def inside(netns: str) -> Iterator[None]:
    """Run the block with the calling thread in the network namespace ``netns``: sockets
    it opens there stay in that namespace. The thread's own namespace is restored after."""
    libc = ctypes.CDLL(None, use_errno=True)
    own = os.open(f"/proc/{os.getpid()}/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"/run/netns/{netns}", os.O_RDONLY)
        try:
            if libc.setns(target, _CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise LabError(f"cannot enter namespace {netns}: {os.strerror(err)}")
        finally:
            os.close(target)
        try:
            yield
        finally:
            if libc.setns(own, _CLONE_NEWNET) != 0:  # pragma: no cover - cannot fail as root
                err = ctypes.get_errno()
                raise LabError(f"cannot return from namespace {netns}: {os.strerror(err)}")
    finally:
        os.close(own)


class _NetnsBackend(httpcore.SyncBackend):
    def __init__(self, netns: str) -> None:
        self.netns = netns

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        with inside(self.netns):
            return super().connect_tcp(host, port, timeout, local_address, socket_options)


class NetnsTransport(httpx.HTTPTransport):
    """An httpx transport whose connections are opened inside the namespace ``netns``
    (from whatever thread calls it)."""

    def __init__(self, netns: str) -> None:
        super().__init__()
        self._pool = httpcore.ConnectionPool(network_backend=_NetnsBackend(netns))


@dataclass
class Namespace:
    """One namespace of a lab: its (unique) name and its addresses by interface."""

    name: str
    addresses: dict[str, str] = field(default_factory=dict)

    def command(self, args: Sequence[str]) -> list[str]:
        """``args`` as a command that runs inside this namespace."""
        return ["ip", "netns", "exec", self.name, *args]

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``args`` inside the namespace; raise :class:`LabError` if it fails."""
        done = subprocess.run(self.command(args), capture_output=True, text=True, check=False)
        if check and done.returncode != 0:
            raise LabError(f"`{' '.join(args)}` in {self.name} failed: {done.stderr.strip()}")
        return done

    def address(self, ifname: str | None = None) -> str:
        """The IPv4 address (without prefix length) on ``ifname``, or on its only link."""
        if ifname is None:
            if len(self.addresses) != 1:
                raise LabError(f"{self.name} has {len(self.addresses)} addresses: name one")
            return next(iter(self.addresses.values()))
        return self.addresses[ifname]


@dataclass(frozen=True)
class Link:
    """A veth pair: ``a``'s end ``a_if`` and ``b``'s end ``b_if``."""

    a: Namespace
    a_if: str
    b: Namespace
    b_if: str


class Lab:
    """Namespaces, links and routers, all removed by :meth:`close` (the context manager's
    exit). Names are ``aimx<pid>x<n><role>``: unique on the machine while this process
    lives, and short (interface names are at most 15 bytes, and live inside the lab's
    namespaces only)."""

    def __init__(self) -> None:
        with _counter_lock:
            self.prefix = f"aimx{os.getpid()}x{next(_counter)}"
        remove_stale()
        self.namespaces: list[Namespace] = []
        self._routes: list[tuple[Namespace, str, str]] = []

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Delete every namespace of the lab (their veths and rules go with them). Errors
        are collected and raised after all were tried."""
        failed: list[str] = []
        for ns in reversed(self.namespaces):
            done = _ip("netns", "del", ns.name, check=False)
            if done.returncode != 0 and os.path.exists(f"/run/netns/{ns.name}"):
                failed.append(f"{ns.name}: {done.stderr.strip()}")
        self.namespaces.clear()
        if failed:
            raise LabError("could not delete namespaces " + "; ".join(failed))

    def namespace(self, role: str) -> Namespace:
        """A new namespace (its name ends in ``role``), with loopback up."""
        name = f"{self.prefix}{role}"
        _ip("netns", "add", name)
        ns = Namespace(name)
        self.namespaces.append(ns)
        _ip("-n", name, "link", "set", "lo", "up")
        return ns

    def link(self, a: Namespace, a_addr: str, b: Namespace, b_addr: str) -> Link:
        """A veth pair between ``a`` and ``b``, up, with ``a_addr`` and ``b_addr``
        (``10.0.0.1/24`` form) on its ends; each end is named after the other namespace's
        role (``v-<role>``)."""
        a_if = "v" + b.name.removeprefix(self.prefix)[:13]
        b_if = "v" + a.name.removeprefix(self.prefix)[:13]
        _ip(
            "-n", a.name, "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", b.name
        )
        for ns, ifname, addr in ((a, a_if, a_addr), (b, b_if, b_addr)):
            _ip("-n", ns.name, "addr", "add", addr, "dev", ifname)
            _ip("-n", ns.name, "link", "set", ifname, "up")
            ns.addresses[ifname] = addr.partition("/")[0]
        return Link(a, a_if, b, b_if)

    def route(self, ns: Namespace, via: str, to: str = "default") -> None:
        """A route in ``ns`` to ``to`` (``default`` or a prefix) through ``via``."""
        _ip("-n", ns.name, "route", "add", to, "via", via)
        self._routes.append((ns, to, via))

    def forwarding(self, ns: Namespace) -> None:
        """Let ``ns`` forward between its links (a plain router: the internet between
        two home routers)."""
        ns.run("sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward")

    def router(self, ns: Namespace, wan_if: str) -> None:
        """Make ``ns`` a home router: it forwards, masquerades what leaves through
        ``wan_if`` (nftables), and lets in from ``wan_if`` only what answers a connection
        made from inside (nothing unsolicited reaches a home, silently dropped). Homes on
        two of its other links do not reach each other (refused)."""
        self.forwarding(ns)
        rules = (
            "table ip aimxnat {\n"
            "  chain out {\n"
            "    type nat hook postrouting priority srcnat; policy accept;\n"
            f'    oifname "{wan_if}" masquerade\n'
            "  }\n"
            # the router itself answers nothing from outside (no RST for an unknown port:
            # a home router drops it, so a hole punch's early SYN does not kill the other)
            "  chain own {\n"
            "    type filter hook input priority filter; policy accept;\n"
            f'    iifname "{wan_if}" ct state new drop\n'
            "  }\n"
            "  chain gate {\n"
            "    type filter hook forward priority filter; policy drop;\n"
            "    ct state established,related accept\n"
            f'    iifname != "{wan_if}" oifname "{wan_if}" accept\n'
            # between two homes of this router: refused at once, as from a home to a
            # private address that is not on its network (py-libp2p's DHT lookups dial
            # every peer they hear of; a silent drop stalls them for the dial timeout)
            f'    iifname != "{wan_if}" reject with icmp type admin-prohibited\n'
            "  }\n"
            "}\n"
        )
        done = subprocess.run(
            ns.command(["nft", "-f", "-"]), input=rules, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise LabError(f"nft in {ns.name} failed: {done.stderr.strip()}")

    def link_down(self, link: Link) -> None:
        """Cut ``link`` (both ends down): a partition. Connections across it stall."""
        _ip("-n", link.a.name, "link", "set", link.a_if, "down")
        _ip("-n", link.b.name, "link", "set", link.b_if, "down")

    def link_up(self, link: Link) -> None:
        """Heal ``link``: both ends up again, and the lab's routes that the kernel dropped
        with it (a gateway route goes when its link goes down) added back."""
        for ns, ifname in ((link.a, link.a_if), (link.b, link.b_if)):
            _ip("-n", ns.name, "link", "set", ifname, "up")
        for ns, to, via in self._routes:
            if ns in (link.a, link.b):
                _ip("-n", ns.name, "route", "replace", to, "via", via, check=False)
