"""A transaction submitted while the coordinator cannot be reached waits for it (issue 15):
it is sent when the coordinator is back; a lock gives up, with the reason, about when its
job's deadline passes. Virtual time (MockClock) over the in-memory network."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

import ledger
from node.ledger import LedgerService
from node.ledger._errors import LedgerServiceError
from node.ledger._submit import SUBMIT_RETRY_S
from node.ledger._wire import TX_PROTOCOL
from node.net import MemoryHub

from ...keys import key, pub
from ...ledger.helpers import ALICE, BOB, CHAIN, COORD, genesis, job_spec

INTERVAL_MS = 1000


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


@asynccontextmanager
async def _coordinator_and_replica() -> AsyncIterator[
    tuple[MemoryHub, LedgerService, LedgerService, trio.Nursery]
]:
    g = genesis()
    hub = MemoryHub(CHAIN, rng=random.Random(3))
    async with (
        hub.open(COORD) as coord_net,
        hub.open(key("replica")) as replica_net,
        trio.open_nursery() as nursery,
    ):
        coord = LedgerService(coord_net, g, producer_key=COORD, interval_ms=INTERVAL_MS)
        await nursery.start(coord.run)
        replica = LedgerService(
            replica_net, g, sources=[pub(COORD)], interval_ms=INTERVAL_MS, sync_interval_ms=500
        )
        await nursery.start(replica.run)
        yield hub, coord, replica, nursery


def _lock(seq: int, claim_height: int) -> bytes:
    spec = job_spec(ALICE)
    return ledger.tx.lock(
        ALICE,
        CHAIN,
        seq,
        job_id=spec.id,
        amount=100,
        claim_height=claim_height,
        escrow_expiry=claim_height + 10,
        max_per_payee=100,
        max_payees=1,
        spec=spec.raw,
        expiry_height=claim_height,
    ).raw


def _transfer(seq: int, expiry_height: int) -> bytes:
    return ledger.tx.transfer(
        ALICE, CHAIN, seq, to=pub(BOB), amount=5, expiry_height=expiry_height
    ).raw


async def test_a_submission_waits_for_the_coordinator_and_lands_when_it_is_back(
    clock: trio.testing.MockClock,
) -> None:
    async def main() -> None:
        async with _coordinator_and_replica() as (hub, coord, replica, nursery):
            await replica.wait_height(2)
            hub.partition([pub(COORD)])  # the coordinator is away
            # (cut off from a coordinator that keeps making blocks: valid long enough)
            raw = _transfer(0, replica.state.height + 100)
            accepted: list[bytes] = []
            submitted_at = trio.current_time()

            async def submit() -> None:
                accepted.append(await replica.submit(raw))

            nursery.start_soon(submit)
            await trio.sleep(60)
            assert accepted == []  # still waiting, not failed
            hub.heal()
            back_at = trio.current_time()
            with trio.fail_after(SUBMIT_RETRY_S + 1):
                while not accepted:
                    await trio.sleep(0.05)
            assert trio.current_time() - back_at <= SUBMIT_RETRY_S + 0.5
            assert trio.current_time() - submitted_at >= 60
            await coord.wait_height(coord.state.height + 1)
            assert coord.state.next_seq(pub(ALICE)) == 1  # in a block
            nursery.cancel_scope.cancel()

    with trio.fail_after(120):
        await main()


async def test_a_connecting_coordinator_wakes_a_waiting_submission_at_once(
    clock: trio.testing.MockClock,
) -> None:
    async def main() -> None:
        async with _coordinator_and_replica() as (hub, coord, replica, nursery):
            await replica.wait_height(2)
            hub.partition([pub(COORD)])
            raw = _transfer(0, replica.state.height + 60)
            accepted: list[float] = []

            async def submit() -> None:
                await replica.submit(raw)
                accepted.append(trio.current_time())

            nursery.start_soon(submit)
            await trio.sleep(10.3)  # between two periodic tries
            hub.heal()
            await coord.net.connect(replica.net.addresses()[0])  # the coordinator is back
            back_at = trio.current_time()
            with trio.fail_after(SUBMIT_RETRY_S):
                while not accepted:
                    await trio.sleep(0.01)
            assert accepted[0] - back_at < 0.1
            nursery.cancel_scope.cancel()

    with trio.fail_after(120):
        await main()


async def test_a_lock_gives_up_about_when_its_jobs_deadline_passes(
    clock: trio.testing.MockClock,
) -> None:
    async def main() -> None:
        async with _coordinator_and_replica() as (hub, _coord, replica, nursery):
            await replica.wait_height(2)
            hub.partition([pub(COORD)])
            # claims open 10 blocks (of 1 s) from now: the job's deadline has passed by then
            raw = _lock(0, replica.state.height + 10)
            started = trio.current_time()
            with pytest.raises(LedgerServiceError, match="no coordinator reachable"):
                await replica.submit(raw)
            waited = trio.current_time() - started
            assert 10 <= waited <= 10 + SUBMIT_RETRY_S
            # a forwarded transaction (a peer's) does not wait: the peer's own request would
            # time out first
            started = trio.current_time()
            with pytest.raises(LedgerServiceError):
                await replica.submit(raw, wait=False)
            assert trio.current_time() - started < 1
            nursery.cancel_scope.cancel()

    with trio.fail_after(120):
        await main()


async def test_a_submission_the_coordinator_may_hold_is_not_waited_on(
    clock: trio.testing.MockClock,
) -> None:
    """A coordinator that takes the request and does not answer (frozen) may yet apply the
    transaction: that outcome is the queue's to resolve, not something to wait out here."""

    async def main() -> None:
        async with _coordinator_and_replica() as (_hub, coord, replica, nursery):
            await replica.wait_height(2)

            async def frozen(peer: bytes, request: bytes) -> bytes:
                await trio.sleep_forever()
                raise AssertionError

            coord.net.set_handler(TX_PROTOCOL, frozen)
            started = trio.current_time()
            with pytest.raises(LedgerServiceError, match="no coordinator reachable"):
                await replica.submit(_transfer(0, replica.state.height + 100))
            assert trio.current_time() - started < 60  # the request's timeout, no more
            nursery.cancel_scope.cancel()

    with trio.fail_after(120):
        await main()
