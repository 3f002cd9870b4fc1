"""The job records on disk (``jobs.sqlite3``): what the API shows comes back after a
restart; a job that was running is failed with the reason; damage is dropped, not fatal."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import scheduler
from node.daemon._job_journal import INTERRUPTED, JobJournal
from node.daemon._jobs import JobRecord, JobRecords

from ...ledger.helpers import ALICE, job_spec


def _record(label: bytes, at: int) -> JobRecord:
    signed = job_spec(ALICE, label)
    return JobRecord(signed.id, signed.message, at, f"model-{label.decode()}")


def test_records_come_back_as_the_api_showed_them(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    journal = JobJournal(path)
    done, running = _record(b"a", 1), _record(b"b", 2)
    for record in (done, running):
        journal.submitted(record)
    output = scheduler.Output(b"out", b"c" * 32, "exact")
    done.done = scheduler.JobDone(
        done.job_id,
        scheduler.JobStatus.VERIFIED,
        "2 of 2 results agree",
        output,
        (scheduler.Payout(b"p" * 32, 125),),
        None,
    )
    done.events.append((5, scheduler.UserEvent.LOCKED, "the escrow is in a block"))
    done.closed = True
    journal.changed(done)
    journal.close()

    again = JobJournal(path)
    restored = {r.job_id: r for r in again.load(10)}
    first = restored[done.job_id]
    assert first.done is not None and first.done.status == "verified"
    assert first.done.paid == (scheduler.Payout(b"p" * 32, 125),)
    assert first.output_hash == output.hash and first.closed
    assert first.events == [(5, "locked", "the escrow is in a block")]
    assert first.spec == done.spec and first.model_name == "model-a"
    second = restored[running.job_id]
    assert second.done is not None and second.done.status == "failed"
    assert second.done.reason == INTERRUPTED and not second.closed
    again.close()
    # the interruption was written: a third start says the same
    assert JobJournal(path).load(10)[1].done.reason == INTERRUPTED  # type: ignore[union-attr]


def test_a_damaged_row_is_dropped_and_the_rest_load(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    journal = JobJournal(path)
    good = _record(b"good", 1)
    journal.submitted(good)
    with sqlite3.connect(path) as conn:
        conn.execute(
            "INSERT INTO jobs (job_id, submitted_ms, model, spec) VALUES (?, 2, 'm', ?)",
            (b"x" * 32, b"\xc1 not a spec"),
        )
    loaded = journal.load(10)
    assert [r.job_id for r in loaded] == [good.job_id]
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM jobs").fetchone() == (1,)


def test_records_forgotten_past_the_limit_leave_the_disk_too(tmp_path: Path) -> None:
    journal = JobJournal(tmp_path / "jobs.sqlite3")
    records = JobRecords(limit=10)
    records.on_forget.append(journal.forget)
    for i in range(11):
        record = _record(f"r{i}".encode(), i)
        record.closed = True
        records.add(record)
        journal.submitted(record)
    assert len(records) == 10
    assert len(journal.load(100)) == 10


def test_an_unwritable_journal_never_stops_the_node(tmp_path: Path) -> None:
    (tmp_path / "jobs.sqlite3").mkdir()  # not a file: nothing can be kept
    journal = JobJournal(tmp_path / "jobs.sqlite3")
    record = _record(b"a", 1)
    journal.submitted(record)
    journal.changed(record)
    assert journal.load(10) == []
