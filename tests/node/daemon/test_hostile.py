"""Daemons against hostile peers (issue 14): tens of thousands of random, malformed and
validly signed edge-case messages on every protocol and topic, while honest jobs run.
Every daemon stays alive, every ledger's invariants hold, the honest jobs are verified,
and a peer that keeps misbehaving is banned."""

from __future__ import annotations

import math
import time

import pytest
import trio
import trio.testing

import ledger
from node.daemon import Node
from node.testing import HostilePeer, HostileReport
from sandbox import tiny_model_path
from sandbox.testing import InProcessRunner

from ...keys import key
from ._cluster import CHAIN, Cluster, cluster, tiny_inputs

#: Shots in the first phase (bans off: every message reaches the handlers).
SHOTS = 20_000


async def _honest_job(cl: Cluster) -> None:
    job_id = await cl.requester.submit_job(tiny_model_path().read_bytes(), tiny_inputs())
    record = cl.requester.jobs[job_id]
    while not record.closed:
        await record.changed.wait()
    assert record.done is not None and record.done.status == "verified", record.events


async def _attack(cl: Cluster, name: str, seed: int, shots: int) -> HostileReport:
    classes = sorted(
        {c for n in cl.contributors if n.provider for c in n.provider.config.capability_classes}
    )
    async with cl.hub.open(key(name)) as net, trio.open_nursery() as nursery:
        peer = HostilePeer(
            net, key(name), CHAIN, seed=seed, capability_classes=classes, now_ms=cl.requester.now_ms
        )
        await nursery.start(peer.watch)
        report = await peer.attack([n.me for n in cl.nodes], shots, concurrency=64, timeout=1.0)
        nursery.cancel_scope.cancel()
    return report


def _check(cl: Cluster) -> None:
    for node in cl.nodes:
        assert cl.alive(node)
        ledger.check_invariants(node.ledger.state)
    heights = {n.ledger.state.height for n in cl.nodes}
    assert min(heights) > 0


async def test_hostile_peers_stop_no_daemon_and_honest_jobs_complete() -> None:
    started = time.monotonic()
    with trio.fail_after(150):
        async with cluster(2, runner=lambda i: InProcessRunner()) as cl:
            nodes: list[Node] = cl.nodes
            for node in nodes:
                node.conduct.ban_score = math.inf
            checked: list[int] = []

            async def check_every_block(node: Node) -> None:
                while True:
                    await node.ledger.wait_height(node.ledger.state.height + 1)
                    ledger.check_invariants(node.ledger.state)
                    checked.append(node.ledger.state.height)

            async with trio.open_nursery() as watchers:
                for node in nodes:
                    watchers.start_soon(check_every_block, node)
                await _phases(cl, nodes)
                watchers.cancel_scope.cancel()
            assert len(checked) > 10 * len(nodes), checked
    print(f"hostile: {len(checked)} heights checked, {time.monotonic() - started:.1f} s")


async def _phases(cl: Cluster, nodes: list[Node]) -> None:
    """Phase 1: bans off, so that every shot reaches the handlers, while an honest job
    runs. Phase 2: bans on; a second stranger is banned by the nodes it hits, and another
    honest job is verified."""
    reports: list[HostileReport] = []

    async def attack() -> None:
        reports.append(await _attack(cl, "hostile-1", 14, SHOTS))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(attack)
        await _honest_job(cl)
    report = reports[0]
    assert report.sent == SHOTS and report.requests > SHOTS // 2, report
    assert report.by_kind["signed"] > SHOTS // 4, report
    _check(cl)
    assert sum(n.metrics.bad_messages._value.get() for n in nodes) > SHOTS // 4
    for node in nodes:
        node.conduct.ban_score = 100.0
    second = await _attack(cl, "hostile-2", 15, 2_000)
    hit = [n for n in nodes if n.net.is_banned(key("hostile-2").verify_key.encode())]
    assert hit, second
    assert all(n.metrics.peers_banned._value.get() >= 1 for n in hit)
    assert all(n.net.counters.refused_banned > 0 for n in hit), second
    await _honest_job(cl)
    await cl.settle_blocks(2)
    _check(cl)
    print(f"hostile: {report}")


