"""The transaction queue against a real mempool and producer: pipelined submissions that
arrive out of order still land in request order, and a refused one leaves no gap."""

from __future__ import annotations

import trio

import ledger
from node.ledger import TxQueue, TxRequest
from node.ledger._txqueue import TX_LIFETIME_BLOCKS

from ...keys import pub
from ...ledger.helpers import ALICE, BOB, CHAIN, COORD, genesis

#: A transfer of this amount is refused by the coordinator the tests stand in for.
REFUSED = 7


def _producer() -> ledger.Producer:
    state = ledger.State.from_genesis(genesis())
    return ledger.Producer(COORD, state, interval_ms=100, now_ms=0)


async def _drive(requests: int, refuse: set[int]) -> tuple[ledger.Producer, list[str], TxQueue]:
    producer = _producer()
    arrivals: list[int] = []

    async def submit(raw: bytes) -> bytes:
        verified = ledger.verify_tx(raw, CHAIN)
        seq = verified.tx.seq
        # Later sequence numbers tend to arrive first: refused for the gap before them, they
        # are sent again once the one before is in.
        await trio.sleep(0.001 * ((requests - seq) % 4))
        arrivals.append(seq)
        payload = verified.payload
        if isinstance(payload, ledger.Transfer) and payload.amount == REFUSED:
            raise ledger.MempoolRejected("refused by the test's coordinator")
        return producer.mempool.add(raw, producer.state).id

    queue = TxQueue(ALICE, lambda: producer.state, submit, chain_id=CHAIN, window=8)
    refusals: list[str] = []

    def build(i: int) -> TxRequest:
        amount = REFUSED if i in refuse else 1
        return TxRequest(ledger.Transfer(pub(BOB), amount), refusals.append)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(queue.run)
            for i in range(requests):
                queue.put(build(i))
            while queue.submitted + queue.rejected < requests or len(producer.mempool) < requests:
                await trio.sleep(0.005)
            nursery.cancel_scope.cancel()
    assert sorted(arrivals) != arrivals  # they did arrive out of order
    return producer, refusals, queue


async def test_pipelined_submissions_land_in_order() -> None:
    producer, refusals, _ = await _drive(20, set())
    producer.produce()
    state = producer.state
    assert refusals == []
    assert state.next_seq(pub(ALICE)) == 20
    assert state.balance(pub(BOB)) == 1_000_000 + 20


async def test_a_refused_transaction_leaves_no_gap() -> None:
    producer, refusals, queue = await _drive(20, {5})
    assert len(refusals) == 1 and queue.rejected == 1
    producer.produce()
    state = producer.state
    # The refused one's sequence number was filled (a transfer of 1 to ourselves), so the
    # 19 after it were not held back.
    assert state.next_seq(pub(ALICE)) == 20
    assert state.balance(pub(BOB)) == 1_000_000 + 19


async def test_a_transaction_dropped_from_the_block_is_reported_and_its_gap_filled() -> None:
    # Admitted, then refused when the block is made (an overdraft): the producer reports it
    # and the request hears why. The transactions sent after it are dropped with it (they
    # would wait behind its gap): they are signed again from its number on, and land. (They
    # were signed after a filler for each of their numbers: seven fees for six transfers,
    # round 15, R15-7.)
    producer = _producer()

    async def submit(raw: bytes) -> bytes:
        return producer.mempool.add(raw, producer.state).id

    queue = TxQueue(ALICE, lambda: producer.state, submit, chain_id=CHAIN, window=8)
    refusals: list[str] = []

    def build(i: int) -> TxRequest:
        amount = 10**9 if i == 3 else 1  # more than Alice has
        return TxRequest(ledger.Transfer(pub(BOB), amount), refusals.append)

    def produce() -> None:
        effects = producer.tick(producer.next_block_ms)
        for drop in (e for e in effects if isinstance(e, ledger.TxDropped)):
            if drop.sender == pub(ALICE):
                queue.dropped(drop.tx_id, drop.seq, drop.reason)
        queue.on_block()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(queue.run)
            for i in range(10):
                queue.put(build(i))
            while queue.submitted < 10:
                await trio.sleep(0.005)
            produce()  # 0-2 in; 3 dropped; 4-9 dropped behind it
            assert producer.state.next_seq(pub(ALICE)) == 3
            assert len(refusals) == 1 and "dropped from the block" in refusals[0]
            while len(producer.mempool) < 6:  # the six again at 3-8
                await trio.sleep(0.005)
            produce()
            nursery.cancel_scope.cancel()
    state = producer.state
    assert state.next_seq(pub(ALICE)) == 9 and queue.renumberings == 1
    assert state.balance(pub(BOB)) == 1_000_000 + 9
    assert queue.lost == 0 and queue.dropped_reports == 7


