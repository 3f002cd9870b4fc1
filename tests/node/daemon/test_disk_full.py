"""A full disk is reported and survived (issue 15, specs/daemon.md "Disk full").

A requester and a contributor keep their ledgers on a small tmpfs of their own; a filler
file takes its last byte. Both keep running: their ledgers stay at their last good height,
``fault`` says ``disk full: <path>: ...`` (``/api/status`` too), the contributor bids on
nothing and the requester's API answers a new job with 503. The filler goes: the next
block write succeeds, the fault clears, both catch up with the coordinator, and a job runs
to a verified result."""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

import ledger
from node.api import make_router, serve_http
from node.config import ContributorConfig, CoordinatorConfig, NodeConfig, RequesterConfig
from node.daemon import JobSubmitError, Node, ProviderProfile
from node.ledger import StoreThread
from node.net import MemoryHub
from node.testing import chaos
from sandbox import determinism_class, tiny_model_path
from sandbox.testing import InProcessRunner

from ...keys import key
from ...tmpfs import tmpfs
from ..cli.test_jobs import aimx, serving
from ._cluster import tiny_inputs

CHAIN = "aimx-test"
BLOCK_MS = 100
TOKEN = "t" * 43


fill = chaos.fill


async def fault_is(node: Node, cleared: bool) -> None:
    """Wait until ``node``'s fault is set (or cleared)."""
    store = node.ledger_store
    assert store is not None
    changed = trio.Event()
    store.on_fault.append(lambda fault: changed.set())
    try:
        while (node.fault is None) != cleared:
            await changed.wait()
            changed = trio.Event()
    finally:
        store.on_fault.pop()


@contextlib.asynccontextmanager
async def three_nodes(
    disk: Path, on_disk: tuple[str, ...] = ("requester", "contributor")
) -> AsyncIterator[tuple[Node, Node, Node]]:
    """A coordinator, a requester and a contributor; those named in ``on_disk`` keep their
    ledger in ``disk/<role>/ledger.sqlite3``."""
    hub = MemoryHub(CHAIN, rng=random.Random(1))
    ckey, rkey, pkey = key(1), key(2), key(10)
    genesis = ledger.make_genesis(
        CHAIN, [bytes(ckey.verify_key)], {bytes(rkey.verify_key): 1_000_000_000}
    )
    coordinator_cfg = CoordinatorConfig(block_interval_ms=BLOCK_MS)
    profile = ProviderProfile(
        determinism_class=determinism_class("onnx", "cpu", "extended"), memory_mb=4096
    )
    stores: list[StoreThread] = []

    def store_at(name: str) -> StoreThread | None:
        if name not in on_disk:
            return None
        path = disk / name / "ledger.sqlite3"
        store = StoreThread(lambda: ledger.LedgerStore.open(path, genesis))
        stores.append(store)
        return store

    try:
        async with (
            hub.open(ckey) as cnet,
            hub.open(rkey) as rnet,
            hub.open(pkey) as pnet,
            trio.open_nursery() as nursery,
        ):
            coord = Node(
                ckey,
                NodeConfig(chain_id=CHAIN, roles=("coordinator",), coordinator=coordinator_cfg),
                cnet,
                genesis,
                store=store_at("coordinator"),
            )
            await nursery.start(coord.run)
            req = Node(
                rkey,
                NodeConfig(
                    chain_id=CHAIN,
                    roles=("requester",),
                    coordinator=coordinator_cfg,
                    requester=RequesterConfig(deadline_ms=20_000, bid_window_ms=150),
                ),
                rnet,
                genesis,
                store=store_at("requester"),
            )
            await nursery.start(req.run)
            contributor = Node(
                pkey,
                NodeConfig(
                    chain_id=CHAIN,
                    roles=("contributor",),
                    coordinator=coordinator_cfg,
                    contributor=ContributorConfig(price_floor=1_000, base_run_ms=200),
                ),
                pnet,
                genesis,
                store=store_at("contributor"),
                runner=InProcessRunner(),
                profile=profile,
            )
            await nursery.start(contributor.run)
            try:
                yield coord, req, contributor
            finally:
                nursery.cancel_scope.cancel()
    finally:
        for store in stores:
            store.close()