async def test_a_job_spec_with_absurd_times_and_a_failing_machine_stop_no_daemon() -> None:
    """Attack 2: a JobSpec whose bid would expire past 2^64-1, on the job topic and in a
    market request, made ``Bid()`` raise inside the provider, outside any guard. Now the
    provider refuses it; and any exception a machine raises on a peer's message is a
    logged driver error counted against the peer, never the end of the node."""
    import contextlib
    import dataclasses

    import protocol
    import scheduler
    from node.daemon.market import MARKET_PROTOCOL
    from node.net import RemoteError, job_topic
    from protocol._examples import example_messages

    mallory = key("mallory")
    with trio.fail_after(60):
        async with cluster(1, runner=lambda i: InProcessRunner()) as cl:
            contributor = cl.contributors[0]
            assert contributor.provider is not None
            cls = contributor.provider.config.capability_classes[0]
            template = next(m for m in example_messages() if isinstance(m, protocol.JobSpec))
            now = contributor.now_ms()
            spec = dataclasses.replace(
                template,
                requester=bytes(mallory.verify_key),
                requirements=dataclasses.replace(template.requirements, capability_class=cls),
                max_price=10**9,
                bid_window_ms=(1 << 64) - 1 - now - 1,
                deadline_ms=(1 << 64) - 1,
            )
            raw = protocol.sign(spec, mallory, CHAIN).raw
            async with cl.hub.open(mallory) as net:
                await net.publish(job_topic(CHAIN, cls), raw)
                await net.request(contributor.me, MARKET_PROTOCOL, protocol.pack([raw, b""]))

                # a machine that fails on a message: the guard keeps the node up
                def broken(data: bytes, now_ms: int) -> list[scheduler.Effect]:
                    raise RuntimeError("a bug that peer data found")

                contributor.provider.receive = broken  # type: ignore[method-assign]
                before = contributor.conduct.counts.get(
                    protocol.peer_id(bytes(mallory.verify_key)), 0
                )
                with contextlib.suppress(RemoteError):
                    await net.request(contributor.me, MARKET_PROTOCOL, protocol.pack([raw, b""]))
                await net.publish(job_topic(CHAIN, cls), raw)
                await cl.settle_blocks(2)
                after = contributor.conduct.counts[protocol.peer_id(bytes(mallory.verify_key))]
                assert after >= before + 2
                del contributor.provider.receive  # the machine's own method again
            assert cl.alive(contributor)
            await _honest_job(cl)  # and it still serves


def test_tensor_shapes_numpy_cannot_hold_are_malformed_not_raised() -> None:
    """A requester's input (its hash is the requester's to choose) with an empty body and
    dimensions past numpy's limit raised ValueError in the contributor's run task."""
    import protocol
    from node.daemon._codec import outputs_from_bytes, tensor_from_bytes

    for shape in ([1 << 63, 0], [(1 << 64) - 1, (1 << 64) - 1, 0], [1 << 62, 4, 0]):
        wire = ["<f4", shape, b""]
        with pytest.raises(protocol.ProtocolError):
            tensor_from_bytes(protocol.pack(wire))
        with pytest.raises(protocol.ProtocolError):
            outputs_from_bytes(protocol.pack([["y", *wire]]))


async def test_conduct_bans_past_the_threshold_with_decay_and_spares_coordinators(
    autojump_clock: trio.testing.MockClock,
) -> None:
    from node.daemon._conduct import BAN_SECONDS, Conduct
    from node.daemon._metrics import NodeMetrics

    bans: list[tuple[bytes, float]] = []
    coordinator, stranger, slow = (bytes(key(n).verify_key) for n in ("c", "s", "slow"))
    metrics = NodeMetrics()
    conduct = Conduct(metrics, ban=lambda p, s: bans.append((p, s)), protected=(coordinator,))
    for _ in range(50):
        conduct.misbehaved(coordinator, "bad block")
    assert bans == [] and conduct.counts[protocol_id(coordinator)] == 50
    for _ in range(9):
        conduct.misbehaved(stranger, "garbage")
    assert bans == []
    conduct.misbehaved(stranger, "garbage")
    assert bans == [(stranger, BAN_SECONDS)]
    assert metrics.peers_banned._value.get() == 1
    # one offence every 10 s never adds up
    for _ in range(30):
        conduct.misbehaved(slow, "a timeout")
        await trio.sleep(10)
    assert len(bans) == 1


def protocol_id(peer: bytes) -> str:
    import protocol

    return protocol.peer_id(peer)
