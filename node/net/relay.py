"""Reaching a peer that may be behind a NAT (specs/network.md, "Relay and reachability").

A node behind a home router cannot be dialled: its listen addresses are private, and its
router lets in only what answers a connection made from inside. It holds a reservation at
one or more relays (the network's coordinators) and is reached through them. A peer's
relayed addresses are not always known to the dialler: the DHT's provider records and
identify carry only a host's listen addresses. So a dial tries, in this order and
overlapping:

1. the peer's direct addresses (it may be public, or in the same network);
2. its known relayed addresses, and then the peer through each of our own relays (the
   relays a private node reserves at are, by default, the bootstrap peers every node
   knows), started :data:`DIRECT_HEAD_START` seconds after the direct dial or as soon as
   it fails; the first connection made wins and the other attempts are cancelled.

A direct dial into a home hangs until its timeout (the router drops it), so waiting for it
before the relay would cost the whole dial timeout.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import trio

from ._errors import NetworkError, PeerUnreachable

#: How long the direct dial runs alone before the relayed ones start (seconds).
DIRECT_HEAD_START = 0.3


def circuit_addresses(
    known: Sequence[str], relays: Sequence[str], peer_id: str, own_peer_id: str
) -> list[str]:
    """The relayed addresses to try for ``peer_id``: the ``known`` ones (completed with
    ``/p2p/<peer id>``), then ``<relay>/p2p-circuit/p2p/<peer id>`` through each of
    ``relays`` that is neither the peer itself nor us; no duplicates."""
    out: list[str] = []
    for text in known:
        if "/p2p/" not in text.rpartition("/p2p-circuit")[2]:
            text = f"{text}/p2p/{peer_id}"
        out.append(text)
    for relay in relays:
        relay_id = relay.rpartition("/p2p/")[2]
        if relay_id in (peer_id, own_peer_id) or "/p2p-circuit" in relay:
            continue
        out.append(f"{relay}/p2p-circuit/p2p/{peer_id}")
    return list(dict.fromkeys(out))


async def dial_direct_then_relayed(
    direct: Callable[[], Awaitable[None]] | None,
    relayed: Sequence[Callable[[], Awaitable[None]]],
    *,
    head_start: float = DIRECT_HEAD_START,
) -> None:
    """Run ``direct`` (if any), and ``head_start`` seconds later or once it failed the
    ``relayed`` attempts one after another; return when one connects, cancelling the
    rest. Raises :class:`PeerUnreachable` (the last failure's message) if none does."""
    errors: list[str] = []
    connected = False
    direct_done = trio.Event()

    async def run_direct(cancel: trio.CancelScope) -> None:
        nonlocal connected
        assert direct is not None
        try:
            await direct()
        except NetworkError as exc:
            errors.append(str(exc))
            direct_done.set()
            return
        connected = True
        cancel.cancel()

    async def run_relayed(cancel: trio.CancelScope) -> None:
        nonlocal connected
        if direct is not None:
            with trio.move_on_after(head_start):
                await direct_done.wait()
        for attempt in relayed:
            try:
                await attempt()
            except NetworkError as exc:
                errors.append(str(exc))
                continue
            connected = True
            cancel.cancel()
            return

    async with trio.open_nursery() as nursery:
        if direct is not None:
            nursery.start_soon(run_direct, nursery.cancel_scope)
        if relayed:
            nursery.start_soon(run_relayed, nursery.cancel_scope)
    if not connected:
        raise PeerUnreachable(errors[-1] if errors else "no address to dial")
