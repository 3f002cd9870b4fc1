"""Round 43, F2: py-libp2p kept a peer's subscriptions for any topic name, 100 a peer, each
up to the 1 MiB an RPC may hold: 10 keys made a node hold 999 MiB of names. F3: a
message was bounded by its data only. A subscription or message whose topic has no
topic's form (1-128 of ``[A-Za-z0-9_.-/:]``) is now dropped before py-libp2p sees it, and a
message is bounded whole."""

from __future__ import annotations

import trio
import varint
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11
from libp2p.pubsub.pb import rpc_pb2

from node.net._libp2p_transport import peer_id_of
from node.net._libp2p_tuning import (
    MAX_MESSAGE_OVERHEAD_BYTES,
    MAX_RPC_GOSSIP_ENTRIES,
    MAX_RPC_GOSSIP_IDS,
    MAX_SEQNO_BYTES,
    bounded_rpc,
)
from node.net._limits import MAX_PUBSUB_BYTES, MAX_SUBSCRIPTIONS_PER_PEER

from .helpers import node

TOPIC = "aimx/test/ledger/blocks"
LONG = "t" * 100_000


def test_subscriptions_and_messages_to_names_that_are_no_topics_are_dropped() -> None:
    rpc = rpc_pb2.RPC()
    rpc.subscriptions.add(subscribe=True, topicid=TOPIC)
    rpc.subscriptions.add(subscribe=True, topicid=LONG)
    rpc.subscriptions.add(subscribe=True, topicid="t" * 129)
    rpc.subscriptions.add(subscribe=True, topicid="no spaces")
    rpc.subscriptions.add(subscribe=True, topicid="")
    rpc.publish.add(topicIDs=[TOPIC], data=b"ok")
    rpc.publish.add(topicIDs=[TOPIC, LONG], data=b"named")
    rpc.publish.add(
        topicIDs=[TOPIC], data=b"k", key=b"k" * (MAX_PUBSUB_BYTES + MAX_MESSAGE_OVERHEAD_BYTES)
    )
    rpc.publish.add(topicIDs=[TOPIC], data=b"x" * MAX_PUBSUB_BYTES)
    assert bounded_rpc(rpc)
    assert [s.topicid for s in rpc.subscriptions] == [TOPIC]
    assert [len(m.data) for m in rpc.publish] == [2, MAX_PUBSUB_BYTES]


async def test_a_peer_cannot_make_a_node_hold_long_topic_names() -> None:
    with trio.fail_after(60):
        async with node(101) as victim, node(102) as stranger:
            await stranger.connect(victim.addresses()[0])
            stream = await stranger._host.new_stream(
                peer_id_of(victim.local_peer), [PROTOCOL_ID_V11]
            )
            for i in range(20):  # each RPC one subscription of a 100 KB name
                rpc = rpc_pb2.RPC()
                rpc.subscriptions.add(subscribe=True, topicid=f"{i}{LONG}")
                rpc.subscriptions.add(subscribe=True, topicid=f"aimx/test/{i}")
                data = rpc.SerializeToString()
                await stream.write(varint.encode(len(data)) + data)
            pubsub = victim._gossip.pubsub
            for _ in range(100):
                if sum(1 for t in pubsub.peer_topics if t.startswith("aimx/test/")) == 20:
                    break
                await trio.sleep(0.05)
            names = list(pubsub.peer_topics)
            assert sum(1 for t in names if t.startswith("aimx/test/")) == 20  # these were read
            assert max(len(t) for t in names) <= 128  # the tree before: 20 of 100 KB
            assert pubsub.max_subscriptions_per_peer == MAX_SUBSCRIPTIONS_PER_PEER


def test_a_message_whose_naming_fields_are_oversized_is_dropped() -> None:
    """Round 44, G2: py-libp2p's message id is ``from_id + seqno``, kept in the seen cache
    for 120 s and refreshed on each sighting: a seqno of 260 KiB made one key's messages
    hold 514 MiB of ids."""
    rpc = rpc_pb2.RPC()
    rpc.publish.add(topicIDs=[TOPIC], data=b"ok", seqno=b"s" * MAX_SEQNO_BYTES)
    rpc.publish.add(topicIDs=[TOPIC], data=b"ok", seqno=b"s" * (MAX_SEQNO_BYTES + 1))
    rpc.publish.add(topicIDs=[TOPIC], data=b"ok", from_id=b"f" * 65)
    rpc.publish.add(topicIDs=[TOPIC] * 2, data=b"ok")
    assert bounded_rpc(rpc)
    assert [m.seqno for m in rpc.publish] == [b"s" * MAX_SEQNO_BYTES]


