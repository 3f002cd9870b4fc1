"""Review round 59 (F2's rest): ``aimx job result --unverified`` printed an unverified
output with nothing saying so, and ``aimx job submit --wait`` exited 0 on one. The result
of an unverified job comes only with ``--unverified``, said on stderr; submit's exit status
for it is 3."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio

import scheduler
from node.cli.job import EXIT_UNVERIFIED
from sandbox import tiny_model_path

from ..api.test_unverified_result import _done
from ..daemon._cluster import cluster, tiny_inputs
from .test_jobs import aimx, serving, short


async def test_an_unverified_result_is_given_only_with_the_flag_and_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (name, x), *_ = tiny_inputs().items()
    np.save(tmp_path / "x.npy", x)
    with trio.fail_after(40):
        async with cluster(0) as cl, serving(cl.requester, tmp_path):
            record = _done(b"u", scheduler.JobStatus.UNVERIFIED)

            async def submit_job(*args: Any, **kwargs: Any) -> bytes:  # it ends unverified
                cl.requester.jobs.add(record)
                return record.job_id

            monkeypatch.setattr(cl.requester, "submit_job", submit_job)
            d = ("--data-dir", str(tmp_path))
            model, given = str(tiny_model_path()), f"{name}={tmp_path / 'x.npy'}"
            code, out = await trio.to_thread.run_sync(
                lambda: aimx("job", "submit", model, "--input", given, "--wait", *d)
            )
            # the tree before: 0, as for a verified job; the output shown under its status
            assert code == EXIT_UNVERIFIED == 3 and "unverified" in out and "[1.0, 2.0]" in out
            job = record.job_id.hex()
            code, out = await trio.to_thread.run_sync(lambda: aimx("job", "result", job, *d))
            assert code == 1 and short(out) and "--unverified" in out, out
            code, out = await trio.to_thread.run_sync(
                lambda: aimx("job", "result", job, "--unverified", *d)
            )
            assert code == 0 and "unverified, not verified" in out and "[1.0, 2.0]" in out, out
