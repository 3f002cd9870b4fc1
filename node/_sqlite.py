"""The small SQLite stores a node keeps in its data directory (money intents,
attestations): one way to open them and to write to them."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

log = logging.getLogger(__name__)


class SmallStore:
    """A store at ``path`` (created with its 0700 directory; ``None``: in memory only)
    with ``schema`` applied. WAL with ``synchronous=NORMAL``: each committed change
    survives a crash of the process. A write that fails (a full disk) is logged and
    counted (``write_errors``), never raised: what it kept is still carried out while the
    daemon runs, only a restart in that state would lose it."""

    #: What a row holds, for the log line of a failed write.
    WHAT = "a record"

    def __init__(self, path: Path | None, schema: str) -> None:
        if path is not None:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._db = sqlite3.connect(":memory:" if path is None else str(path))
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        with self._db:
            self._db.execute(schema)
        self.write_errors = 0

    def close(self) -> None:
        self._db.close()

    def _write(self, sql: str, args: tuple[object, ...]) -> None:
        try:
            with self._db:
                self._db.execute(sql, args)
        except sqlite3.Error as exc:
            self.write_errors += 1
            log.error("could not keep %s on disk: %s", self.WHAT, exc)
