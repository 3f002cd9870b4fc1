"""The peers a node saw lately, kept across restarts (``peers.json`` in the data directory).

A coordinator is the network's bootstrap address: every node dials it, it dials no one. If
it comes back on another address (its port was taken, it moved to another machine), the
nodes that know only the old address cannot find it. So a node remembers the listen
addresses of the peers it was connected to, and after a restart dials them: each one it
reaches learns its new address from the connection, and the DHT spreads it from there.
Its own peers (bootstrap peers, peers it asked something) come first; any other peer only
fills free room, at the address its connection came from (:func:`merge`).

The file is ours (written 0600, atomically); a damaged or foreign one is ignored with a
warning, never trusted beyond being a list of addresses to try once.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

#: Addresses kept at most (the most recent first); a restarted node dials each once.
MAX_REMEMBERED = 64
#: Addresses kept per peer (its listen addresses; an observed ephemeral port is useless).
PER_PEER = 4
#: Longest address accepted from the file.
MAX_ADDRESS_CHARS = 300


def merge(
    ours: Iterable[str],
    kept: Iterable[str],
    others: Iterable[str] = (),
    limit: int = MAX_REMEMBERED,
) -> list[str]:
    """``ours`` (the node's own peers' addresses, most recent first), then ``kept`` (the
    file's), without duplicates, at most ``limit``; then ``others`` (any other peer's) in
    the room left, at most half of ``limit``. Other peers never push out what is kept: 20
    strangers' keys took 63 of the 64 entries, and a remembered coordinator that was not
    connected (what the file is for) was lost (round 40, F2)."""
    out = list(dict.fromkeys([*ours, *kept]))[:limit]
    taken = set(out)
    room = min(limit - len(out), limit // 2)
    for address in others:
        if room <= 0:
            break
        if address not in taken:
            out.append(address)
            taken.add(address)
            room -= 1
    return out


def load(path: Path) -> list[str]:
    """The remembered addresses; [] when there is no file or it is unusable."""
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except OSError as exc:
        log.warning("cannot read %s (%s): no remembered peers are dialled", path, exc)
        return []
    try:
        value = json.loads(raw)
    except ValueError:
        log.warning("%s is not JSON: ignored (it is rewritten as peers connect)", path)
        return []
    if not isinstance(value, dict) or not isinstance(value.get("peers"), list):
        log.warning("%s does not hold a peer list: ignored", path)
        return []
    addresses = [
        a
        for a in value["peers"]
        if isinstance(a, str) and a.startswith("/") and "/p2p/" in a and len(a) <= MAX_ADDRESS_CHARS
    ]
    return addresses[:MAX_REMEMBERED]


def save(path: Path, addresses: list[str]) -> None:
    """Write ``addresses`` atomically (a crash leaves the old file or the new one)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"peers": addresses[:MAX_REMEMBERED]}, f, indent=1)
            f.write("\n")
        os.replace(tmp, path)
    except OSError as exc:  # a full disk, a read-only directory: next time
        log.info("could not write %s: %s", path, exc)
        tmp.unlink(missing_ok=True)
