"""What the node remembers of the jobs submitted on it, as its API shows them."""

from __future__ import annotations

from dataclasses import dataclass, field

import trio

import scheduler
from protocol import JobSpec

from ._codec import Array

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

    def add(self, record: JobRecord) -> None:
        self[record.job_id] = record
        if len(self) > self.limit:
            for old in [j for j, r in self.items() if r.closed][: len(self) // 10]:
                del self[old]