async def test_a_timeout_is_no_refusal_and_its_sequence_number_is_never_reused() -> None:
    # Issue 15: the coordinator admits seq 0 but its answer is lost (a freeze past the
    # request's timeout); then it is away for a while. Nothing is reported refused, no
    # filler and no later transaction takes seq 0 or 1, and the same bytes are submitted
    # again until they are admitted: every transfer lands once.
    from node.net import NetworkTimeout

    producer = _producer()
    calls: list[int] = []
    away = 3  # submissions of seq 1 that find no coordinator

    async def submit(raw: bytes) -> bytes:
        nonlocal away
        seq = ledger.verify_tx(raw, CHAIN).tx.seq
        calls.append(seq)
        if seq == 1 and away > 0:
            away -= 1
            raise NetworkTimeout("no answer within 5 s")
        vtx = producer.mempool.add(raw, producer.state)
        if seq == 0 and calls.count(0) == 1:
            raise NetworkTimeout("no answer within 5 s")  # admitted, the answer lost
        return vtx.id

    queue = TxQueue(
        ALICE, lambda: producer.state, submit, chain_id=CHAIN, window=8, retry_s=(0.001, 0.004)
    )
    refusals: list[str] = []
    signed: list[tuple[int, int]] = []

    def build(i: int) -> TxRequest:
        return TxRequest(
            ledger.Transfer(pub(BOB), 1),
            refusals.append,
            on_signed=lambda seq, _id, expiry, _raw: signed.append((seq, expiry)),
        )

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(queue.run)
            for i in range(6):
                queue.put(build(i))
            while len(producer.mempool) < 6:
                await trio.sleep(0.002)
            nursery.cancel_scope.cancel()
    producer.produce()
    state = producer.state
    assert refusals == [] and queue.rejected == 0
    assert queue.unknown == 2 and queue.submitted == 6
    assert sorted(s for s, _ in signed) == [0, 1, 2, 3, 4, 5]  # each signed once
    assert calls.count(1) == 4  # three unanswered, then admitted
    assert state.next_seq(pub(ALICE)) == 6
    assert state.balance(pub(BOB)) == 1_000_000 + 6


async def test_expiries_count_from_the_coordinators_height() -> None:
    # A node catching up (its state at height 0) signs with the coordinator's height.
    producer = _producer()
    expiries: list[int] = []

    async def submit(raw: bytes) -> bytes:
        expiries.append(ledger.verify_tx(raw, CHAIN).tx.expiry_height)
        return b"\0" * 32

    queue = TxQueue(ALICE, lambda: producer.state, submit, chain_id=CHAIN, head=lambda: 500)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(queue.run)
            queue.put(TxRequest(ledger.Transfer(pub(BOB), 1)))
            while not expiries:
                await trio.sleep(0.002)
            nursery.cancel_scope.cancel()
    assert expiries == [500 + TX_LIFETIME_BLOCKS]


async def test_an_unknown_transaction_that_expired_has_its_gap_filled() -> None:
    # Seq 0 never reaches the coordinator (its outcome stays unknown); seq 1, signed 10
    # blocks later, is refused for the gap and sent again. Once the chain passes seq 0's
    # expiry, a filler takes 0 and seq 1 lands (it is not lost with the gap).
    from node.net import NetworkTimeout

    producer = _producer()

    async def submit(raw: bytes) -> bytes:
        if ledger.verify_tx(raw, CHAIN).tx.seq == 0 and not _is_filler(raw):
            raise NetworkTimeout("no answer within 5 s")
        return producer.mempool.add(raw, producer.state).id

    queue = TxQueue(ALICE, lambda: producer.state, submit, chain_id=CHAIN, retry_s=(0.001, 0.002))
    refusals: list[str] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(queue.run)
            queue.put(TxRequest(ledger.Transfer(pub(BOB), 5), refusals.append))
            while queue.unknown < 1:
                await trio.sleep(0.002)
            for _ in range(10):
                producer.produce()
                queue.on_block()
            queue.put(TxRequest(ledger.Transfer(pub(BOB), 7), refusals.append))
            while queue.overtaken < 1:  # seq 1 is refused for the gap, and sent again
                await trio.sleep(0.002)
            while producer.state.height <= TX_LIFETIME_BLOCKS:
                producer.produce()
                queue.on_block()
            while len(producer.mempool) < 2:  # the filler joins seq 1
                await trio.sleep(0.002)
            producer.produce()
            queue.on_block()
            nursery.cancel_scope.cancel()
    state = producer.state
    assert refusals == [] and queue.lost == 1
    assert state.next_seq(pub(ALICE)) == 2
    assert state.balance(pub(BOB)) == 1_000_000 + 7  # seq 1 landed; seq 0 never did


