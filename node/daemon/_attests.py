"""A requester's attestations waiting for their job's escrow to close, kept on disk.

The ledger takes an attestation only about a party the escrow paid, once it is closed, so
the requester holds each one (with its evidence: the signed Results a slash report
carries) from its verdict until then. Held in memory only, a restart forgot them: the
providers it paid got no attestation for the job, and a provider it outvoted was never
reported for a slash (review round 61, R61-4). They are kept in ``attests.sqlite3`` in the
data directory from the ``Attest`` effect until the job's escrow closes, and read back as
the daemon starts."""

from __future__ import annotations

import logging
from pathlib import Path

import protocol
import scheduler
from protocol import Result

from .._sqlite import SmallStore

log = logging.getLogger(__name__)

#: The file of a requester's attestations waiting for their escrow, in its data directory.
ATTESTS_FILE = "attests.sqlite3"

_SCHEMA = """CREATE TABLE IF NOT EXISTS attests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id BLOB NOT NULL,
    subject BLOB NOT NULL,
    positive INTEGER NOT NULL,
    reason TEXT NOT NULL,
    report INTEGER NOT NULL,
    evidence BLOB NOT NULL
)"""


class AttestStore(SmallStore):
    """Attestations in SQLite (``path`` ``None``: in memory only)."""

    WHAT = "an attestation"

    def __init__(self, path: Path | None) -> None:
        super().__init__(path, _SCHEMA)

    def save(self, effect: scheduler.Attest) -> None:
        evidence = protocol.pack([e.raw for e in effect.evidence])
        row = (
            effect.job_id,
            effect.subject,
            int(effect.positive),
            effect.reason,
            int(effect.report),
            evidence,
        )
        self._write(
            "INSERT INTO attests (job_id, subject, positive, reason, report, evidence)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            row,
        )

    def drop(self, job_id: bytes) -> None:
        self._write("DELETE FROM attests WHERE job_id = ?", (job_id,))

    def load(self, chain_id: str) -> list[scheduler.Attest]:
        """The kept attestations, oldest first; a row that does not decode (a damaged
        file) is dropped with a warning."""
        kept: list[scheduler.Attest] = []
        rows = self._db.execute(
            "SELECT id, job_id, subject, positive, reason, report, evidence FROM attests"
            " ORDER BY id"
        ).fetchall()
        for row_id, job_id, subject, positive, reason, report, evidence in rows:
            try:
                raws = protocol.unpack(bytes(evidence))
                if type(raws) is not list or not all(type(r) is bytes for r in raws):
                    raise protocol.RemoteProtocolError("evidence is not a list of messages")
                results = tuple(protocol.decode(r, chain_id, Result) for r in raws)
                kept.append(
                    scheduler.Attest(
                        bytes(job_id),
                        bytes(subject),
                        bool(positive),
                        str(reason),
                        results,
                        bool(report),
                    )
                )
            except (ValueError, TypeError, protocol.ProtocolError) as exc:
                log.warning("dropping a kept attestation that does not decode: %s", exc)
                self._write("DELETE FROM attests WHERE id = ?", (row_id,))
        return kept
