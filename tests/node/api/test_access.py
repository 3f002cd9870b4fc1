"""The local API is for its owner only (specs/api.md, "Access"): attacks from a web page
in a browser on the same machine, over the real HTTP server.

A page can send "simple" cross-site requests (a form or ``text/plain`` POST, no
preflight, no custom header) and, by rebinding its DNS name to 127.0.0.1, read the
answers of same-origin requests that carry its own name as ``Host``. Neither gets past
the token, ``Host``, ``Origin`` and content-type rules, each checked here on its own.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, cast

import httpx
import nacl.signing
import numpy as np
import pytest
import trio

import ledger
import protocol
from node.api import make_router, serve_http
from node.api.npy import encode_array
from node.config import CoordinatorConfig, NodeConfig, RequesterConfig, faucet_enabled

if TYPE_CHECKING:
    from node.daemon import Node

TOKEN = "A" * 20 + "-_" + "z" * 21
AUTH = {"authorization": f"Bearer {TOKEN}"}
JSON = {"content-type": "application/json"}
ME = nacl.signing.SigningKey(b"\x01" * 32)
STRANGER = protocol.peer_id(bytes(nacl.signing.SigningKey(b"\x02" * 32).verify_key))


class FakeNode:
    """What the faucet, balance and submit routes use of a daemon's ``Node``; it counts
    mints and submissions instead of making them, on a clock the test sets."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.roles = frozenset(config.roles)
        self.chain_id = config.chain_id
        self.me = bytes(ME.verify_key)
        genesis = ledger.make_genesis(config.chain_id, [self.me], {self.me: 5_000_000})
        self.ledger = SimpleNamespace(state=ledger.State.from_genesis(genesis))
        self.minted: list[tuple[bytes, int]] = []
        self.submitted: list[dict[str, Any]] = []
        self.clock_ms = 1_800_000_000_000
        self.fault: str | None = None  # a full disk's error, say (none here)

    def now_ms(self) -> int:
        return self.clock_ms

    def faucet(self, account: bytes, amount: int) -> None:
        self.minted.append((account, amount))

    async def submit_job(self, model: bytes, inputs: Any, **kw: Any) -> bytes:
        self.submitted.append(kw)
        return b"\x01" * 32


def devnet_coordinator(**coordinator: Any) -> FakeNode:
    return FakeNode(
        NodeConfig(
            chain_id="aimx-devnet",
            roles=("coordinator",),
            coordinator=CoordinatorConfig(**coordinator),
        )
    )


@asynccontextmanager
async def serving(node: FakeNode) -> AsyncIterator[int]:
    async with trio.open_nursery() as nursery:
        router = make_router(cast("Node", node), token=TOKEN)
        yield await nursery.start(serve_http, router, "127.0.0.1", 0)
        nursery.cancel_scope.cancel()


async def call(port: int, method: str, path: str, **kw: Any) -> httpx.Response:
    def go() -> httpx.Response:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            return client.request(method, path, **kw)

    return await trio.to_thread.run_sync(go)


def faucet_body(account: str = STRANGER, amount: int = 10**12) -> bytes:
    return json.dumps({"account": account, "amount": amount}).encode()


async def test_a_cross_site_post_to_the_faucet_mints_nothing() -> None:
    node = devnet_coordinator()
    async with serving(node) as port:
        # As a browser sends a page's form or fetch(): text/plain, its Origin, no token.
        attack = {"content-type": "text/plain;charset=UTF-8", "origin": "http://evil.example"}
        for _ in range(5):
            r = await call(port, "POST", "/api/faucet", content=faucet_body(), headers=attack)
            assert r.status_code in (401, 403, 415)
        # Each rule refuses on its own, everything else being right.
        own = f"http://127.0.0.1:{port}"
        one_wrong = [
            (403, {**AUTH, **JSON, "origin": "http://evil.example"}),
            (403, {**AUTH, **JSON, "origin": f"http://evil.example:{port}"}),
            (403, {**AUTH, **JSON, "origin": "null"}),
            (415, {**AUTH, "content-type": "text/plain", "origin": own}),
            (415, {**AUTH, "content-type": "application/x-www-form-urlencoded"}),
            (415, {**AUTH, "content-type": "multipart/form-data; boundary=x"}),
            (415, AUTH),
            (401, {**JSON, "origin": own}),
            (401, {**JSON, "authorization": "Bearer " + "B" * 43}),
            (401, {**JSON, "authorization": TOKEN}),
            (401, {**JSON, "authorization": f"Basic {TOKEN}"}),
            (401, {**JSON, "authorization": f"Bearer {TOKEN[:-1]}"}),
        ]
        for status, headers in one_wrong:
            r = await call(port, "POST", "/api/faucet", content=faucet_body(), headers=headers)
            assert (r.status_code, headers) == (status, headers)
            assert "error" in r.json()
        assert node.minted == []
        r = await call(port, "POST", "/api/faucet", content=faucet_body(), headers={**JSON})
        assert r.headers["www-authenticate"] == "Bearer"
        assert "api.token" in r.json()["error"]
        # The owner, from a page of the node itself or from a program, is served.
        headers = {**AUTH, "content-type": "Application/JSON; charset=utf-8", "origin": own}
        r = await call(port, "POST", "/api/faucet", content=faucet_body(), headers=headers)
        assert r.status_code == 202, r.text
        assert node.minted == [(protocol.public_key_of(STRANGER), 10**12)]


