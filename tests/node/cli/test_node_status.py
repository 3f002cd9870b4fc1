"""``aimx node status`` on a paid contributor shows what it earned, also after the escrow
closed and its open work forgot the job (issue 18)."""

from __future__ import annotations

import json
from pathlib import Path

import trio

from sandbox import tiny_model_path

from ..daemon._cluster import cluster, tiny_inputs
from .test_jobs import aimx, serving


async def test_a_paid_contributor_shows_its_earnings(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with cluster(1) as cl, serving(cl.contributors[0], tmp_path):
            contributor = cl.contributors[0]
            job_id = await cl.requester.submit_job(tiny_model_path().read_bytes(), tiny_inputs())
            record = cl.requester.jobs[job_id]
            while not record.closed:
                await record.changed.wait()
            assert record.done is not None
            paid = sum(p.amount for p in record.done.paid if p.provider == contributor.me)
            assert paid > 0
            while contributor.earned < paid:
                await cl.settle_blocks(1)
            assert contributor.earned == paid
            assert contributor.provider is not None
            contributor.provider.work.clear()  # what the machine forgets once a job closes

            d = ("--data-dir", str(tmp_path))
            code, out = await trio.to_thread.run_sync(lambda: aimx("node", "status", "--json", *d))
            assert code == 0, out
            assert json.loads(out)["provider"]["earned"] == paid
            code, out = await trio.to_thread.run_sync(lambda: aimx("node", "status", *d))
            assert code == 0 and f"│ earned       │ {paid / 1e6:.6f} credits" in out, out
            assert "│ reachability │ direct" in out, out  # in-memory nodes are public