def test_gossip_control_lists_of_too_many_entries_are_ignored() -> None:
    """Round 44, G1: empty IHAVE entries counted nothing: 209,000 in one RPC kept a node's
    loop busy 2.5 s. IDONTWANT was not bounded at all."""
    rpc = rpc_pb2.RPC()
    for _ in range(MAX_RPC_GOSSIP_ENTRIES + 1):
        rpc.control.ihave.add(topicID=TOPIC)
        rpc.control.iwant.add()
    rpc.control.idontwant.add(messageIDs=[b"i"] * (MAX_RPC_GOSSIP_IDS + 1))
    assert bounded_rpc(rpc)
    assert len(rpc.control.ihave) == len(rpc.control.iwant) == len(rpc.control.idontwant) == 0
    fine = rpc_pb2.RPC()
    for _ in range(MAX_RPC_GOSSIP_ENTRIES):
        fine.control.ihave.add(topicID=TOPIC, messageIDs=[b"m"])
    fine.control.idontwant.add(messageIDs=[b"i"] * 3)
    assert bounded_rpc(fine)
    assert len(fine.control.ihave) == MAX_RPC_GOSSIP_ENTRIES and len(fine.control.idontwant) == 1


def test_the_equivocation_check_keeps_digests_and_a_bounded_number() -> None:
    """Round 44, G3: py-libp2p kept each message whole for its equivocation check, up to
    1,000 of 260 KiB and any number between heartbeats."""
    from types import SimpleNamespace

    from libp2p.pubsub.gossipsub import GossipSub

    from node.net import _libp2p_gossip, _libp2p_tuning

    _libp2p_tuning.install()
    router = SimpleNamespace(equivocation_detection={}, scorer=None)

    def msg(seqno: int, data: bytes, topic: str = TOPIC) -> rpc_pb2.Message:
        return rpc_pb2.Message(
            from_id=b"f", seqno=seqno.to_bytes(8, "big"), data=data, topicIDs=[topic]
        )

    assert GossipSub._check_equivocation(router, msg(1, b"x" * 200_000))  # type: ignore[arg-type]
    assert GossipSub._check_equivocation(router, msg(1, b"x" * 200_000))  # type: ignore[arg-type]
    assert not GossipSub._check_equivocation(router, msg(1, b"y"))  # type: ignore[arg-type]
    assert not GossipSub._check_equivocation(router, msg(1, b"x" * 200_000, "other"))  # type: ignore[arg-type]
    assert all(len(v) == 32 for v in router.equivocation_detection.values())
    for i in range(2, 2 * _libp2p_gossip.MAX_EQUIVOCATION_ENTRIES):
        GossipSub._check_equivocation(router, msg(i, b"z"))  # type: ignore[arg-type]
    assert len(router.equivocation_detection) <= _libp2p_gossip.MAX_EQUIVOCATION_ENTRIES


def test_messages_on_topics_the_node_does_not_follow_are_dropped() -> None:
    """Round 45, H1: py-libp2p's scorer made an entry for every topic a message named,
    before its signature was checked: one key's messages naming made-up topics left 2.15
    million entries (+231 MB, heartbeats of 1 s). A message names one topic, and one we
    follow."""
    from node.net._libp2p_tuning import _keep_followed

    rpc = rpc_pb2.RPC()
    rpc.publish.add(topicIDs=[TOPIC], data=b"ours")
    rpc.publish.add(topicIDs=["aimx/test/made-up"], data=b"theirs")
    rpc.publish.add(topicIDs=[TOPIC, "aimx/test/made-up"], data=b"both")
    assert bounded_rpc(rpc)
    _keep_followed(rpc, {TOPIC})
    assert [m.data for m in rpc.publish] == [b"ours"]


async def test_a_running_node_takes_messages_only_on_topics_it_follows() -> None:
    with trio.fail_after(30):
        async with node(103) as victim:
            followed = victim._host._aimx_followed
            assert TOPIC not in followed()
            victim.subscribe(TOPIC)
            for _ in range(100):
                if TOPIC in followed():
                    break
                await trio.sleep(0.05)
            assert TOPIC in followed()


def test_the_value_store_keeps_records_bare_bounded_and_evicts_at_once() -> None:
    """Round 45, H2 and H3: PUT_VALUE records were kept with whatever else they carried,
    50,000 of any size for 24 h, and a full store parsed every record to find the oldest
    (0.5-1 s a PUT)."""
    from types import SimpleNamespace

    from libp2p.kad_dht.pb.kademlia_pb2 import Record

    from node.net import _libp2p_dht

    store = SimpleNamespace(store={})
    _libp2p_dht.guard_value_store(store)
    padded = Record(key=b"k", value=b"v" * 100)
    padded.MergeFromString(b"\x9a\x05" + bytes([100]) + b"p" * 100)  # an unknown field 83
    store.put_record(b"k", padded)  # type: ignore[attr-defined]
    kept = store.store[b"k"][0]
    assert kept.value == b"v" * 100 and len(kept.SerializeToString()) < 110
    store.put_record(b"big", Record(key=b"big", value=b"v" * (_libp2p_dht.MAX_VALUE_BYTES + 1)))  # type: ignore[attr-defined]
    assert b"big" not in store.store
    for i in range(_libp2p_dht.MAX_VALUE_RECORDS + 10):
        store.put_record(b"%d" % i, Record(key=b"%d" % i, value=b"v"))  # type: ignore[attr-defined]
    assert len(store.store) == _libp2p_dht.MAX_VALUE_RECORDS
    assert b"k" not in store.store and b"0" not in store.store  # the first stored went first
