"""Review round 59 (F2's rest): ``aimx job result --unverified`` printed an unverified
output with nothing saying so, and ``aimx job submit --wait`` exited 0 on one. The result
of an unverified job comes only with ``--unverified``, said on stderr; submit's exit status
for it is 3."""

from __future__ import annotations

from pathlib import Path

import trio

import scheduler
from node.cli.job import EXIT_UNVERIFIED

from ..api.test_unverified_result import _done
from ..daemon._cluster import cluster
from .test_jobs import aimx, serving, short


async def test_an_unverified_result_is_given_only_with_the_flag_and_said(tmp_path: Path) -> None:
    with trio.fail_after(40):
        async with cluster(0) as cl, serving(cl.requester, tmp_path):
            record = _done(b"u", scheduler.JobStatus.UNVERIFIED)
            cl.requester.jobs.add(record)
            d = ("--data-dir", str(tmp_path))
            job = record.job_id.hex()
            code, out = await trio.to_thread.run_sync(lambda: aimx("job", "result", job, *d))
            assert code == 1 and short(out) and "--unverified" in out, out
            code, out = await trio.to_thread.run_sync(
                lambda: aimx("job", "result", job, "--unverified", *d)
            )
            assert code == 0 and "unverified, not verified" in out and "[1.0, 2.0]" in out, out
    assert EXIT_UNVERIFIED == 3  # specs/daemon.md, README
