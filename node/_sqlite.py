"""The small SQLite stores a node keeps in its data directory (money intents,
attestations): one way to open them."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def open_store(path: Path | None, schema: str) -> sqlite3.Connection:
    """Open (creating it and its 0700 directory) the store at ``path``, or one in memory
    for ``None``, with ``schema`` applied. WAL with ``synchronous=NORMAL``: each committed
    change survives a crash of the process."""
    if path is not None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    db = sqlite3.connect(":memory:" if path is None else str(path))
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    with db:
        db.execute(schema)
    return db
