"""Round 31, G1, G2 and G4: py-libp2p's pubsub took whatever one RPC carried. It started
a task per message and three per new subscription, each start walking every task of the
service (one RPC of 6,000 empty messages froze a coordinator 14.5 s; 2,500 subscribe and
unsubscribe pairs, 25 s); it answered an IWANT with every message it named, repeats
included (one naming a cached 200 KB message 6,000 times built 1.2 GB); and it cached and
forwarded messages over our size limit. RPCs are bounded on arrival, a task's parent is
found without a walk, and IWANT answers are bounded."""

from __future__ import annotations

from typing import Any

import trio
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V12, GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.tools.anyio_service import background_trio_service
from libp2p.tools.anyio_service.api import Service
from libp2p.tools.anyio_service.trio_tasks import FunctionTask

from node.net import _libp2p_gossip, _libp2p_tuning
from node.net._libp2p_tuning import (
    IWANT_RETRANSMISSIONS,
    MAX_IWANT_BYTES,
    MAX_RPC_GOSSIP_IDS,
    MAX_RPC_MESSAGES,
    MAX_RPC_SUBSCRIPTIONS,
    RUNNING_TASKS,
    bounded_rpc,
)
from node.net._limits import MAX_PUBSUB_BYTES

from ...keys import key


def _rpc(messages: int = 0, subscriptions: int = 0, size: int = 0) -> Any:
    rpc = rpc_pb2.RPC()
    for _ in range(messages):
        rpc.publish.add(topicIDs=["aimx/test/ledger/blocks"], data=b"x" * size)
    for i in range(subscriptions):
        rpc.subscriptions.add(subscribe=i % 2 == 0, topicid="aimx/test/ledger/blocks")
    return rpc


def test_an_rpc_of_too_many_messages_or_subscriptions_is_dropped_whole() -> None:
    assert bounded_rpc(_rpc(messages=MAX_RPC_MESSAGES))
    assert not bounded_rpc(_rpc(messages=MAX_RPC_MESSAGES + 1))
    assert bounded_rpc(_rpc(subscriptions=MAX_RPC_SUBSCRIPTIONS))
    assert not bounded_rpc(_rpc(subscriptions=MAX_RPC_SUBSCRIPTIONS + 1))


def test_an_oversized_message_is_dropped_before_it_is_cached_and_the_rest_kept() -> None:
    rpc = _rpc(messages=2)
    rpc.publish.add(topicIDs=["aimx/test/ledger/blocks"], data=b"x" * (MAX_PUBSUB_BYTES + 1))
    assert bounded_rpc(rpc)
    assert len(rpc.publish) == 2


def test_gossip_id_lists_past_their_bound_are_ignored() -> None:
    rpc = rpc_pb2.RPC()
    rpc.control.ihave.add(topicID="t", messageIDs=[b"\x00"] * (MAX_RPC_GOSSIP_IDS + 1))
    rpc.control.iwant.add(messageIDs=[b"\x00"] * MAX_RPC_GOSSIP_IDS)
    assert bounded_rpc(rpc)
    assert len(rpc.control.ihave) == 0 and len(rpc.control.iwant) == 1


async def test_a_tasks_parent_is_found_without_walking_the_services_tasks(
    monkeypatch: Any,
) -> None:
    _libp2p_tuning.install()
    walks: list[int] = []
    walk = FunctionTask.iterate_tasks.__func__  # type: ignore[attr-defined]
    monkeypatch.setattr(
        FunctionTask, "iterate_tasks", classmethod(lambda cls, *t: walks.append(1) or walk(cls, *t))
    )
    children: list[Any] = []

    class Spawner(Service):
        async def run(self) -> None:
            self.manager.run_task(self.parent)
            await trio.sleep_forever()

        async def parent(self) -> None:
            for _ in range(200):
                self.manager.run_task(trio.sleep, 0)
            children.append(trio.lowlevel.current_task())
            await trio.sleep(0.1)

    service = Spawner()
    with trio.fail_after(10):
        async with background_trio_service(service) as manager:
            await trio.sleep(0.05)
            root = next(iter(manager._root_tasks))  # type: ignore[attr-defined]
            assert len(root.children) == 1  # the 200 hung under their parent, as before
            manager.cancel()
    assert children and walks == []
    # Round 32, T1: a task's entry leaves when it ends (a weak-keyed map whose value held
    # its key kept every task and its arguments, each pubsub message, for good)
    assert not any(t in RUNNING_TASKS for t in children)


def _gossip_with_cached(count: int, size: int) -> tuple[Any, list[Any], list[bytes]]:
    gossipsub = GossipSub(protocols=[PROTOCOL_ID_V12], degree=6, degree_low=4, degree_high=12)
    sent: list[Any] = []
    gossipsub.send_rpc = lambda peer, packet: sent.append((peer, packet))  # type: ignore[method-assign]
    gossipsub.pubsub = object()  # type: ignore[assignment]
    ids = []
    for i in range(count):
        msg = rpc_pb2.Message(from_id=b"\x02" * 38, seqno=i.to_bytes(8, "big"), data=b"y" * size)
        msg.topicIDs.append("t")
        gossipsub.mcache.put(msg)
        ids.append(msg.from_id + msg.seqno)
    return gossipsub, sent, ids


def _peer(n: int) -> ID:
    return ID(b"\x00\x24\x08\x01\x12\x20" + bytes(key(n).verify_key))


async def test_an_iwant_naming_one_message_many_times_gets_it_at_most_thrice() -> None:
    _libp2p_tuning.install()
    gossipsub, sent, (raw,) = _gossip_with_cached(1, 1000)
    wire = [raw, raw.hex().encode()]  # one id, two ways
    for _ in range(IWANT_RETRANSMISSIONS + 2):
        await gossipsub.handle_iwant(rpc_pb2.ControlIWant(messageIDs=wire * 2_500), _peer(71))
    assert [len(packet.publish) for _, packet in sent] == [1] * IWANT_RETRANSMISSIONS


