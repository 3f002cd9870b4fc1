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
#: Bytes of verified outputs held in memory in all: past it, the oldest kept on disk are
#: read from there when asked for (10,000 records of 4 MiB outputs were up to 38 GiB,
#: review round 69, R69-7).
MAX_OUTPUT_MEMORY = 256 << 20


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
    #: The verified output's names, and whether its bytes are kept on disk (the job
    #: journal: read from there when ``outputs`` is not held in memory).
    output_names: tuple[str, ...] = ()
    output_on_disk: bool = False
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

    def __init__(
        self, limit: int = MAX_JOB_RECORDS, output_memory: int = MAX_OUTPUT_MEMORY
    ) -> None:
        super().__init__()
        self.limit = limit
        self.output_memory = output_memory
        #: Records holding their outputs in memory (oldest first), with their sizes.
        self._held: dict[bytes, int] = {}
        self._held_bytes = 0
        #: Told the ids of the records dropped past ``limit``.
        self.on_forget: list[Callable[[list[bytes]], None]] = []

    def hold_output(self, record: JobRecord, outputs: dict[str, Array], size: int) -> None:
        """``record``'s verified ``outputs`` (``size`` bytes) are held in memory, within
        ``output_memory`` in all: past it, the oldest held that are kept on disk are let go
        (read from disk when asked for)."""
        record.outputs = outputs
        record.output_names = tuple(sorted(outputs))
        self._held_bytes += size - self._held.pop(record.job_id, 0)
        self._held[record.job_id] = size
        for job_id in list(self._held):
            if self._held_bytes <= self.output_memory:
                break
            held = self.get(job_id)
            if held is None or held.output_on_disk:
                self._held_bytes -= self._held.pop(job_id)
                if held is not None:
                    held.outputs = None
        # Those no disk keeps (the journal cannot be written) go too past twice the
        # budget, the oldest first: they are lost (round 73).
        for job_id in list(self._held):
            if self._held_bytes <= 2 * self.output_memory:
                break
            held = self.get(job_id)
            self._held_bytes -= self._held.pop(job_id)
            if held is not None:
                held.outputs = None

    def add(self, record: JobRecord) -> None:
        self[record.job_id] = record
        if len(self) > self.limit:
            old = [j for j, r in self.items() if r.closed][: len(self) // 10]
            for job_id in old:
                del self[job_id]
                self._held_bytes -= self._held.pop(job_id, 0)
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