async def test_a_refusal_after_the_number_was_filled_is_no_longer_ours() -> None:
    # Found in a soak: seq 0's outcome was unknown, its retry was in flight when the chain
    # passed its expiry and a filler took (and landed) the number; the retry's refusal
    # then deleted a pending entry that was gone: KeyError, and the workspace ended.
    from node.net import NetworkTimeout

    producer = _producer()
    release = trio.Event()
    attempts = 0

    async def submit(raw: bytes) -> bytes:
        nonlocal attempts
        if ledger.verify_tx(raw, CHAIN).tx.seq == 0 and not _is_filler(raw):
            attempts += 1
            if attempts == 1:
                raise NetworkTimeout("no answer within 5 s")
            await release.wait()  # the retry is in flight while the number is filled
            raise ledger.MempoolRejected("transaction expired")
        return producer.mempool.add(raw, producer.state).id

    queue = TxQueue(ALICE, lambda: producer.state, submit, chain_id=CHAIN, retry_s=(0.001, 0.002))
    refusals: list[str] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(queue.run)
            queue.put(TxRequest(ledger.Transfer(pub(BOB), 5), refusals.append))
            while attempts < 2:
                await trio.sleep(0.002)
            for _ in range(10):  # seq 1 is signed later: it outlives seq 0
                producer.produce()
                queue.on_block()
            queue.put(TxRequest(ledger.Transfer(pub(BOB), 7), refusals.append))
            while queue.overtaken < 1:  # seq 1 is refused for the gap, and sent again
                await trio.sleep(0.002)
            while producer.state.height <= TX_LIFETIME_BLOCKS:
                producer.produce()
                queue.on_block()
            while len(producer.mempool) < 2:  # the filler joins seq 1
                await trio.sleep(0.002)
            producer.produce()
            queue.on_block()
            release.set()
            await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
    assert producer.state.next_seq(pub(ALICE)) == 2  # the filler took seq 0, seq 1 landed
    assert producer.state.balance(pub(BOB)) == 1_000_000 + 7 and refusals == []


def _is_filler(raw: bytes) -> bool:
    payload = ledger.verify_tx(raw, CHAIN).payload
    return isinstance(payload, ledger.Transfer) and payload.to == pub(ALICE)


async def test_a_dropped_gap_filler_is_signed_again() -> None:
    # Seq 0 is refused while seq 1 is already out: a filler must take 0. The coordinator
    # loses that filler and reports it dropped (it expired in a mempool that a SIGKILL
    # emptied: the chaos suite's kill-coordinator). Nothing else would ever take seq 0, so
    # seq 1 and every later transaction would wait behind the gap and expire in turn (the
    # account stalled for good under a steady job stream); the filler is signed again.
    producer = _producer()
    lost: list[bytes] = []
    gate = trio.Event()

    async def submit(raw: bytes) -> bytes:
        vtx = ledger.verify_tx(raw, CHAIN)
        if vtx.tx.seq == 0 and not _is_filler(raw):
            await gate.wait()  # answered after seq 1 was taken
            raise ledger.MempoolRejected("refused by the test's coordinator")
        if _is_filler(raw) and not lost:
            lost.append(ledger.verify_tx(raw, CHAIN).id)
            return lost[0]  # admitted, then lost with the coordinator
        return producer.mempool.add(raw, producer.state).id

    queue = TxQueue(ALICE, lambda: producer.state, submit, chain_id=CHAIN)
    refusals: list[str] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(queue.run)
            queue.put(TxRequest(ledger.Transfer(pub(BOB), 5), refusals.append))
            queue.put(TxRequest(ledger.Transfer(pub(BOB), 7), refusals.append))
            while queue.overtaken < 1:  # seq 1 is refused for the gap before it
                await trio.sleep(0.002)
            gate.set()
            while not lost:
                await trio.sleep(0.002)
            queue.dropped(lost[0], 0, "expired at height 30 before it was in a block")
            while len(producer.mempool) < 2:  # a new filler joins seq 1
                await trio.sleep(0.002)
            producer.produce()
            queue.on_block()
            nursery.cancel_scope.cancel()
    state = producer.state
    assert len(refusals) == 1 and state.next_seq(pub(ALICE)) == 2
    assert state.balance(pub(BOB)) == 1_000_000 + 7  # seq 1 landed after the new filler