async def test_an_iwant_answer_is_bounded_in_bytes_and_made_up_ids_count_nothing() -> None:
    # Round 32, R2: 64 distinct cached 256 KiB messages were one 16 MiB answer, and
    # made-up ids filled the retransmission counts until they were cleared.
    _libp2p_tuning.install()
    gossipsub, sent, ids = _gossip_with_cached(64, 250_000)
    peer = _peer(72)
    made_up = [i.to_bytes(46, "big") for i in range(500)]  # cached nowhere
    await gossipsub.handle_iwant(rpc_pb2.ControlIWant(messageIDs=made_up + ids), peer)
    ((_, packet),) = sent
    assert 0 < packet.ByteSize() <= MAX_IWANT_BYTES + 4096


async def test_a_full_retransmission_table_forgets_the_largest_holder_only(
    monkeypatch: Any,
) -> None:
    # Round 33: the table was cleared whole when full of cached ids, so fresh peers naming
    # many cached messages gave every other peer three more answers of its large ones.
    _libp2p_tuning.install()
    monkeypatch.setattr(_libp2p_tuning, "MAX_IWANT_COUNTED", 64)
    gossipsub, sent, ids = _gossip_with_cached(64, 100)
    honest, flooders = _peer(80), [_peer(81), _peer(82)]
    for _ in range(IWANT_RETRANSMISSIONS):
        await gossipsub.handle_iwant(rpc_pb2.ControlIWant(messageIDs=ids[:4]), honest)
    for flooder in flooders:
        await gossipsub.handle_iwant(rpc_pb2.ControlIWant(messageIDs=ids), flooder)
    sent.clear()
    await gossipsub.handle_iwant(rpc_pb2.ControlIWant(messageIDs=ids[:4]), honest)
    assert sent == []  # its three answers stay counted


async def test_an_iwant_the_rate_limit_drops_counts_nothing() -> None:
    _libp2p_tuning.install()
    gossipsub, sent, ids = _gossip_with_cached(1, 100)
    peer = _peer(83)
    limit = int(gossipsub.max_iwant_requests_per_second)
    for _ in range(limit + 5):
        await gossipsub.handle_iwant(rpc_pb2.ControlIWant(messageIDs=[ids[0] + b"x"]), peer)
    await gossipsub.handle_iwant(rpc_pb2.ControlIWant(messageIDs=ids), peer)  # limited
    assert sent == []
    assert len(gossipsub.iwant_request_limits[peer]["requests"]) == limit


async def test_a_subscription_toggle_does_not_replay_the_topics_window_again(
    monkeypatch: Any,
) -> None:
    """Round 32, R1: an unsubscribe spent py-libp2p's catch-up gate again, so an RPC
    ``[unsubscribe T, subscribe T]`` of 72 bytes had T's cached window written back (16.6 MB
    for 34 KB of toggles in one run). One catch-up per peer and topic in 30 s."""
    from types import SimpleNamespace

    from libp2p.pubsub.pubsub import Pubsub

    _libp2p_tuning.install()
    sent: list[tuple[ID, str]] = []

    class Router:
        async def send_recent_messages(self, peer: ID, topic: str) -> None:
            sent.append((peer, topic))

    topic = "aimx/test/ledger/blocks"
    stranger, other = ID(b"\x01" * 34), ID(b"\x02" * 34)
    pubsub = SimpleNamespace(
        peers={stranger: None, other: None},
        router=Router(),
        peer_topics={topic: {stranger, other}},
        _peer_subscription_count={stranger: 1, other: 1},
        _replayed_recent_topics={},
    )
    now = [1000.0]
    monkeypatch.setattr(_libp2p_gossip.time, "monotonic", lambda: now[0])
    for _ in range(10):  # what handle_subscription does for each toggle
        Pubsub._forget_subscription(pubsub, stranger, topic)  # type: ignore[arg-type]
        pubsub.peer_topics.setdefault(topic, set()).add(stranger)
        await Pubsub._replay_recent_messages(pubsub, stranger, topic)  # type: ignore[arg-type]
    await Pubsub._replay_recent_messages(pubsub, other, topic)  # type: ignore[arg-type]
    assert sent == [(stranger, topic), (other, topic)]  # the tree before: 10 for the stranger
    now[0] += _libp2p_gossip.REPLAY_INTERVAL_S
    Pubsub._forget_subscription(pubsub, stranger, topic)  # type: ignore[arg-type]
    await Pubsub._replay_recent_messages(pubsub, stranger, topic)  # type: ignore[arg-type]
    assert sent[-1] == (stranger, topic) and len(sent) == 3
    assert len(pubsub._aimx_replays) == 1  # the other peer's expired gate was dropped


async def test_the_catch_up_gates_are_bounded(monkeypatch: Any) -> None:
    from types import SimpleNamespace

    from libp2p.pubsub.pubsub import Pubsub

    _libp2p_tuning.install()
    monkeypatch.setattr(_libp2p_gossip, "MAX_REPLAY_GATES", 4)
    sent: list[str] = []

    class Router:
        async def send_recent_messages(self, peer: ID, topic: str) -> None:
            sent.append(topic)

    peer = ID(b"\x01" * 34)
    pubsub = SimpleNamespace(peers={peer: None}, router=Router(), _replayed_recent_topics={})
    for i in range(6):
        await Pubsub._replay_recent_messages(pubsub, peer, f"t{i}")  # type: ignore[arg-type]
    assert sent == ["t0", "t1", "t2", "t3"]
