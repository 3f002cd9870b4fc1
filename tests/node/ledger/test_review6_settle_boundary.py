"""Round-5 review R5-6 at the peer boundary: a settle whose payout Bid is badly signed is
refused at admission as malformed, by the coordinator and by the first node that would
forward it, and counted against the peer that sent it (as R5-2 counts a malformed
transaction); the forwarder never sends it on.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

import ledger
import protocol
from ledger import tx
from node.ledger import LedgerService
from node.ledger._wire import TX_PROTOCOL
from node.net import MemoryHub, MemoryNetwork, RemoteError

from ...keys import key, pub
from ...ledger.helpers import ALICE, CHAIN, COORD, bid, genesis
from ...ledger.test_block_budget import small_spec

MALLORY = key("mallory")
PAYEES = [key(f"payee-{i}") for i in range(64)]


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


@asynccontextmanager
async def _escrow_coordinator_forwarder_and_mallory(
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[tuple[LedgerService, LedgerService, MemoryNetwork, bytes, list[int]]]:
    """A coordinator whose chain holds ALICE's open escrow (64 payees of 1), a node
    forwarding to it, Mallory's network, the job id, and a list that grows by the size of
    each transaction the coordinator's mempool was handed."""
    seen: list[int] = []
    real_verify = ledger.verify_tx  # what ledger._mempool calls

    def counting_verify(raw: bytes, chain_id: str) -> ledger.VerifiedTx:
        seen.append(len(raw))
        return real_verify(raw, chain_id)

    monkeypatch.setattr("ledger._mempool.verify_tx", counting_verify)
    hub = MemoryHub(CHAIN, rng=random.Random(6))
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
        spec = small_spec(ALICE, 1)
        lock = tx.lock(
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
        )
        assert coord.producer is not None
        coord.producer.submit(lock.raw)
        await fwd.wait_height(2)
        assert fwd.state.escrow(spec.id) is not None
        seen.clear()
        yield coord, fwd, evil, spec.id, seen
        nursery.cancel_scope.cancel()


def _settle(job: bytes, *, bad: bool, expiry: int = 60) -> protocol.Signed[protocol.Transaction]:
    bids = {pub(p): bid(p, 1, job=job) for p in PAYEES}
    if bad:
        last = pub(PAYEES[-1])
        bids[last] = bids[last][:-1] + bytes([bids[last][-1] ^ 1])
    payouts = {p: 1 for p in bids}
    return tx.settle(ALICE, CHAIN, 1, job_id=job, payouts=payouts, bids=bids, expiry_height=expiry)


async def test_a_settle_with_a_bad_bid_sent_to_a_coordinator_is_refused_and_counted(
    clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with _escrow_coordinator_forwarder_and_mallory(monkeypatch) as (coord, _, evil, job, _s):
        for n, expiry in enumerate((60, 61), start=1):  # re-signed: refused again
            bad = _settle(job, bad=True, expiry=expiry)
            with pytest.raises(RemoteError, match=r"transaction rejected: .*bad signature on Bid"):
                await evil.request(pub(COORD), TX_PROTOCOL, bad.raw, timeout=5)
            assert coord.counters.misbehaving.get(pub(MALLORY)) == n
        assert coord.producer is not None and len(coord.producer.mempool) == 0
        # the good one is admitted, and nothing more is counted
        good = _settle(job, bad=False)
        answer = await evil.request(pub(COORD), TX_PROTOCOL, good.raw, timeout=5)
        assert protocol.unpack(answer) == [good.id]
        assert coord.counters.misbehaving.get(pub(MALLORY)) == 2


async def test_a_forwarding_node_refuses_a_settle_with_a_bad_bid_and_does_not_send_it_on(
    clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with _escrow_coordinator_forwarder_and_mallory(monkeypatch) as (
        coord,
        fwd,
        evil,
        job,
        seen,
    ):
        bad = _settle(job, bad=True)
        with pytest.raises(RemoteError, match=r"transaction rejected: .*bad signature on Bid"):
            await evil.request(fwd.net.local_peer, TX_PROTOCOL, bad.raw, timeout=5)
        assert fwd.counters.misbehaving.get(pub(MALLORY)) == 1  # at the first hop
        assert seen == []  # the coordinator never had it
        assert coord.counters.misbehaving == {}  # nor blamed the forwarder
        good = _settle(job, bad=False)
        answer = await evil.request(fwd.net.local_peer, TX_PROTOCOL, good.raw, timeout=5)
        assert protocol.unpack(answer) == [good.id]
        assert seen == [len(good.raw)]