async def test_a_dns_rebinding_page_reads_nothing() -> None:
    node = devnet_coordinator()
    async with serving(node) as port:
        for host in (
            f"evil.example:{port}",
            "evil.example",
            f"localhost.evil.example:{port}",
            f"127.0.0.1.evil.example:{port}",
            f"127.0.0.1:{port + 1}",
            f"[::1]:{port}x",
            "",
        ):
            # even with the token (a rebinding page has none)
            r = await call(port, "GET", "/api/ledger/balance", headers={**AUTH, "host": host})
            assert r.status_code == 421, host
            assert "balance" not in r.text
        for host in (f"127.0.0.1:{port}", f"LOCALHOST:{port}", f"[::1]:{port}", "localhost"):
            r = await call(port, "GET", "/api/ledger/balance", headers={**AUTH, "host": host})
            assert r.status_code == 200, host
            assert r.json()["balance"] == 5_000_000


async def test_every_path_needs_the_token() -> None:
    async with serving(devnet_coordinator()) as port:
        for method, path in [
            ("GET", "/api/status"),
            ("GET", "/api/jobs"),
            ("GET", "/metrics"),
            ("GET", "/nowhere"),
            ("POST", "/api/stake"),
        ]:
            r = await call(port, method, path, headers=JSON)
            assert r.status_code == 401, path


async def test_the_faucet_runs_only_on_a_devnet_unless_configured() -> None:
    assert faucet_enabled(NodeConfig(chain_id="aimx-devnet"))
    assert faucet_enabled(NodeConfig(chain_id="aimx-devnet-7"))
    assert not faucet_enabled(NodeConfig(chain_id="aimx-devnetwork"))
    assert not faucet_enabled(NodeConfig(chain_id="aimx-main"))
    on = CoordinatorConfig(faucet=True)
    off = CoordinatorConfig(faucet=False)
    assert faucet_enabled(NodeConfig(chain_id="aimx-main", coordinator=on))
    assert not faucet_enabled(NodeConfig(chain_id="aimx-devnet", coordinator=off))
    node = FakeNode(NodeConfig(chain_id="aimx-main", roles=("coordinator",)))
    async with serving(node) as port:
        r = await call(port, "POST", "/api/faucet", content=faucet_body(), headers={**AUTH, **JSON})
        assert r.status_code == 403 and "coordinator.faucet" in r.json()["error"]
    assert node.minted == []


async def test_the_faucet_is_rate_limited_on_the_node_clock() -> None:
    node = devnet_coordinator(faucet_per_minute=3, faucet_account_per_minute=2)
    other = protocol.peer_id(bytes(nacl.signing.SigningKey(b"\x03" * 32).verify_key))
    third = protocol.peer_id(bytes(nacl.signing.SigningKey(b"\x04" * 32).verify_key))
    headers = {**AUTH, **JSON}

    async def mint(account: str) -> int:
        r = await call(
            port, "POST", "/api/faucet", content=faucet_body(account, 1), headers=headers
        )
        if r.status_code == 429:
            assert "faucet_per_minute" in r.json()["error"]
            assert int(r.headers["retry-after"]) >= 1
        return r.status_code

    async with serving(node) as port:
        assert [await mint(STRANGER) for _ in range(3)] == [202, 202, 429]  # per account
        assert [await mint(other), await mint(third)] == [202, 429]  # per node
        node.clock_ms += 30_000  # half a minute: 1.5 mints for the node, 1 per account
        assert [await mint(STRANGER), await mint(STRANGER)] == [202, 429]
        node.clock_ms -= 3_600_000  # a clock going back refills nothing
        assert await mint(other) == 429
    assert len(node.minted) == 4


async def test_max_price_is_bounded_by_the_configuration() -> None:
    def requester(**settings: Any) -> FakeNode:
        config = NodeConfig(roles=("requester",), requester=RequesterConfig(**settings))
        return FakeNode(config)

    job = {"model": "AAAA", "inputs": {"x": encode_array(np.ones(2, np.float32))}}
    headers = {**AUTH, **JSON}
    node = requester(max_price_limit=50_000)
    async with serving(node) as port:
        for price in (50_001, 2**63):
            body = json.dumps({**job, "max_price": price}).encode()
            r = await call(port, "POST", "/api/jobs", content=body, headers=headers)
            assert r.status_code == 400
            assert "requester.max_price_limit" in r.json()["error"]
        assert node.submitted == []
        # a limit below the default max_price lowers the default with it (round 69)
        r = await call(port, "POST", "/api/jobs", content=json.dumps(job).encode(), headers=headers)
        assert r.status_code == 201, r.text
        body = json.dumps({**job, "max_price": 50_000}).encode()
        r = await call(port, "POST", "/api/jobs", content=body, headers=headers)
        assert r.status_code == 201, r.text
        assert [s["max_price"] for s in node.submitted] == [None, 50_000]  # None: the default
    # a default the node would refuse to use is refused as a setting
    with pytest.raises(ValueError, match="max_price 60000 is over max_price_limit 50000"):
        RequesterConfig(max_price=60_000, max_price_limit=50_000)