async def test_a_coordinator_that_lost_its_mempool_gets_our_pending_ones_again() -> None:
    # Five transfers are admitted; the coordinator is killed before its next block and
    # restarts with an empty mempool (its store had no block with them). When it connects
    # again, the queue sends every pending one again, in order, and they land in the next
    # block, long before their expiry would have told us they were lost.
    coordinator = [_producer()]

    async def submit(raw: bytes) -> bytes:
        return coordinator[0].mempool.add(raw, coordinator[0].state).id

    queue = TxQueue(ALICE, lambda: coordinator[0].state, submit, chain_id=CHAIN)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(queue.run)
            for _ in range(5):
                queue.put(TxRequest(ledger.Transfer(pub(BOB), 3)))
            while queue.submitted < 5:
                await trio.sleep(0.002)
            coordinator[0] = _producer()  # restarted: the same chain, an empty mempool
            queue.resend_pending()
            while len(coordinator[0].mempool) < 5:
                await trio.sleep(0.002)
            coordinator[0].produce()
            queue.on_block()
            queue.resend_pending()  # nothing pending: nothing sent
            await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    state = coordinator[0].state
    assert state.next_seq(pub(ALICE)) == 5
    assert state.balance(pub(BOB)) == 1_000_000 + 15
    assert queue.resent == 5 and queue.lost == 0 and queue.rejected == 0


async def test_a_hole_at_the_chains_next_sequence_is_filled() -> None:
    # Killed after signing seq 0 and 1 and before sending seq 0: after the restart the
    # intents reserve seq 1 only (its bytes unknown), so nothing ever holds seq 0. No
    # expiry can reveal that hole, and every later transaction waited behind it and
    # expired in turn, for good (the chaos suite's kill-workspace, then every fault
    # after it). The queue fills the chain's next number when nothing of ours holds it.
    producer = _producer()

    async def submit(raw: bytes) -> bytes:
        return producer.mempool.add(raw, producer.state).id

    queue = TxQueue(ALICE, lambda: producer.state, submit, chain_id=CHAIN)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(queue.run)
            await trio.sleep(0)
            queue.reserve(1, expiry=3)  # sent before the kill? unknown
            queue.put(TxRequest(ledger.Transfer(pub(BOB), 9)))  # takes seq 2
            while queue.overtaken < 1:  # refused for the gap before it, and sent again
                await trio.sleep(0.002)
            queue.on_block()  # seq 0: nobody holds it
            while len(producer.mempool) < 1:  # its filler
                await trio.sleep(0.002)
            for _ in range(6):  # seq 1's reservation expires: filled too
                producer.produce()
                queue.on_block()
                await trio.sleep(0.01)
            producer.produce()
            nursery.cancel_scope.cancel()
    state = producer.state
    assert state.next_seq(pub(ALICE)) == 3
    assert state.balance(pub(BOB)) == 1_000_000 + 9


async def test_requests_wait_while_the_chain_is_64_behind_instead_of_being_refused() -> None:
    # Blocks take transactions in more slowly than requests arrive (a coordinator short of
    # CPU): 100 requests with no block made. The mempool refuses a sequence number more
    # than 64 ahead of the chain's, so the queue submits 64 and holds the rest back (none
    # refused, none failed); each block lets the next ones go, and all 100 land in order.
    producer = _producer()

    async def submit(raw: bytes) -> bytes:
        return producer.mempool.add(raw, producer.state).id

    queue = TxQueue(ALICE, lambda: producer.state, submit, chain_id=CHAIN, window=8)
    refusals: list[str] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(queue.run)
            for _ in range(100):
                queue.put(TxRequest(ledger.Transfer(pub(BOB), 1), refusals.append))
            while queue.submitted < ledger.MAX_AHEAD:
                await trio.sleep(0.005)
            await trio.sleep(0.05)  # nothing more goes out while no block is made
            assert queue.submitted == ledger.MAX_AHEAD and queue.held_back == 1
            assert refusals == [] and queue.rejected == 0
            while producer.state.next_seq(pub(ALICE)) < 100:
                producer.produce()
                queue.on_block()
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    assert refusals == [] and queue.submitted == 100
    assert producer.state.balance(pub(BOB)) == 1_000_000 + 100


