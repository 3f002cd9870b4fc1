"""The jobs submitted on this node, kept across restarts (``jobs.sqlite3`` in the data
directory), so that ``aimx job list`` and ``aimx job status`` still know them after a crash.

A record is written when the job is submitted, when it ends and when its escrow closes;
what it keeps is what the API shows (spec, status, reason, payouts, the output's hash, the
last events), and the verified output's bytes (table ``outputs``: the API reads them from
there once the job's record no longer holds them in memory, after a restart too). A job
that was still running
when the daemon stopped is failed at the next start with that reason: the requester machine
does not survive a restart, and the money intents (``intents.sqlite3``) close its escrow.

Writes are small transactions; one that fails (a full disk) is logged and counted, never
raised: the job runs on, only its record would be missing after a restart."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import protocol
import scheduler
from protocol import JobSpec

from ._jobs import JobRecord

log = logging.getLogger(__name__)

#: The file in the data directory.
JOBS_FILE = "jobs.sqlite3"
#: Events of a job kept on disk (the API shows the last 50).
KEPT_EVENTS = 50
#: Bytes of verified outputs kept on disk in all: past it the oldest are deleted (their
#: jobs then say the output is no longer kept). 10,000 records of 4 MiB outputs would be
#: 40 GiB.
MAX_OUTPUT_DISK = 2 << 30
#: The reason a job still running when the daemon stopped ends with.
INTERRUPTED = (
    "interrupted: this node stopped while the job ran; its escrow is refunded at its expiry "
    "(or settled, if the results were already verified)"
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id BLOB PRIMARY KEY,
    submitted_ms INTEGER NOT NULL,
    model TEXT NOT NULL,
    spec BLOB NOT NULL,
    status TEXT,
    reason TEXT NOT NULL DEFAULT '',
    paid BLOB,
    output_hash BLOB,
    events BLOB,
    closed INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS outputs (
    job_id BLOB PRIMARY KEY,
    data BLOB NOT NULL
)
"""


