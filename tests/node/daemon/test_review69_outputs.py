"""Review round 69, R69-4 and R69-7: a verified, paid output was held in memory only, so a
restart lost it ("the job has no output (verified: ...)"), and 10,000 records could hold up
to 38 GiB of outputs. Outputs are now kept in the job journal, held in memory within a
budget, and read back from disk when asked for (after a restart too)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import trio

from node.api import HttpError, Request, make_router
from sandbox import tiny_model_path
from sandbox.testing import InProcessRunner

from ._cluster import cluster, tiny_inputs

TOKEN = "t" * 43


async def _result(node: object, job_id: bytes) -> tuple[int, bytes | str]:
    router = make_router(node, token=TOKEN)  # type: ignore[arg-type]
    headers = {"host": "127.0.0.1", "authorization": f"Bearer {TOKEN}"}
    request = Request("GET", f"/api/jobs/{job_id.hex()}/result", {}, headers, b"", 0)
    try:
        response = await router(request)
    except HttpError as exc:
        return exc.status, exc.message
    return response.status, response.body


async def test_a_verified_output_is_served_from_disk_after_memory_lets_it_go_and_a_restart(
    tmp_path: Path,
) -> None:
    with trio.fail_after(90):
        async with cluster(1, runner=lambda i: InProcessRunner(), state_root=tmp_path) as cl:
            node = cl.requester
            node.jobs.output_memory = 0  # every output let go from memory at once
            job_ids = []
            for _ in range(2):
                job_id = await node.submit_job(
                    tiny_model_path().read_bytes(), tiny_inputs(), redundancy=1
                )
                record = node.jobs[job_id]
                while record.done is None:
                    await record.changed.wait()
                job_ids.append(job_id)
            first = node.jobs[job_ids[0]]
            assert first.done is not None and first.done.status == "verified"
            assert first.outputs is None and first.output_on_disk and first.output_names == ("y",)
            status, body = await _result(node, job_ids[0])
            assert status == 200, body
            cl.kill(node)
            await cl.settle_blocks(1)
            node = await cl.restart(node)
            for job_id in job_ids:
                status, body = await _result(node, job_id)
                assert status == 200, body
                assert b'"y"' in body  # type: ignore[operator]


def test_outputs_held_in_memory_stay_within_their_budget() -> None:
    from node.daemon._jobs import JobRecord, JobRecords

    records = JobRecords(output_memory=3_000)
    spec = object()
    for i in range(5):
        record = JobRecord(bytes([i]) * 32, spec, i, "m")  # type: ignore[arg-type]
        record.output_on_disk = i != 1  # one of them could not be written: it stays
        records.add(record)
        records.hold_output(record, {"y": np.zeros(250, np.float32)}, 1_000)
    held = [r.outputs is not None for r in records.values()]
    assert held == [False, True, False, True, True]  # 3,000 bytes: the newest, and the unwritten


def test_outputs_kept_on_disk_stay_within_their_budget(tmp_path: Path) -> None:
    from node.daemon._job_journal import JobJournal

    journal = JobJournal(tmp_path / "jobs.sqlite3", output_disk=10_000)
    for i in range(8):
        assert journal.save_output(bytes([i]) * 32, bytes([i]) * 3_000)
    kept = [journal.load_output(bytes([i]) * 32) is not None for i in range(8)]
    assert kept == [False] * 5 + [True] * 3  # 9,000 bytes: the newest three
    journal.close()
    again = JobJournal(tmp_path / "jobs.sqlite3", output_disk=10_000)  # counted from disk
    again.save_output(b"\x09" * 32, b"\x09" * 3_000)
    assert [again.load_output(bytes([i]) * 32) is not None for i in (5, 6, 7, 9)] == [
        False,
        True,
        True,
        True,
    ]


def test_forgotten_records_outputs_leave_the_disk_count(tmp_path: Path) -> None:
    # Review round 73, F3: forgetting old records deleted their outputs but not their
    # bytes from the count, which drifted up to the cap and then deleted the outputs of
    # jobs still listed.
    from node.daemon._job_journal import JobJournal

    journal = JobJournal(tmp_path / "jobs.sqlite3", output_disk=10_000)
    for name in (b"A", b"B", b"C"):
        journal.save_output(name * 32, name * 3_000)
    journal.forget([b"A" * 32, b"B" * 32])
    for name in (b"D", b"E"):
        journal.save_output(name * 32, name * 3_000)
    assert [journal.load_output(n * 32) is not None for n in (b"C", b"D", b"E")] == [True] * 3
