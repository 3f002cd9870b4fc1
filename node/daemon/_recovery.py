"""What a node is still owed, or still owes, after a restart: its machines start empty.

- A provider with a Receipt can claim its pay if the requester never settles. The machine
  holds the receipt in memory only, so the daemon keeps each one on disk (``receipts/`` in
  the data directory, one small file per job, written atomically) from the machine's
  ``receipted`` notification until the work's ``closed``. After a restart the kept receipts
  are claimed by the daemon itself, in the claim window and after the job's deadline.
- A requester's open escrows of jobs it no longer knows (it restarted mid-job) are
  refunded at their expiry height; a provider with a receipt claims its share first.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import protocol
from protocol import Award, Receipt, Signed

log = logging.getLogger(__name__)

#: A kept receipt file is at most this large (two signed messages and a deadline).
MAX_FILE_BYTES = 8192


@dataclass(slots=True)
class KeptReceipt:
    """A receipt to claim with after a restart."""

    job_id: bytes
    award: Signed[Award]
    receipt: Signed[Receipt]
    deadline_ms: int
    claimed: bool = False


class ReceiptStore:
    """Receipts on disk, one file per job. ``directory=None`` keeps nothing (tests, or a
    node without a data directory)."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory

    def _path(self, job_id: bytes) -> Path:
        assert self.directory is not None
        return self.directory / f"{job_id.hex()}.receipt"

    def keep(self, award: Signed[Award], receipt: Signed[Receipt], deadline_ms: int) -> None:
        """Write atomically (temporary file, fsync, rename); failures are logged, never
        raised: the machine still holds the receipt while the daemon runs."""
        if self.directory is None:
            return
        job_id = award.message.job_id
        data = protocol.pack([award.raw, receipt.raw, deadline_ms])
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            tmp = self.directory / f".{job_id.hex()}.tmp"
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._path(job_id))
        except OSError as exc:
            log.warning("could not keep the receipt of job %s: %s", job_id.hex()[:12], exc)

    def drop(self, job_id: bytes) -> None:
        if self.directory is None:
            return
        try:
            self._path(job_id).unlink(missing_ok=True)
        except OSError as exc:
            log.warning("could not remove the receipt of job %s: %s", job_id.hex()[:12], exc)

    def load(self, chain_id: str, me: bytes) -> list[KeptReceipt]:
        """Every kept receipt that verifies (signatures, chain, it names us, award and
        receipt agree); a file that does not is renamed ``.bad`` and reported."""
        if self.directory is None or not self.directory.is_dir():
            return []
        kept: list[KeptReceipt] = []
        for path in sorted(self.directory.glob("*.receipt")):
            try:
                if path.stat().st_size > MAX_FILE_BYTES:
                    raise protocol.RemoteProtocolError("the file is too large")
                award_raw, receipt_raw, deadline = protocol.unpack(path.read_bytes())
                if type(award_raw) is not bytes or type(receipt_raw) is not bytes:
                    raise protocol.RemoteProtocolError("not two signed messages")
                if type(deadline) is not int:
                    raise protocol.RemoteProtocolError("no deadline")
                award = protocol.decode(award_raw, chain_id, Award)
                receipt = protocol.decode(receipt_raw, chain_id, Receipt)
                a, r = award.message, receipt.message
                if (
                    a.provider != me
                    or r.provider != me
                    or a.job_id != r.job_id
                    or a.replica != r.replica
                    or a.requester != r.requester
                    or path.name != f"{a.job_id.hex()}.receipt"
                ):
                    raise protocol.RemoteProtocolError("award and receipt do not match")
            except (OSError, ValueError, protocol.ProtocolError) as exc:
                log.warning("ignoring kept receipt %s: %s", path.name, exc)
                with contextlib.suppress(OSError):
                    path.rename(path.with_suffix(".bad"))
                continue
            kept.append(KeptReceipt(a.job_id, award, receipt, deadline))
        return kept
