"""Review round 63, G1: a contributor answers every job announcement with a Bid or NoBid
sent to the key the announcement names, each a spawned request of its own, bounded by
nothing: from fresh keys, thousands at once, each (over libp2p) a DHT lookup and relay
dials at the coordinators, and the node's own lookups waited seconds. Sends of our own are
bounded now, a NoBid never dials, and a peer that could not be reached is not dialled
again for a while."""

from __future__ import annotations

import contextlib
import random
from typing import Any

import nacl.signing
import trio

import ledger
import protocol
from node.config import ContributorConfig, CoordinatorConfig, NodeConfig
from node.daemon import Node, ProviderProfile, run_classes
from node.daemon.market import (
    MARKET_PROTOCOL,
    MAX_ANSWERS_PER_PEER,
    MAX_DIALING_ANSWERS,
    MAX_DIALING_ANSWERS_PER_PEER,
    MAX_RESENDS,
)
from node.net import MemoryHub, job_topic
from protocol import JobSpec, Requirements, VerificationPolicy, sign
from sandbox import determinism_class
from sandbox.testing import FailingRunner
from scheduler._provider_bids import MAX_UNFUNDED_BIDS

from ...keys import key

CHAIN = "aimx-test"


def _announcement(signer: nacl.signing.SigningKey, now: int, klass: str, n: int) -> bytes:
    spec = JobSpec(
        requester=bytes(signer.verify_key),
        nonce=n.to_bytes(16, "big"),
        runtime="onnx",
        model_hash=protocol.content_hash(b"m"),
        model_size=1,
        inputs=(),
        requirements=Requirements("cpu", "CPUExecutionProvider", 0, klass),
        graph_opt_level="extended",
        threads=1,
        max_price=1_000,
        redundancy=1,
        max_retries=0,
        verification=VerificationPolicy("exact", 0, 0, 0),
        created_ms=now,
        bid_window_ms=1_000,
        deadline_ms=now + 60_000,
        escrow_expiry_height=500,
    )
    return sign(spec, signer, CHAIN).raw


async def test_announcements_from_many_keys_make_bounded_sends() -> None:
    hub = MemoryHub(CHAIN, rng=random.Random(1))
    coordinator, contributor, attacker = key("r63-c"), key("r63-p"), key("r63-a")
    genesis = ledger.make_genesis(CHAIN, [bytes(coordinator.verify_key)], {})
    profile = ProviderProfile(
        determinism_class=determinism_class("onnx", "cpu", "extended"),
        determinism_classes=run_classes(("onnx",), ("CPUExecutionProvider",)),
        memory_mb=4096,
    )
    config = NodeConfig(
        chain_id=CHAIN,
        roles=("contributor",),
        coordinator=CoordinatorConfig(block_interval_ms=100),
        contributor=ContributorConfig(),
    )
    # requester keys on the network whose market handler takes a request and never answers
    silent = [key(f"r63-silent-{i}") for i in range(8)]
    counts = {"dialing": 0, "most_dialing": 0, "to_unconnected": 0}
    with trio.fail_after(60):
        async with trio.open_nursery() as outer, contextlib.AsyncExitStack() as stack:
            pnet = await stack.enter_async_context(hub.open(contributor))
            anet = await stack.enter_async_context(hub.open(attacker))
            snets = [await stack.enter_async_context(hub.open(k)) for k in silent]
            node = Node(
                contributor,
                config,
                pnet,
                genesis,
                runner=FailingRunner(),
                profile=profile,
                rng=random.Random(1),
            )
            await outer.start(node.run)
            klass = node.probed.classes()[0]
            request = pnet.request

            async def counting(peer: bytes, protocol_id: str, data: bytes, **kw: Any) -> bytes:
                dialing = peer not in pnet.connected_peers()
                counts["to_unconnected"] += dialing
                counts["dialing"] += dialing
                counts["most_dialing"] = max(counts["most_dialing"], counts["dialing"])
                try:
                    return await request(peer, protocol_id, data, **kw)
                finally:
                    counts["dialing"] -= dialing

            pnet.request = counting  # type: ignore[method-assign]

            async def never(peer: bytes, request: bytes) -> bytes:
                await trio.sleep(3600)
                return b""

            for snet in snets:
                snet.set_handler(MARKET_PROTOCOL, never, max_request_bytes=1 << 16)
            topic = job_topic(CHAIN, klass)
            anet.subscribe(topic)
            await trio.sleep(0.3)
            # on the topic: 400 announcements naming the silent keys
            for n in range(400):
                await anet.publish(topic, _announcement(silent[n % 8], node.now_ms(), klass, n))
                if n % 20 == 19:
                    await trio.sleep(0.05)
            # directly: 400 more, each from a fresh key not on the network
            for n in range(400):
                fresh = key(f"r63-fresh-{n}")
                frame = protocol.pack([_announcement(fresh, node.now_ms(), klass, n), b""])
                await anet.request(bytes(contributor.verify_key), MARKET_PROTOCOL, frame)
            await trio.sleep(0.5)
            # the tree before: every announcement one send, 800 at once, none ever ended
            assert counts["most_dialing"] <= MAX_DIALING_ANSWERS
            assert node.market.sending <= MAX_ANSWERS_PER_PEER * 8 + MAX_DIALING_ANSWERS
            # a NoBid never dials: only Bids did, at most the unfunded bids a provider makes
            assert counts["to_unconnected"] <= MAX_UNFUNDED_BIDS + MAX_DIALING_ANSWERS_PER_PEER * 8
            assert node.conduct.score(bytes(attacker.verify_key)) == 0  # it broke no rule
            # Messages about work in hand have a budget of their own: with the answers'
            # full of silent keys, a Heartbeat to a requester still goes (round 65, H1).
            got: list[bytes] = []

            async def taking(peer: bytes, request: bytes) -> bytes:
                got.append(request)
                return b""

            honest = key("r63-honest")
            hnet = await stack.enter_async_context(hub.open(honest))
            hnet.set_handler(MARKET_PROTOCOL, taking, max_request_bytes=1 << 16)
            beat = protocol.Heartbeat(b"\x01" * 32, bytes(contributor.verify_key), 0, 0, 1)
            raw = sign(beat, contributor, CHAIN).raw
            for _ in range(4):
                node.market.send(bytes(honest.verify_key), raw)
            while len(got) < 4:
                await trio.sleep(0.01)
            # A provider's resends of Results nobody receipts have a budget of their own
            # too: silent requesters' held every place of the work budget, and the
            # Heartbeats of honest work were dropped (round 71, F1).
            result = sign(beat, contributor, CHAIN).raw  # (any signed message will do)
            for n in range(200):
                node.market.deliver(bytes(silent[n % 8].verify_key), result, b"", resend=True)
            await trio.sleep(0.1)
            assert node.market._resends.count <= MAX_RESENDS
            assert node.market._work.count == 0
            for _ in range(4):
                node.market.send(bytes(honest.verify_key), raw)
            while len(got) < 8:
                await trio.sleep(0.01)
            outer.cancel_scope.cancel()