async def test_a_refusal_at_block_time_learnt_on_resending_is_taken_as_its_drop_report() -> None:
    # The drop report of a transaction refused in a block was missed (the node was
    # disconnected then). Sent again, it is refused as "refused when a block was made"
    # (review round 6): the queue takes that as the report, reports the refusal and closes
    # the gap at once (here the number is free again), so the next transaction lands in the
    # next block, not behind a gap until the refused one's expiry.
    producer = _producer()

    async def submit(raw: bytes) -> bytes:
        return producer.mempool.add(raw, producer.state).id

    refusals: list[str] = []
    queue = TxQueue(ALICE, lambda: producer.state, submit, chain_id=CHAIN)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(queue.run)
            queue.put(TxRequest(ledger.Transfer(pub(BOB), 10**12), on_reject=refusals.append))
            while queue.submitted < 1:
                await trio.sleep(0.002)
            producer.produce()  # refused for the overdraft; its drop report is not passed on
            queue.on_block()
            queue.resend_pending()
            while not refusals:
                await trio.sleep(0.002)
            queue.put(TxRequest(ledger.Transfer(pub(BOB), 3)))
            while len(producer.mempool) < 1:  # the new transfer, in the freed number
                await trio.sleep(0.002)
            producer.produce()
            queue.on_block()
            nursery.cancel_scope.cancel()
    assert "refused when a block was made" in refusals[0]
    assert producer.state.balance(pub(BOB)) == 1_000_000 + 3


async def test_a_kept_transaction_is_sent_again_as_the_queue_starts() -> None:
    # Review round 61, R61-3: signed (its number kept) and killed before it was sent, a
    # transaction was reserved with no bytes: every later one of ours waited behind its
    # number until its expiry, 30 blocks. Its bytes are kept now and sent as the queue
    # starts.
    producer = _producer()
    kept = ledger.tx.make(ALICE, CHAIN, 0, ledger.Transfer(pub(BOB), 4), expiry_height=30)

    async def submit(raw: bytes) -> bytes:
        return producer.mempool.add(raw, producer.state).id

    queue = TxQueue(ALICE, lambda: producer.state, submit, chain_id=CHAIN)
    queue.reserve(0, expiry=30, raw=kept.raw)  # from the intents, before the queue runs
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(queue.run)
            queue.put(TxRequest(ledger.Transfer(pub(BOB), 5)))  # takes seq 1
            while len(producer.mempool) < 2:
                await trio.sleep(0.002)
            producer.produce()
            queue.on_block()
            nursery.cancel_scope.cancel()
    state = producer.state
    assert state.next_seq(pub(ALICE)) == 2  # the tree before: 0, until seq 0's expiry
    assert state.balance(pub(BOB)) == 1_000_000 + 9


async def test_a_kept_transactions_drop_report_reaches_what_it_was_made_for() -> None:
    # Review round 62, F3: reserved after a restart with no id, a kept transaction's drop
    # report was ignored (its intent never told, the numbers after it held until the
    # probe). Known by the id of its kept bytes, the report reaches its request.
    producer = _producer()
    kept = ledger.tx.make(ALICE, CHAIN, 0, ledger.Transfer(pub(BOB), 4), expiry_height=30)
    refusals: list[str] = []
    queue = TxQueue(ALICE, lambda: producer.state, lambda raw: _never(), chain_id=CHAIN)
    request = TxRequest(ledger.Transfer(pub(BOB), 4), on_reject=refusals.append)
    queue.reserve(0, expiry=30, raw=kept.raw, request=request)
    queue.dropped(kept.id, 0, "refused when a block was made: overdraft")
    assert refusals and "overdraft" in refusals[0]  # the tree before: ignored
    assert queue.dropped_reports == 1


async def _never() -> bytes:
    raise AssertionError("nothing is submitted here")