async def test_a_full_disk_stops_new_work_and_space_coming_back_resumes_it(
    tmp_path: Path,
) -> None:
    with tmpfs(tmp_path / "disk", "3m") as disk, trio.fail_after(90):
        async with three_nodes(disk) as (coord, req, contributor), trio.open_nursery() as n:
            port = await n.start(serve_http, make_router(req, token=TOKEN), "127.0.0.1", 0)

            def api(method: str, path: str, **kw: Any) -> httpx.Response:
                with httpx.Client(
                    base_url=f"http://127.0.0.1:{port}",
                    timeout=10,
                    headers={"authorization": f"Bearer {TOKEN}"},
                ) as h:
                    return h.request(method, path, **kw)

            await contributor.ledger.wait_height(3)
            await req.ledger.wait_height(3)
            assert req.fault is None and contributor.fault is None

            filler = disk / "filler"
            await trio.to_thread.run_sync(fill, filler)
            with trio.fail_after(60):
                await fault_is(contributor, cleared=False)
                await fault_is(req, cleared=False)

            for node, name in ((req, "requester"), (contributor, "contributor")):
                fault = node.fault
                assert fault is not None
                assert fault.startswith(f"disk full: {disk / name / 'ledger.sqlite3'}: "), fault
                assert "database or disk is full" in fault
            assert contributor.provider is not None and contributor.provider.draining
            # the coordinator goes on; the faulted ledgers stay at their last good height
            stuck = contributor.ledger_store.state.height  # type: ignore[union-attr]
            await coord.ledger.wait_height(stuck + 10)
            assert contributor.ledger.state.height == stuck
            assert contributor.fault is not None

            status = await trio.to_thread.run_sync(api, "GET", "/api/status")
            assert status.status_code == 200
            assert status.json()["fault"] == req.fault
            refused = await trio.to_thread.run_sync(
                lambda: api("POST", "/api/jobs", json={"model": "", "inputs": {}})
            )
            assert refused.status_code == 503
            assert "disk full" in refused.text and "resumes by itself" in refused.text
            with pytest.raises(JobSubmitError, match="disk full"):
                await req.submit_job(tiny_model_path().read_bytes(), tiny_inputs())
            # aimx node status shows it
            cli_dir = tmp_path / "cli"
            cli_dir.mkdir()
            async with serving(contributor, cli_dir):
                d = ("--data-dir", str(cli_dir))
                code, out = await trio.to_thread.run_sync(lambda: aimx("node", "status", *d))
            assert code == 0, out
            assert "fault" in out and "disk full: " in out and "no new work" in out, out

            filler.unlink()
            await fault_is(contributor, cleared=True)
            await fault_is(req, cleared=True)
            assert not contributor.provider.draining
            target = coord.ledger.state.height
            await contributor.ledger.wait_height(target)
            await req.ledger.wait_height(target)
            status = await trio.to_thread.run_sync(api, "GET", "/api/status")
            assert status.json()["fault"] is None

            # new work again: the contributor bids and the job is verified
            job_id = await req.submit_job(tiny_model_path().read_bytes(), tiny_inputs())
            record = req.jobs.get(job_id)
            assert record is not None
            while record.done is None:
                await record.changed.wait()
            assert record.done.status == "verified", record.done
            n.cancel_scope.cancel()
        for store in (req.ledger_store, contributor.ledger_store):
            assert store is not None
        with ledger.LedgerStore.open(disk / "contributor" / "ledger.sqlite3") as store:
            ledger.verify_chain(store)


async def test_a_coordinator_with_a_full_disk_keeps_its_block_until_it_is_written(
    tmp_path: Path,
) -> None:
    """Its own block is never announced unwritten (a restart would make another block at
    that height): production waits, the same block is written once space returns."""
    with tmpfs(tmp_path / "disk", "3m") as disk, trio.fail_after(60):
        async with three_nodes(disk, on_disk=("coordinator",)) as (coord, req, _):
            await req.ledger.wait_height(3)
            filler = disk / "filler"
            await trio.to_thread.run_sync(fill, filler)
            await fault_is(coord, cleared=False)
            assert coord.fault is not None and coord.fault.startswith("disk full: "), coord.fault
            stored = coord.ledger_store.state.height  # type: ignore[union-attr]
            assert coord.ledger.state.height == stored
            # nothing past the stored height reaches the others while the fault lasts
            for _ in range(20):
                await trio.sleep(BLOCK_MS / 1000)
                assert req.ledger.state.height <= stored
            filler.unlink()
            await fault_is(coord, cleared=True)
            await req.ledger.wait_height(stored + 3)
            assert coord.ledger.state.height >= stored + 3
        with ledger.LedgerStore.open(disk / "coordinator" / "ledger.sqlite3") as store:
            assert store.height >= stored + 3
            ledger.verify_chain(store)
