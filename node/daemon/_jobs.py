"""What the node remembers of the jobs submitted on it, as its API shows them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import trio

import scheduler
from protocol import JobSpec

from ._codec import Array
from ._errors import JobNotFound

#: Jobs the API remembers (the oldest closed ones are forgotten beyond this).
MAX_JOB_RECORDS = 10_000


@dataclass(slots=True)
class JobRecord:
    """A job submitted on this node: its spec, what happened to it, its verified output."""

    job_id: bytes
    spec: JobSpec
    submitted_ms: int
    model_name: str
    events: list[tuple[int, str, str]] = field(default_factory=list)
    done: scheduler.JobDone | None = None
    closed: bool = False
    outputs: dict[str, Array] | None = None
    changed: trio.Event = field(default_factory=trio.Event)
    #: The verified output's hash of a record read back after a restart (its ``done``
    #: keeps no output).
    output_hash: bytes | None = None
    #: Read back after a restart: the requester machine no longer knows the job.
    restored: bool = False

    def touch(self) -> None:
        """Wake whoever waits for this job to change (the API's long polls)."""
        self.changed.set()
        self.changed = trio.Event()


class JobRecords(dict[bytes, JobRecord]):
    """The job records by id, bounded: past ``limit`` the oldest closed ones go (a tenth
    of them at a time)."""

    def __init__(self, limit: int = MAX_JOB_RECORDS) -> None:
        super().__init__()
        self.limit = limit
        #: Told the ids of the records dropped past ``limit``.
        self.on_forget: list[Callable[[list[bytes]], None]] = []

    def add(self, record: JobRecord) -> None:
        self[record.job_id] = record
        if len(self) > self.limit:
            old = [j for j, r in self.items() if r.closed][: len(self) // 10]
            for job_id in old:
                del self[job_id]
            for callback in self.on_forget:
                callback(old)

    def find(self, job_id_hex: str) -> JobRecord:
        """The job whose id is ``job_id_hex`` or starts with it (a unique prefix of at least
        4 hex digits, as ``aimx job list`` shows them); :class:`JobNotFound` otherwise."""
        text = job_id_hex.strip().lower()
        if len(text) < 4 or len(text) > 64 or any(c not in "0123456789abcdef" for c in text):
            raise JobNotFound(
                f"{job_id_hex!r} is not a job id: give its 64 hex digits or a unique prefix of "
                "at least 4 (see `aimx job list`)"
            )
        if len(text) == 64:
            record = self.get(bytes.fromhex(text))
            matches = [record] if record is not None else []
        else:
            matches = [r for j, r in self.items() if j.hex().startswith(text)]
        if not matches:
            raise JobNotFound(f"no job {text} on this node; see `aimx job list`")
        if len(matches) > 1:
            raise JobNotFound(
                f"{text} is the start of {len(matches)} job ids; give more digits "
                "(see `aimx job list`)"
            )
        return matches[0]
