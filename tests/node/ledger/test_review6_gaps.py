"""Round-6 review R6-5: a gap in the sequence numbers of an account that cannot pay a
filler (a transfer of 1 to itself). A newcomer provider (balance 0), or one that staked all
it had, has its sealed claim A refused in a block: its claim B for an honest requester,
dropped behind A, must still land before B's ``claim_by``, and no retry loop may run on. A
funded account still fills its gap as before. (A is refused because its requester settled
first in the same block, or, where the provider is funded or staked, because its Award
and Receipt are not its escrow owner's.)

Claims now take no sequence number (``ledger.UNSEQUENCED``, review rounds 12 and 13):
A's refusal leaves no gap, and B is never dropped behind it; the first tests show it. The
gap machinery stays for the other kinds: the last two tests make their gap with a
transaction refused in a block (an overdraft).

The real :class:`TxQueue` against an in-process :class:`ledger.Producer` (drop reports
handed to ``TxQueue.dropped``, ``on_block`` after each block), as the review's scripts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import trio
import trio.testing

import ledger
from ledger import tx
from node.ledger import TxQueue, TxRequest

from ...keys import key, pub
from ...ledger.helpers import CHAIN, COORD, award, job_spec, receipt, settle
from .drag import feed_block

REQUESTER = key("r6-5 requester")  # settles job A first, paying a bidder of its own
HONEST = key("r6-5 honest requester")  # job B
PROVIDER = key("r6-5 provider")
BIDDER = key("r6-5 bidder")
PRICE = 100
KEY_A, KEY_B = b"A" * 32, b"B" * 32


@dataclass
class _Run:
    producer: ledger.Producer
    queue: TxQueue
    claim_by: int
    #: Height of the block that took claim B (None: never).
    claimed_at: int | None = None
    #: Every submission of the provider's (first ones and retries).
    submissions: int = 0
    refusals: list[str] = field(default_factory=list)
    fillers: int = 0


async def _claim_a_refused_then_b(
    balance: int, stake: int, blocks: int, *, settled_before: bool = False, foreign: bool = True
) -> _Run:
    """The provider holds ``balance`` + ``stake`` (``stake`` of it staked); claims A (seq
    after the stake) and B are admitted, then A's requester settles A: the next block
    refuses A and drops B behind it. Runs ``blocks`` blocks. ``settled_before``: A is
    settled before the claims are submitted (A is refused at admission instead)."""
    funds = {pub(REQUESTER): 1_000, pub(HONEST): 1_000}
    if balance + stake:
        funds[pub(PROVIDER)] = balance + stake
    genesis = ledger.make_genesis(
        CHAIN, [pub(COORD)], funds, unbonding_delay=3, reputation_half_life=10
    )
    producer = ledger.Producer(COORD, ledger.State.from_genesis(genesis), interval_ms=100, now_ms=0)
    spec_a, spec_b = job_spec(REQUESTER, b"r6-5 a"), job_spec(HONEST, b"r6-5 b")
    for owner, spec in ((REQUESTER, spec_a), (HONEST, spec_b)):
        lock = tx.lock(
            owner,
            CHAIN,
            0,
            job_id=spec.id,
            amount=PRICE,
            claim_height=80,
            escrow_expiry=100,
            max_per_payee=PRICE,
            max_payees=1,
            spec=spec.raw,
            expiry_height=30,
        )
        producer.submit(lock.raw)
    if stake:
        producer.submit(tx.stake(PROVIDER, CHAIN, 0, amount=stake, expiry_height=30).raw)
    producer.produce()
    assert producer.state.balance(pub(PROVIDER)) == balance
    paid = settle(
        REQUESTER,
        CHAIN,
        1,
        job_id=spec_a.id,
        payouts={pub(BIDDER): PRICE},
        expiry_height=producer.state.height + 40,
        keys={pub(BIDDER): BIDDER},
    )
    if settled_before:
        producer.submit(paid.raw)
        producer.produce()
    claim_by = producer.state.height + 4  # KEY_DUE_BLOCKS: a sealed claim's window

    def claim(owner: object, spec_id: bytes, unseal: bytes) -> ledger.Claim:
        assert owner in (REQUESTER, HONEST)
        requester = HONEST
        if owner is REQUESTER:  # ``foreign``: signed by a key that does not own A's escrow
            requester = BIDDER if foreign else REQUESTER
        return ledger.Claim(
            job_id=spec_id,
            award=award(requester, PROVIDER, PRICE, job=spec_id),
            receipt=receipt(
                requester, PROVIDER, job=spec_id, key=unseal, at_once=True, claim_by=claim_by
            ),
            key=unseal,
        )

    async def submit(raw: bytes) -> bytes:
        await trio.sleep(0.01)
        run.submissions += 1
        vtx = ledger.verify_tx(raw, CHAIN)
        if isinstance(vtx.payload, ledger.Transfer) and vtx.payload.to == pub(PROVIDER):
            run.fillers += 1
        try:
            return producer.submit(raw).id
        except ledger.LedgerError as exc:  # as the wire carries it: the text only
            raise ledger.TransactionRejected(f"transaction rejected: {exc}") from None

    queue = TxQueue(PROVIDER, lambda: producer.state, submit, chain_id=CHAIN, retry_s=(0.05, 0.2))
    run = _Run(producer, queue, claim_by)
    with trio.fail_after(blocks * 2 + 10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(queue.run)
            queue.put(TxRequest(claim(REQUESTER, spec_a.id, KEY_A), run.refusals.append))
            queue.put(TxRequest(claim(HONEST, spec_b.id, KEY_B), run.refusals.append))
            if not settled_before:
                while run.submissions < 2:  # both submitted (A refused at once if foreign)
                    await trio.sleep(0.01)
                producer.submit(paid.raw)
            for _ in range(blocks):
                commit = feed_block(producer, queue, pub(PROVIDER))
                escrow = producer.state.escrow(spec_b.id)
                assert escrow is not None
                if run.claimed_at is None and pub(PROVIDER) in escrow.claimed:
                    run.claimed_at = commit.block.message.height
                await trio.sleep(1)  # the queue re-signs and submits (virtual time)
            nursery.cancel_scope.cancel()
    return run


async def test_an_unfunded_provider_gets_its_sealed_claim_in_before_claim_by_after_one_refused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Before: the filler (a transfer of 1 to itself) was refused at admission ("holds no
    # credits") at every block, claim B waited behind the gap and its claim_by passed.
    run = await _claim_a_refused_then_b(balance=0, stake=0, blocks=8, foreign=False)
    assert run.claimed_at is not None and run.claimed_at <= run.claim_by
    assert run.producer.state.balance(pub(PROVIDER)) == PRICE  # paid for B
    assert len(run.refusals) == 1 and "already closed" in run.refusals[0]  # A, only
    assert run.fillers == 0 and run.queue.renumberings == 0  # no gap to close
    assert run.producer.state.next_seq(pub(PROVIDER)) == 0


async def test_a_provider_that_staked_all_it_had_gets_its_claim_in_and_no_retry_loop_runs(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Before: the filler was admitted (the account holds stake) and refused in every block
    # (balance 0 < 1), claim B dropped behind it every block, for ever: 2 submissions a
    # block over 50 blocks, B never in.
    run = await _claim_a_refused_then_b(balance=0, stake=5, blocks=50)
    # A and B once each; nothing more in the 50 blocks
    assert run.submissions == 2, run.submissions
    assert run.claimed_at is not None and run.claimed_at <= run.claim_by
    assert run.producer.state.balance(pub(PROVIDER)) == PRICE
    assert run.fillers == 0
    assert run.producer.state.next_seq(pub(PROVIDER)) == 1  # the stake; claims take none


async def test_an_unfunded_provider_refused_at_admission_while_its_next_claim_was_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Claim A is refused at admission (its escrow already closed) after claim B took seq 1;
    # before, the filler for seq 0 was refused too ("holds no credits") and B was lost.
    run = await _claim_a_refused_then_b(
        balance=0, stake=0, blocks=8, settled_before=True, foreign=False
    )
    assert run.claimed_at is not None and run.claimed_at <= run.claim_by
    assert len(run.refusals) == 1 and run.fillers == 0
    assert run.producer.state.next_seq(pub(PROVIDER)) == 0  # B took no number


async def test_a_funded_account_fills_its_gap_with_a_transfer_to_itself(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A (an overdraft, admitted: balances are checked in the block) is refused in the
    # block and B dropped behind it. B's answer was lost (its outcome unknown: it keeps
    # its number), so A's number is not given out again: a filler takes it and B, signed
    # again, lands after it. (With nothing of unknown outcome above it, the numbers are
    # given out again instead: no filler, round 15, R15-7.)
    genesis = ledger.make_genesis(
        CHAIN, [pub(COORD)], {pub(PROVIDER): 10}, unbonding_delay=3, reputation_half_life=10
    )
    producer = ledger.Producer(COORD, ledger.State.from_genesis(genesis), interval_ms=100, now_ms=0)
    fillers = 0

    b_answered = False

    async def submit(raw: bytes) -> bytes:
        nonlocal fillers, b_answered
        await trio.sleep(0.01)
        vtx = ledger.verify_tx(raw, CHAIN)
        if isinstance(vtx.payload, ledger.Transfer) and vtx.payload.to == pub(PROVIDER):
            fillers += 1
        try:
            tx_id = producer.submit(raw).id
        except ledger.LedgerError as exc:
            raise ledger.TransactionRejected(f"transaction rejected: {exc}") from None
        if vtx.payload == ledger.Transfer(pub(HONEST), 3) and not b_answered:
            b_answered = True
            raise trio.TooSlowError  # it arrived; its answer did not
        return tx_id

    refusals: list[str] = []
    queue = TxQueue(PROVIDER, lambda: producer.state, submit, chain_id=CHAIN, retry_s=(0.05, 0.2))
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(queue.run)
            queue.put(TxRequest(ledger.Transfer(pub(HONEST), 11), refusals.append))  # A
            queue.put(TxRequest(ledger.Transfer(pub(HONEST), 3), refusals.append))  # B
            while len(producer.mempool) < 2:
                await trio.sleep(0.01)
            for _ in range(4):
                feed_block(producer, queue, pub(PROVIDER))
                await trio.sleep(1)
            nursery.cancel_scope.cancel()
    state = producer.state
    assert len(refusals) == 1 and "balance" in refusals[0]
    assert fillers == 1
    assert state.next_seq(pub(PROVIDER)) == 2  # the filler took seq 0, B seq 1
    assert state.balance(pub(HONEST)) == 3 and state.balance(pub(PROVIDER)) == 7


async def test_a_transaction_whose_outcome_is_unknown_keeps_its_number_when_others_are_renumbered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The provider (all it has staked: it cannot pay a filler) stakes with seq 0; then A (a
    # transfer it cannot pay), B and C (unstakes) take seq 1, 2, 3. B's submissions go
    # unanswered (it may have arrived: its outcome is unknown), C is refused for the gap
    # before it. A is refused in a block: the queue renumbers, but B keeps seq 2 (signed
    # once, never again: were it also admitted, it could apply twice); C is signed again
    # at 1, and B's same bytes land after it once they get through.
    funds = {pub(HONEST): 1_000, pub(PROVIDER): 5}
    genesis = ledger.make_genesis(
        CHAIN, [pub(COORD)], funds, unbonding_delay=30, reputation_half_life=10
    )
    producer = ledger.Producer(COORD, ledger.State.from_genesis(genesis), interval_ms=100, now_ms=0)
    producer.submit(tx.stake(PROVIDER, CHAIN, 0, amount=5, expiry_height=30).raw)
    producer.produce()
    assert producer.state.balance(pub(PROVIDER)) == 0
    payloads: dict[str, ledger.Payload] = {
        "A": ledger.Transfer(pub(HONEST), 1),
        "B": ledger.Unstake(2),
        "C": ledger.Unstake(3),
    }
    signed: dict[str, list[int]] = {name: [] for name in payloads}
    b_offline = True

    async def submit(raw: bytes) -> bytes:
        await trio.sleep(0.01)
        vtx = ledger.verify_tx(raw, CHAIN)
        if vtx.payload == payloads["B"] and b_offline:
            raise trio.TooSlowError  # no answer: it may or may not have arrived
        try:
            return producer.submit(raw).id
        except ledger.LedgerError as exc:
            raise ledger.TransactionRejected(f"transaction rejected: {exc}") from None

    def request(name: str) -> TxRequest:
        return TxRequest(
            payloads[name], on_signed=lambda seq, _id, _exp, _raw: signed[name].append(seq)
        )

    queue = TxQueue(PROVIDER, lambda: producer.state, submit, chain_id=CHAIN, retry_s=(0.05, 0.2))
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(queue.run)
            for name in payloads:
                queue.put(request(name))
            while not (len(producer.mempool) == 1 and queue.unknown and queue.overtaken):
                await trio.sleep(0.01)
            for _ in range(4):
                feed_block(producer, queue, pub(PROVIDER))
                await trio.sleep(1)
                b_offline = not queue.renumberings  # B gets through after the renumbering
            nursery.cancel_scope.cancel()
    state = producer.state
    assert signed == {"A": [1], "B": [2], "C": [3, 1]}
    assert state.next_seq(pub(PROVIDER)) == 3
    assert state.account(pub(PROVIDER)).stake == 0  # both unstakes applied, once each
