"""The dashboard (specs/dashboard.md): its login, its access rules, its live snapshots and
its controls, over the real HTTP server and an in-process cluster; its parts alone."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import trio

import protocol
import scheduler
from node.api import load_or_create_token, make_router, serve_http
from node.api._activity import CHART_POINTS, DAY_MS, Activity, EarningsBook
from node.api.dashboard import MAX_LISTENERS, login_url
from sandbox import tiny_model_path
from sandbox.testing import InProcessRunner

from ...keys import key
from ..daemon._cluster import CHAIN, cluster, tiny_inputs

TOKEN = "d" * 43

# --- the parts ------------------------------------------------------------------------


def test_gpus_as_nvml_reports_them_and_no_gpu_without_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # This machine has no NVIDIA driver: NVML's answers are given here (the calls the
    # dashboard makes, with an H200's values); without them the reason is shown.
    import sys
    from types import SimpleNamespace

    from node.api._hardware import Hardware

    fake = SimpleNamespace(
        NVML_TEMPERATURE_GPU=0,
        nvmlInit=lambda: None,
        nvmlDeviceGetCount=lambda: 1,
        nvmlDeviceGetHandleByIndex=lambda i: f"gpu{i}",
        nvmlDeviceGetName=lambda h: b"NVIDIA H200",
        nvmlDeviceGetUtilizationRates=lambda h: SimpleNamespace(gpu=87),
        nvmlDeviceGetMemoryInfo=lambda h: SimpleNamespace(used=3 << 30, total=141 << 30),
        nvmlDeviceGetTemperature=lambda h, sensor: 64,
    )
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    sample = Hardware().sample()
    assert sample["gpus"] == [
        {
            "index": 0,
            "name": "NVIDIA H200",
            "use_percent": 87,
            "memory_used": 3 << 30,
            "memory_total": 141 << 30,
            "temperature_c": 64,
        }
    ]
    assert sample["gpu_reason"] is None

    def no_driver() -> None:
        raise OSError("NVML Shared Library Not Found")

    monkeypatch.setitem(sys.modules, "pynvml", SimpleNamespace(nvmlInit=no_driver))
    sample = Hardware().sample()
    assert sample["gpus"] == [] and "NVML Shared Library Not Found" in sample["gpu_reason"]
    assert 0 <= sample["cpu_percent"] <= 100 and sample["memory_total"] > 0


def test_earnings_today_week_all_time_and_a_bounded_chart() -> None:
    now = 1_800_000_000_000
    midnight = now - 5 * 3_600_000
    book = EarningsBook([(now - 30 * DAY_MS, 7), (now - 3 * DAY_MS, 5)])
    for i in range(1000):
        book.add(now - 4 * 3_600_000 + i, 1)
    summary = book.summary(now, midnight)
    assert (summary["today"], summary["week"], summary["all"]) == (1000, 1005, 1012)
    chart = summary["chart"]
    assert len(chart) <= CHART_POINTS + 1
    assert chart[-1] == [now // 1000, 1012]
    assert [p[1] for p in chart] == sorted(p[1] for p in chart)  # cumulative


def test_the_earnings_book_stays_bounded_however_many_payments() -> None:
    # A payment every 5 s for 20 days: one entry each grew without end (about 3 KB a
    # second at 20 jobs a second). Minute buckets for 8 days, day buckets before.
    start = 1_800_000_000_000  # a minute's start, and a UTC day's
    book = EarningsBook()
    paid_at = [start + 5_000 * i for i in range(20 * 17_280)]
    for t in paid_at:
        book.add(t, 2)
    now = paid_at[-1]
    assert book.total == 2 * len(paid_at)
    assert len(book.entries) <= 8 * 1_440 + 21
    assert [t for t, _ in book.entries] == sorted({t for t, _ in book.entries})
    for since in (now - 5 * 3_600_000, now - 7 * DAY_MS, now - 60_000):
        start_min = since - since % 60_000  # the book counts whole minutes
        assert book.since(start_min) == 2 * sum(1 for t in paid_at if t >= start_min)
    summary = book.summary(now, now - now % DAY_MS)
    assert summary["all"] == book.total and summary["chart"][-1][1] == book.total
    # the same payments read back in one go give the same buckets
    assert EarningsBook((t, 2) for t in paid_at).entries == book.entries


def _award(job: bytes, price: int = 3_000) -> protocol.Signed[protocol.Award]:
    req, me = key(2), key(3)
    award = protocol.Award(
        job_id=job,
        requester=bytes(req.verify_key),
        provider=bytes(me.verify_key),
        replica=0,
        price=price,
        deadline_ms=10_000_000,
        bid_hash=bytes(32),
    )
    return protocol.sign(award, req, CHAIN)


def _result(job: bytes, outcome: str, message: str = "") -> protocol.Signed[protocol.Result]:
    me = key(3)
    result = protocol.Result(
        job_id=job,
        provider=bytes(me.verify_key),
        replica=0,
        outcome=outcome,
        message=message,
        output_commitment=bytes(32),
        output_hash=bytes(32),
        output_size=0,
        key_hash=bytes(32),
        determinism_class="onnx.cpu.extended",
        usage=protocol.Usage(cpu_ms=1, wall_ms=1, peak_memory_kb=0, gpu_ms=0),
        finished_ms=1,
    )
    return protocol.sign(result, me, CHAIN)


def test_activity_follows_a_run_to_its_pay_or_its_failure() -> None:
    clock = [1_000_000]
    paid: list[tuple[int, int, bytes]] = []
    activity = Activity(
        clock=lambda: clock[0], on_paid=lambda at, amount, job: paid.append((at, amount, job))
    )
    good, bad = b"g" * 32, b"b" * 32
    for job in (good, bad):
        activity.observe("provider", scheduler.RunJob(job=cast(Any, None), award=_award(job)))
    activity.observe("requester", scheduler.NotifyUser(good, scheduler.UserEvent.PAID, "9"))
    assert set(activity.running) == {good, bad} and not paid  # another machine's: ignored
    clock[0] += 1_500
    assert activity.running[good].view(clock[0])["duration_ms"] == 1_500
    deliver = scheduler.Deliver(bytes(32), _result(bad, "runtime_error", "CUDA out of memory"), b"")
    activity.observe("provider", deliver)
    activity.observe("provider", scheduler.Deliver(bytes(32), _result(good, "ok"), b""))
    clock[0] += 500
    activity.observe("provider", scheduler.NotifyUser(bad, scheduler.UserEvent.CLOSED, "run ended"))
    activity.observe("provider", scheduler.NotifyUser(good, scheduler.UserEvent.PAID, "3000"))
    activity.observe("provider", scheduler.NotifyUser(good, scheduler.UserEvent.CLOSED, "paid"))
    views = [e.view(clock[0]) for e in activity.recent]
    assert [(v["outcome"], v["paid"], v["duration_ms"]) for v in views] == [
        ("paid", 3_000, 1_500),
        ("failed", 0, 1_500),
    ]
    assert views[1]["reason"] == "runtime_error: CUDA out of memory"
    assert activity.running == {}
    assert paid == [(clock[0], 3_000, good)] and activity.book.total == 3_000


# --- over HTTP, against a cluster -----------------------------------------------------


@contextlib.contextmanager
def _login(base: str) -> Iterator[httpx.Client]:
    """A client that sends what the page sends: this run's dashboard token (the login
    link's fragment, asked of the API as ``aimx node dashboard`` does) as a Bearer token."""
    with httpx.Client(base_url=base, timeout=20) as api:
        answer = api.get("/api/dashboard/token", headers={"authorization": f"Bearer {TOKEN}"})
        assert answer.status_code == 200, answer.text
    link = login_url(base, answer.json()["token"])
    token = link.partition("#token=")[2]
    headers = {"authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, timeout=20, headers=headers) as client:
        yield client


def _events(client: httpx.Client, wanted: Any, limit: int = 60) -> dict[str, Any]:
    """The first snapshot from the event stream for which ``wanted`` holds."""
    with client.stream("GET", "/dashboard/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        for line in response.iter_lines():
            if line.startswith("data: {") and line != "data: {}":
                snap = json.loads(line[len("data: ") :])
                if wanted(snap):
                    return cast(dict[str, Any], snap)
                limit -= 1
                if limit == 0:
                    break
    raise AssertionError("no such snapshot came")


async def test_login_token_access_rules_and_static_files(tmp_path: Path) -> None:
    with trio.fail_after(40):
        async with cluster(1, runner=lambda i: InProcessRunner()) as cl, trio.open_nursery() as n:
            router = make_router(cl.contributors[0], token=TOKEN)
            port = await n.start(serve_http, router, "127.0.0.1", 0)
            base = f"http://127.0.0.1:{port}"

            def check() -> None:
                with httpx.Client(base_url=base, timeout=20) as anon:
                    # the page and its files hold nothing of the node's; its data does
                    page = anon.get("/dashboard/")
                    assert page.status_code == 200 and "aimx node dashboard" in page.text
                    assert anon.get("/dashboard/static/app.js").status_code == 200
                    assert anon.get("/dashboard/events").status_code == 401
                    assert anon.get("/dashboard/snapshot").status_code == 401
                    wrong = anon.get("/dashboard/login?token=" + "e" * 43)
                    assert wrong.status_code == 410 and "set-cookie" not in wrong.headers
                    forged = {"authorization": "Bearer " + "x" * 43}
                    assert anon.get("/dashboard/snapshot", headers=forged).status_code == 401
                with _login(base) as c:
                    page = c.get("/dashboard/")
                    assert page.status_code == 200 and "<title>AIMatrix node" in page.text
                    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
                    js = c.get("/dashboard/static/app.js")
                    assert js.status_code == 200 and "/dashboard/events" in js.text
                    lib = c.get("/dashboard/static/vendor/uPlot.iife.min.js")
                    assert lib.text.startswith("/*! uPlot v1.6.32") and "MIT" in lib.text[:200]
                    for bad in ("../routes.py", "vendor/../../routes.py", ".hidden.js", "x.py"):
                        assert c.get("/dashboard/static/" + bad).status_code == 404, bad
                    # Host and Origin rules hold for the dashboard too
                    evil_host = c.get("/dashboard/", headers={"host": "evil.example"})
                    assert evil_host.status_code == 421
                    evil = {"origin": "http://evil.example", "content-type": "application/json"}
                    assert (
                        c.post("/dashboard/api/pause", headers=evil, content=b"{}").status_code
                        == 403
                    )
                    # a form post (no preflight) is refused; the JSON API keeps its token
                    form = c.post("/dashboard/api/pause", data={"reason": "x"})
                    assert form.status_code == 415
                    assert c.get("/api/status").status_code == 401
                    assert c.get("/dashboard/api/jobs").status_code == 404  # not forwarded
                    # a closed stream frees its slot at once: more streams, one after
                    # another, than may be open together
                    for _ in range(MAX_LISTENERS + 2):
                        snap = _events(c, lambda s: True)
                        assert snap["status"]["peer_id"] == cl.contributors[0].peer_id

            await trio.to_thread.run_sync(check)
            n.cancel_scope.cancel()


async def test_live_numbers_change_as_a_job_completes_and_pause_stops_bidding(
    tmp_path: Path,
) -> None:
    with trio.fail_after(60):
        async with cluster(1, runner=lambda i: InProcessRunner()) as cl, trio.open_nursery() as n:
            contributor = cl.contributors[0]
            router = make_router(contributor, token=TOKEN, data_dir=tmp_path)
            port = await n.start(serve_http, router, "127.0.0.1", 0)
            rport = await n.start(
                serve_http, make_router(cl.requester, token=TOKEN), "127.0.0.1", 0
            )
            base, rbase = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{rport}"
            model, inputs = tiny_model_path().read_bytes(), tiny_inputs()

            async def submit() -> bytes:
                job = await cl.requester.submit_job(model, inputs)
                record = cl.requester.jobs[job]
                while not record.closed:
                    await record.changed.wait()
                return job

            def first() -> dict[str, Any]:
                with _login(base) as c:
                    return _events(c, lambda s: "provider" in s)

            before = await trio.to_thread.run_sync(first)
            assert before["state"]["state"] in ("idle", "working")
            assert before["provider"]["earnings"]["all"] == 0
            assert before["provider"]["recent"] == []
            assert before["hardware"]["cpus"] >= 1
            assert before["hardware"]["gpus"] or before["hardware"]["gpu_reason"]
            job = await submit()

            def after() -> dict[str, Any]:
                with _login(base) as c:
                    return _events(c, lambda s: s["provider"]["earnings"]["all"] > 0)

            snap = await trio.to_thread.run_sync(after)
            (done,) = snap["provider"]["recent"]
            assert done["job_id"] == job.hex() and done["outcome"] == "paid"
            assert done["paid"] == snap["provider"]["earnings"]["today"] > 0
            assert done["duration_ms"] > 0
            kept = (tmp_path / "earnings.jsonl").read_text().splitlines()
            assert [json.loads(line)["amount"] for line in kept] == [done["paid"]]

            def requester_view() -> dict[str, Any]:
                with _login(rbase) as c:
                    return c.get("/dashboard/snapshot").json()  # type: ignore[no-any-return]

            rsnap = await trio.to_thread.run_sync(requester_view)
            (rjob,) = rsnap["requester"]["jobs"]
            assert rjob["status"] == "verified" and rjob["bids"] >= 1
            assert rsnap["requester"]["spend"] == done["paid"]

            def pause() -> dict[str, Any]:
                with _login(base) as c:
                    answer = c.post("/dashboard/api/pause", json={"reason": "gaming"})
                    assert answer.status_code == 200, answer.text
                    return _events(c, lambda s: s["state"]["state"] == "paused")

            paused = await trio.to_thread.run_sync(pause)
            assert "gaming" in (paused["state"]["reason"] or "")
            assert contributor.provider is not None and contributor.provider.draining
            # a job announced now gets no bid from the paused node: a NoBid shutting_down
            provider = contributor.provider
            later = await cl.requester.submit_job(model, inputs)
            with trio.fail_after(10):
                while not any(s.job_id == later for s in provider.history):
                    await trio.sleep(0.05)
            assert [s.outcome for s in provider.history if s.job_id == later] == ["shutting_down"]
            assert later not in provider.work

            def resume() -> None:
                with _login(base) as c:
                    assert c.post("/dashboard/api/resume", json={}).status_code == 200

            await trio.to_thread.run_sync(resume)
            assert not contributor.provider.draining
            n.cancel_scope.cancel()


async def test_the_command_prints_a_login_link_that_works(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from node._runinfo import RunInfo, write_runinfo
    from node.cli import app
    from node.daemon._run import data_dir_lock

    data_dir = tmp_path / "node"
    data_dir.mkdir(mode=0o700)
    token = load_or_create_token(data_dir)
    with trio.fail_after(40):
        async with cluster(0) as cl, trio.open_nursery() as n:
            port = await n.start(serve_http, make_router(cl.requester, token=token), "127.0.0.1", 0)
            url = f"http://127.0.0.1:{port}"
            info = RunInfo(
                pid=__import__("os").getpid(),
                peer_id=cl.requester.peer_id,
                roles=("requester",),
                addresses=(),
                api_url=url,
                chain_id=CHAIN,
                started_ms=0,
                genesis_hash="00" * 32,
            )
            write_runinfo(data_dir, info)

            def command() -> None:
                out = CliRunner().invoke(
                    app, ["node", "dashboard", "--data-dir", str(data_dir), "--json"]
                )
                assert out.exit_code == 0, out.output
                link = json.loads(out.stdout)["url"]
                assert link.startswith(f"{url}/dashboard/#token=") and token not in link
                dashboard_token = link.partition("#token=")[2]
                bearer = {"authorization": f"Bearer {dashboard_token}"}
                with httpx.Client(base_url=url, timeout=20, headers=bearer) as browser:
                    assert browser.get("/dashboard/").status_code == 200
                    snap = browser.get("/dashboard/snapshot")
                    assert snap.status_code == 200, snap.text
                # no daemon: a two-line error, exit 1
                gone = CliRunner().invoke(
                    app, ["node", "dashboard", "--data-dir", str(tmp_path / "none"), "--no-open"]
                )
                assert gone.exit_code == 1

            with data_dir_lock(data_dir):  # held as a daemon holds it (the CLI checks)
                await trio.to_thread.run_sync(command)
            n.cancel_scope.cancel()
