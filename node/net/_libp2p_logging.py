"""py-libp2p's logs through ours.

py-libp2p configures its ``libp2p`` logger when imported (no handler, no propagation) and
some of its modules warn thousands of times on loopback. :func:`route_libp2p_logs` gives
that logger one handler of ours, which re-emits each record on ``node.net.libp2p.<name>``
(so the daemon's logging configuration decides where it goes) and passes each distinct
message at most once per ``interval`` seconds.
"""

from __future__ import annotations

import logging
import time

_OUR_PREFIX = "node.net.libp2p"


class _Forward(logging.Handler):
    def __init__(self, interval: float, max_keys: int = 1024) -> None:
        super().__init__()
        self.interval = interval
        self.max_keys = max_keys
        self._last: dict[tuple[str, object], float] = {}
        self.suppressed = 0

    def emit(self, record: logging.LogRecord) -> None:
        key = (record.name, record.msg)
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self.suppressed += 1
            return
        if len(self._last) >= self.max_keys:
            self._last.clear()
        self._last[key] = now
        target = logging.getLogger(f"{_OUR_PREFIX}.{record.name.removeprefix('libp2p.')}")
        if target.isEnabledFor(record.levelno):
            target.handle(record)


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