class JobJournal:
    """The job records on disk; ``path`` None keeps nothing."""

    def __init__(self, path: Path | None, output_disk: int = MAX_OUTPUT_DISK) -> None:
        self._db: sqlite3.Connection | None = None
        self.write_errors = 0
        self.output_disk = output_disk
        self._output_bytes: int | None = None  # kept on disk (read at the first save)
        if path is None:
            return
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path))
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            with self._db:
                self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            log.error("job records are not kept on disk (%s): %s", path, exc)
            self._db = None

    def close(self) -> None:
        if self._db is not None:
            self._db.close()

    def submitted(self, record: JobRecord) -> None:
        self._write(
            "INSERT OR REPLACE INTO jobs (job_id, submitted_ms, model, spec) VALUES (?, ?, ?, ?)",
            (
                record.job_id,
                record.submitted_ms,
                record.model_name,
                protocol.encode_unsigned(record.spec),
            ),
        )

    def changed(self, record: JobRecord) -> None:
        """The job ended or its escrow closed."""
        done = record.done
        paid = None
        output_hash = record.output_hash
        if done is not None:
            paid = protocol.pack([[p.provider, p.amount] for p in done.paid])
            if done.output is not None:
                output_hash = done.output.hash
        events = protocol.pack(
            [[int(t), str(e), str(d)] for t, e, d in record.events[-KEPT_EVENTS:]]
        )
        self._write(
            "UPDATE jobs SET status = ?, reason = ?, paid = ?, output_hash = ?, events = ?, "
            "closed = ? WHERE job_id = ?",
            (
                str(done.status) if done else None,
                done.reason if done else "",
                paid,
                output_hash,
                events,
                int(record.closed),
                record.job_id,
            ),
        )

    def forget(self, job_ids: list[bytes]) -> None:
        for job_id in job_ids:
            self._write("DELETE FROM jobs WHERE job_id = ?", (job_id,))
            self._write("DELETE FROM outputs WHERE job_id = ?", (job_id,))
        self._output_bytes = None  # counted again at the next save (round 73, F3)

    def save_output(self, job_id: bytes, data: bytes) -> bool:
        """Keep a job's verified output bytes (the oldest kept deleted past
        ``output_disk`` in all); whether they were written."""
        if self._output_bytes is None:
            self._output_bytes = self._query_int("SELECT SUM(length(data)) FROM outputs")
        if not self._write(
            "INSERT OR REPLACE INTO outputs (job_id, data) VALUES (?, ?)", (job_id, data)
        ):
            return False
        self._output_bytes += len(data)
        while self._output_bytes > self.output_disk and self._db is not None:
            try:
                oldest = self._db.execute(
                    "SELECT rowid, length(data) FROM outputs ORDER BY rowid LIMIT 64"
                ).fetchall()
            except sqlite3.Error as exc:
                log.error("could not read the outputs kept on disk: %s", exc)
                break
            if len(oldest) <= 1:
                break  # the newest is kept, whatever its size
            deleted = False
            for rowid, size in oldest[:-1]:
                if self._output_bytes <= self.output_disk:
                    break
                if self._write("DELETE FROM outputs WHERE rowid = ?", (rowid,)):
                    self._output_bytes -= int(size)
                    deleted = True
            if not deleted:
                break  # the disk refuses even deletes: tried again at the next save
        return True

    def _query_int(self, sql: str) -> int:
        if self._db is None:
            return 0
        try:
            row = self._db.execute(sql).fetchone()
        except sqlite3.Error:
            return 0
        return int(row[0] or 0) if row is not None else 0

    def load_output(self, job_id: bytes) -> bytes | None:
        """A job's kept output bytes (``None``: none kept, or unreadable)."""
        if self._db is None:
            return None
        try:
            row = self._db.execute(
                "SELECT data FROM outputs WHERE job_id = ?", (job_id,)
            ).fetchone()
        except sqlite3.Error as exc:
            log.error("a job's output on disk is unreadable: %s", exc)
            return None
        return bytes(row[0]) if row is not None else None

    def _write(self, sql: str, args: tuple[object, ...]) -> bool:
        if self._db is None:
            return False
        try:
            with self._db:
                self._db.execute(sql, args)
        except sqlite3.Error as exc:
            self.write_errors += 1
            log.error("could not keep a job record on disk: %s", exc)
            return False
        return True

    def load(self, limit: int) -> list[JobRecord]:
        """The newest ``limit`` records, oldest first. A job that had not ended is failed
        (:data:`INTERRUPTED`) and written so; a row that does not decode is dropped."""
        if self._db is None:
            return []
        try:
            rows = self._db.execute(
                "SELECT job_id, submitted_ms, model, spec, status, reason, paid, output_hash,"
                " events, closed FROM jobs ORDER BY submitted_ms DESC LIMIT ?",
                (limit,),
            ).fetchall()
        except sqlite3.Error as exc:
            log.error("job records on disk are unreadable: %s", exc)
            return []
        records: list[JobRecord] = []
        for row in reversed(rows):
            try:
                record = _decode(*row)
            except (ValueError, TypeError, protocol.ProtocolError) as exc:
                log.warning("dropping an unreadable job record: %s", exc)
                self.forget([bytes(row[0])])
                continue
            if record.done is None:
                record.done = scheduler.JobDone(
                    record.job_id, scheduler.JobStatus.FAILED, INTERRUPTED, None, (), None
                )
                record.events.append((record.submitted_ms, "done", f"failed {INTERRUPTED}"))
                self.changed(record)
            records.append(record)
        return records


def _decode(
    job_id: bytes,
    submitted_ms: int,
    model: str,
    spec: bytes,
    status: str | None,
    reason: str,
    paid: bytes | None,
    output_hash: bytes | None,
    events: bytes | None,
    closed: int,
) -> JobRecord:
    decoded = protocol.decode_unsigned(bytes(spec), JobSpec)
    assert isinstance(decoded, JobSpec)
    record = JobRecord(bytes(job_id), decoded, int(submitted_ms), str(model))
    record.closed = bool(closed)
    record.output_hash = bytes(output_hash) if output_hash is not None else None
    if events is not None:
        record.events = [(int(t), str(e), str(d)) for t, e, d in protocol.unpack(bytes(events))]
    if status is not None:
        payouts = tuple(
            scheduler.Payout(bytes(p), int(a)) for p, a in protocol.unpack(bytes(paid or b"\x90"))
        )
        record.done = scheduler.JobDone(
            record.job_id, scheduler.JobStatus(status), str(reason), None, payouts, None
        )
    return record
