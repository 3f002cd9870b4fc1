"""py-libp2p's logs through ours.

py-libp2p configures its ``libp2p`` logger when imported (no handler, no propagation) and
some of its modules warn thousands of times on loopback. :func:`route_libp2p_logs` gives
that logger one handler of ours, which re-emits each record on ``node.net.libp2p.<name>``
(so the daemon's logging configuration decides where it goes) and passes each distinct
message at most once per ``interval`` seconds.

py-libp2p's lines about a peer's bad bytes ("Failed to parse protobuf message", "DHT
message too large", ...) do not say whose they were. While a task serves a peer's inbound
stream on one of py-libp2p's protocols, the stream guard names the peer in
:data:`serving_peer` (a context variable: per task, inherited by the tasks it starts), and
each record forwarded from that task ends with ``(peer <peer id> on <protocol>)``.
"""

from __future__ import annotations

import logging
import time
from contextvars import ContextVar
from dataclasses import dataclass

_OUR_PREFIX = "node.net.libp2p"


@dataclass(frozen=True, slots=True)
class Serving:
    """The peer whose inbound stream the current task serves, and on which protocol."""

    peer: bytes  #: its 32-byte key
    peer_id: str  #: its peer id as text
    protocol_id: str


#: Set by the stream guard for the life of a py-libp2p handler (never for our own request
#: handlers, which name the peer themselves and may start long-lived work).
serving_peer: ContextVar[Serving | None] = ContextVar("aimx_serving_peer", default=None)


class _Forward(logging.Handler):
    def __init__(self, interval: float, max_keys: int = 1024) -> None:
        super().__init__()
        self.interval = interval
        self.max_keys = max_keys
        self._last: dict[tuple[str, object, str], float] = {}
        self.suppressed = 0

    def emit(self, record: logging.LogRecord) -> None:
        serving = serving_peer.get()
        key = (record.name, record.msg, serving.peer_id if serving else "")
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self.suppressed += 1
            return
        if len(self._last) >= self.max_keys:
            self._last.clear()
        self._last[key] = now
        target = logging.getLogger(f"{_OUR_PREFIX}.{record.name.removeprefix('libp2p.')}")
        if not target.isEnabledFor(record.levelno):
            return
        if serving is not None:
            record = _naming(record, serving)
        target.handle(_shortened(record))


#: Longest py-libp2p line forwarded: its lines quote what peers sent (a 1 MiB topic name
#: was written whole: round 43).
MAX_LINE_CHARS = 2048


def _shortened(record: logging.LogRecord) -> logging.LogRecord:
    """``record``, its message cut to ``MAX_LINE_CHARS``."""
    try:
        text = record.getMessage()
    except Exception:
        return record
    if len(text) <= MAX_LINE_CHARS:
        return record
    copy = logging.makeLogRecord(record.__dict__)
    copy.msg = f"{text[:MAX_LINE_CHARS]}... ({len(text) - MAX_LINE_CHARS} more characters)"
    copy.args = None
    return copy


def _naming(record: logging.LogRecord, serving: Serving) -> logging.LogRecord:
    """A copy of ``record`` whose message names the peer it is about."""
    try:
        text = record.getMessage()
    except Exception:  # a malformed record of py-libp2p's: forward it as it is
        return record
    if serving.peer_id in text:
        return record
    copy = logging.makeLogRecord(record.__dict__)
    copy.msg = f"{text} (peer {serving.peer_id} on {serving.protocol_id})"
    copy.args = None
    return copy


def route_libp2p_logs(level: int = logging.WARNING, interval: float = 60.0) -> None:
    """Send py-libp2p's records of ``level`` and above through ``node.net.libp2p``.
    Idempotent: calling it again only updates the level and interval."""
    root = logging.getLogger("libp2p")
    for handler in list(root.handlers):
        if isinstance(handler, _Forward):
            handler.interval = interval
            root.setLevel(level)
            return
    root.handlers.clear()
    root.addHandler(_Forward(interval))
    root.setLevel(level)
    root.propagate = False


#: A :class:`Tally` writes a kind of line at most once in this long, seconds.
LOG_EVERY_S = 10.0


class Tally:
    """Log lines about what a peer made us refuse, at most one a kind every
    :data:`LOG_EVERY_S`, with the count since the last and the last peer or host: a line
    per refused socket was 73,094 lines in 30 s from one host (round 36, F4), a line per
    refused stream 3,344 in 10 s from one connection (round 37, N2)."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self.counts: dict[str, int] = {}
        self.last: dict[str, float] = {}

    def note(self, what: str, who: object) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1
        now = time.monotonic()
        if now - self.last.get(what, -LOG_EVERY_S) >= LOG_EVERY_S:
            self.logger.info(
                "%d %s since the last such line (at most one in %g s), the last from %s",
                self.counts[what],
                what,
                LOG_EVERY_S,
                who,
            )
            self.counts[what] = 0
            self.last[what] = now
