"""Round-7 review R7-4: a forwarding node checked a settle's 64 Bids (65 signature checks)
before anything else, so any peer replaying pre-signed settles of no escrow, cycled past the
node's memory of verified messages, cost it 65 checks a request (the coordinator then
refused each cheaply, and nothing counted against the peer).

Now the forwarder applies the coordinator's cheap refusal first, against its own replica's
state: a settle whose sender holds no open escrow of the job there costs the transaction's
own check alone, is not sent on, and is answered without the rejection prefix (its state
may lag the coordinator's: the outcome is left unknown to the sender, not refused).
"""

from __future__ import annotations

import hashlib
import random

import nacl.signing
import pytest
import trio
import trio.testing

import ledger
import protocol
from ledger import tx
from node.ledger import LedgerService
from node.ledger._serve import Server
from node.ledger._wire import REJECTED_PREFIX, TX_PROTOCOL
from node.net import MemoryHub, PeerKey, RemoteError, RequestRejected

from ...keys import key, pub
from ...ledger.helpers import ALICE, CHAIN, COORD, bid, genesis
from ...ledger.test_block_budget import INTERVAL_MS, small_spec
from ...ledger.test_review6_settle_cost import PAYEES, counting_checks

MALLORY = key("mallory")
PEER = pub(key("some-peer"))


def _settle(owner: nacl.signing.SigningKey, job: bytes, seq: int = 0) -> bytes:
    """``owner``'s settle paying all 64 payees 1 each, every Bid valid (this job, at 1)."""
    bids = {pub(p): bid(p, 1, job=job) for p in PAYEES}
    payouts = {p: 1 for p in bids}
    return tx.settle(
        owner, CHAIN, seq, job_id=job, payouts=payouts, bids=bids, expiry_height=60
    ).raw


class _Forwarder:
    """What :class:`Server` uses of a forwarding node's service: a replica state holding
    ALICE's open escrow, and counts of what it forwarded and blamed."""

    producer = None

    def __init__(self) -> None:
        self.genesis = genesis()
        producer = ledger.Producer(
            COORD, ledger.State.from_genesis(self.genesis), interval_ms=INTERVAL_MS, now_ms=0
        )
        spec = small_spec(ALICE, 1)
        self.job = spec.id
        producer.submit(
            tx.lock(
                ALICE,
                CHAIN,
                0,
                job_id=spec.id,
                amount=64,
                claim_height=500,
                escrow_expiry=600,
                max_per_payee=1,
                max_payees=64,
                spec=spec.raw,
                expiry_height=50,
            ).raw
        )
        producer.tick(INTERVAL_MS)
        self.state = producer.state
        assert self.state.escrow(self.job) is not None
        self.forwarded: list[bytes] = []
        self.blamed: list[str] = []

    def misbehaved(self, peer: PeerKey, reason: str) -> None:
        self.blamed.append(reason)

    async def submit(self, raw: bytes, *, wait: bool = True) -> bytes:
        self.forwarded.append(raw)
        return protocol.content_hash(raw)


async def test_a_forwarder_refuses_a_settle_of_no_open_escrow_before_checking_its_bids() -> None:
    # The review's w1_forwarder_amplification.py: 65 checks (5-6 ms) a replayed request.
    service = _Forwarder()
    server = Server(service)  # type: ignore[arg-type]
    made_up = [hashlib.sha256(b"no escrow %d" % i).digest() for i in range(3)]
    cases = [_settle(MALLORY, job) for job in made_up]
    cases.append(_settle(MALLORY, service.job))  # ALICE's escrow, not Mallory's
    for raw in cases:
        for _ in range(2):  # the same bytes replayed
            with counting_checks() as checks, pytest.raises(RequestRejected) as refused:
                await server.serve_tx(PEER, raw)
            assert checks[0] == 1  # the transaction's own signature; before: 65
            answer = str(refused.value)
            assert not answer.startswith(REJECTED_PREFIX)  # not final: its state may lag
            assert answer.startswith("not forwarded: by this node's copy of the chain")
            assert "no open escrow of job" in answer
    assert service.forwarded == [] and service.blamed == []
    # the owner's settle of its open escrow is checked whole and sent on
    good = _settle(ALICE, service.job, seq=1)
    with counting_checks() as checks:
        await server.serve_tx(PEER, good)
    assert checks[0] == 65
    assert service.forwarded == [good] and service.blamed == []


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


async def test_a_node_forwards_no_settle_of_no_escrow_and_its_sender_may_send_it_again(
    clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[int] = []
    real_verify = ledger.verify_tx  # what ledger._mempool calls

    def counting_verify(raw: bytes, chain_id: str) -> ledger.VerifiedTx:
        seen.append(len(raw))
        return real_verify(raw, chain_id)

    monkeypatch.setattr("ledger._mempool.verify_tx", counting_verify)
    hub = MemoryHub(CHAIN, rng=random.Random(7))
    async with (
        hub.open(COORD) as coord_net,
        hub.open(key("forwarder")) as fwd_net,
        hub.open(MALLORY) as evil,
        trio.open_nursery() as nursery,
    ):
        g = genesis()
        coord = LedgerService(coord_net, g, producer_key=COORD, interval_ms=1000)
        await nursery.start(coord.run)
        fwd = LedgerService(fwd_net, g, sources=[pub(COORD)], sync_interval_ms=1000)
        await nursery.start(fwd.run)
        await fwd.wait_height(1)
        raw = _settle(MALLORY, hashlib.sha256(b"no escrow").digest())
        for _ in range(3):
            with pytest.raises(RemoteError) as refused:
                await evil.request(fwd.net.local_peer, TX_PROTOCOL, raw, timeout=5)
            assert "not forwarded" in str(refused.value)
            assert REJECTED_PREFIX not in str(refused.value)
        assert fwd.server._messages.checks == 0  # no Bid checked
        assert seen == []  # the coordinator never had it
        assert fwd.counters.misbehaving == {} and coord.counters.misbehaving == {}
        nursery.cancel_scope.cancel()
