"""``GET /api/config`` and ``PUT /api/config`` on a running contributor: values and
sources, validated changes written back to config.toml and taking effect at once (a
schedule that excludes now pauses the node, with the reason in ``/api/status``)."""

from __future__ import annotations

import datetime as dt
import tomllib
from pathlib import Path
from typing import Any

import httpx
import trio

from node.api import make_router, serve_http
from node.config import CONFIG_FILE
from sandbox.testing import InProcessRunner

from ..daemon._cluster import cluster

TOKEN = "t" * 43


async def test_settings_are_shown_changed_written_back_and_applied(tmp_path: Path) -> None:
    (tmp_path / CONFIG_FILE).write_text("[contributor]\nwarm_workers = 1\n")
    with trio.fail_after(30):
        async with cluster(1, runner=lambda i: InProcessRunner()) as cl, trio.open_nursery() as n:
            (node,) = cl.contributors
            assert node.provider is not None
            router = make_router(
                node,
                token=TOKEN,
                data_dir=tmp_path,
                config_sources={"contributor.warm_workers": "file", "chain_id": "flag"},
            )
            port = await n.start(serve_http, router, "127.0.0.1", 0)

            def api(method: str, path: str, **kw: Any) -> httpx.Response:
                with httpx.Client(
                    base_url=f"http://127.0.0.1:{port}",
                    timeout=10,
                    headers={"authorization": f"Bearer {TOKEN}"},
                ) as h:
                    return h.request(method, path, **kw)

            async def call(method: str, path: str, **kw: Any) -> httpx.Response:
                return await trio.to_thread.run_sync(lambda: api(method, path, **kw))

            shown = (await call("GET", "/api/config")).json()["settings"]
            assert shown["chain_id"] == {
                "value": "aimx-test",
                "source": "flag",
                "editable": False,
                "description": "the network (chain) to join",
            }
            assert shown["contributor.price_floor"]["source"] == "default"
            assert shown["contributor.price_floor"]["editable"] is True

            # a schedule that leaves out the current hour (UTC), and a new price floor
            hour = dt.datetime.now(dt.UTC).hour
            hours = f"{(hour + 2) % 24:02d}:00-{(hour + 3) % 24:02d}:00"
            change = {
                "contributor": {
                    "price_floor": 2500,
                    "availability": {"hours": hours, "time_zone": "UTC"},
                }
            }
            answer = await call("PUT", "/api/config", json=change)
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert body["settings"]["contributor.price_floor"] == {
                "value": 2500,
                "source": "file",
                "editable": True,
                "description": "lowest price per replica, micro-credits",
            }
            assert body["overridden_at_start"] == []
            assert node.provider.config.price_floor == 2500
            written = tomllib.loads((tmp_path / CONFIG_FILE).read_text())
            assert written == {
                "contributor": {
                    "warm_workers": 1,
                    "price_floor": 2500,
                    "availability": {"hours": hours, "time_zone": "UTC"},
                }
            }
            availability = (await call("GET", "/api/status")).json()["availability"]
            assert availability["state"] == "paused" and node.provider.draining
            assert availability["reason"] == f"outside the schedule (every day {hours} UTC)"
            assert availability["schedule"] == f"every day {hours} UTC"

            # back to always: available again
            answer = await call("PUT", "/api/config", json={"contributor.availability.hours": ""})
            assert answer.status_code == 200
            availability = (await call("GET", "/api/status")).json()["availability"]
            assert availability["paused"] is False and availability["schedule"] is None
            assert not node.provider.draining

            # refusals name the key and change nothing
            before = (tmp_path / CONFIG_FILE).read_text()
            for bad, key in (
                ({"contributor": {"price_floor": -5}}, "contributor.price_floor"),
                ({"contributor.on_pause": "explode"}, "contributor.on_pause"),
                ({"contributor.warm_workers": 4}, "contributor.warm_workers"),
                ({"chain_id": "other"}, "chain_id"),
            ):
                refused = await call("PUT", "/api/config", json=bad)
                assert refused.status_code == 400, refused.text
                assert refused.json()["error"].startswith(key + ":"), refused.json()
            assert (tmp_path / CONFIG_FILE).read_text() == before
            assert node.provider.config.price_floor == 2500
            wrong_type = await call(
                "PUT", "/api/config", content=b"{}", headers={"content-type": "text/plain"}
            )
            assert wrong_type.status_code == 415
            n.cancel_scope.cancel()
