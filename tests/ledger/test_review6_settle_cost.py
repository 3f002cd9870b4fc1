"""Round-5 review R5-6, what was left: a settle whose 64th payout Bid is bad cost the block
producer 64 signature checks for 1 at admission, and re-signing it (one signature) brought
it back every block (1,000 accounts: ~2.3 s of the coordinator's loop per block).

Now every signed message a transaction carries is checked at admission, with what its rule
checks of it without the state (``ledger.check_embedded``): a bad one is refused as
malformed there. The producer does not check them again, and a message that verified once
is not checked again at admission (a re-signed settle around the same Bids costs one
check). A replica applying a block still checks everything.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import nacl.bindings
import nacl.signing
import pytest

import ledger
import protocol
from ledger import tx

from ..keys import key, pub
from .helpers import CHAIN, COORD, RECEIPT_KEY, award, bid, receipt, result
from .test_block_budget import INTERVAL_MS, small_spec

PAYEES = [key(f"payee-{i}") for i in range(64)]


@contextmanager
def counting_checks() -> Iterator[list[int]]:
    """Counts Ed25519 signature checks (``protocol.decode``'s ``crypto_sign_open``)."""
    calls = [0]
    real = nacl.bindings.crypto_sign_open

    def counted(signed: bytes, pk: bytes) -> bytes:
        calls[0] += 1
        return real(signed, pk)

    mp = pytest.MonkeyPatch()
    mp.setattr(nacl.bindings, "crypto_sign_open", counted)
    try:
        yield calls
    finally:
        mp.undo()


def _escrowed(
    owners: list[nacl.signing.SigningKey], *, amount: int = 64
) -> tuple[ledger.Producer, list[bytes]]:
    """A producer at height 1 whose chain holds one open escrow of each owner's (64 payees
    of at most 1 each), and the job ids."""
    g = ledger.make_genesis(CHAIN, [pub(COORD)], {pub(o): 10_000 for o in owners})
    producer = ledger.Producer(
        COORD, ledger.State.from_genesis(g), interval_ms=INTERVAL_MS, now_ms=0
    )
    jobs = []
    for i, owner in enumerate(owners):
        spec = small_spec(owner, 100 + i)
        jobs.append(spec.id)
        lock = tx.lock(
            owner,
            CHAIN,
            0,
            job_id=spec.id,
            amount=amount,
            claim_height=500,
            escrow_expiry=600,
            max_per_payee=1,
            max_payees=64,
            spec=spec.raw,
            expiry_height=999,
        )
        producer.submit(lock.raw)
    producer.tick(INTERVAL_MS)
    assert all(producer.state.escrow(j) is not None for j in jobs)
    return producer, jobs


def _bids(job: bytes, *, bad_last: bool = False) -> dict[bytes, bytes]:
    bids = {pub(p): bid(p, 1, job=job) for p in PAYEES}
    if bad_last:
        last = pub(PAYEES[-1])
        bids[last] = bids[last][:-1] + bytes([bids[last][-1] ^ 1])  # a flipped signature bit
    return bids


def _settle(
    owner: nacl.signing.SigningKey,
    job: bytes,
    bids: dict[bytes, bytes],
    *,
    seq: int = 1,
    expiry: int = 999,
    amount: int = 1,
) -> bytes:
    payouts = {p: amount for p in bids}
    return tx.settle(
        owner, CHAIN, seq, job_id=job, payouts=payouts, bids=bids, expiry_height=expiry
    ).raw


def test_a_settle_with_one_bad_payout_bid_is_refused_at_admission_as_malformed() -> None:
    # The review's g1_bad_settle_replay.py: admitted (1 check), then dropped when each
    # block was made (64 checks), again and again.
    owner = key("owner")
    producer, [job] = _escrowed([owner])
    with pytest.raises(ledger.MalformedTransaction, match="bad signature on Bid"):
        producer.submit(_settle(owner, job, _bids(job, bad_last=True)))
    assert len(producer.mempool) == 0
    # the same with a validly signed Bid that is not the payee's at the paid amount
    bids = _bids(job)
    bids[pub(PAYEES[3])] = bid(PAYEES[3], 2, job=job)
    with pytest.raises(ledger.MalformedTransaction, match=r"payout \d+ does not carry"):
        producer.submit(_settle(owner, job, bids))
    # a good one is admitted, and applied
    producer.submit(_settle(owner, job, _bids(job)))
    producer.tick(2 * INTERVAL_MS)
    assert producer.state.balance(pub(PAYEES[0])) == 1


def test_a_producer_does_not_check_a_settles_bids_again_when_it_makes_the_block() -> None:
    owner = key("owner")
    producer, [job] = _escrowed([owner])
    raw = _settle(owner, job, _bids(job))
    with counting_checks() as admission:
        producer.submit(raw)
    assert admission[0] == 1 + 64  # its own signature and each Bid's, once
    with counting_checks() as production:
        commit = next(e for e in producer.tick(2 * INTERVAL_MS) if isinstance(e, ledger.Commit))
    assert raw in commit.block.message.txs
    assert production[0] == 0  # before: the 64 Bids again


def test_a_settle_refused_at_block_time_re_signed_costs_one_check_per_block_not_65() -> None:
    # Bids that verify, for an escrow that cannot pay them (64 x 1 from 1 locked): refused
    # when the block is made. The attacker re-signs it every block (a new id, the same
    # Bids): its Bids are not checked again, at admission or at block time.
    owners = [key(f"attacker-{i}") for i in range(4)]
    producer, jobs = _escrowed(owners, amount=1)
    bids = [_bids(job) for job in jobs]
    now = 2 * INTERVAL_MS
    per_round = []
    for rnd in range(3):
        with counting_checks() as checks:
            for owner, job, b in zip(owners, jobs, bids, strict=True):
                producer.submit(_settle(owner, job, b, expiry=900 + rnd))
            effects = producer.tick(now)
        now += INTERVAL_MS
        dropped = [e for e in effects if isinstance(e, ledger.TxDropped)]
        assert len(dropped) == len(owners)
        assert all("exceed" in d.reason for d in dropped)
        per_round.append(checks[0])
    assert per_round == [len(owners) * 65, len(owners), len(owners)]


def test_a_settle_of_no_open_escrow_of_the_senders_is_refused_before_its_bids_are_checked() -> None:
    owner, other = key("owner"), key("other")
    producer, jobs = _escrowed([owner, other])
    with counting_checks() as checks:
        with pytest.raises(ledger.MempoolRejected, match="no open escrow of job"):
            producer.submit(_settle(other, jobs[0], _bids(jobs[0])))  # the owner's escrow
        with pytest.raises(ledger.MempoolRejected, match="no open escrow of job"):
            producer.submit(_settle(other, b"\x09" * 32, _bids(b"\x09" * 32)))  # none
    assert checks[0] == 2  # their own signatures only
    # a settle behind the sender's own lock, both pending, is admitted
    spec = small_spec(other, 999)
    lock = tx.lock(
        other,
        CHAIN,
        1,
        job_id=spec.id,
        amount=64,
        claim_height=500,
        escrow_expiry=600,
        max_per_payee=1,
        max_payees=64,
        spec=spec.raw,
        expiry_height=999,
    )
    producer.submit(lock.raw)
    producer.submit(_settle(other, spec.id, _bids(spec.id), seq=2))
    assert len(producer.mempool) == 2


def test_a_replica_still_refuses_a_block_carrying_a_settle_with_a_bad_bid() -> None:
    # A coordinator that put one in its block anyway: every replica checks each Bid.
    owner = key("owner")
    producer, [job] = _escrowed([owner])
    state = producer.state
    bad = _settle(owner, job, _bids(job, bad_last=True))
    block = protocol.sign(
        ledger.Block(
            height=state.height + 1,
            prev_hash=state.last_block_hash,
            producer=pub(COORD),
            state_root=bytes(32),
            txs=(bad,),
        ),
        COORD,
        CHAIN,
    )
    with pytest.raises(ledger.BlockRejected, match="signed Bid: bad signature on Bid") as info:
        ledger.apply_block(state, block.raw)
    assert isinstance(info.value.cause, ledger.BadEvidence)
    # and a good settle's block costs a replica every check: the block's, the
    # transaction's and its 64 Bids'
    good = producer.submit(_settle(owner, job, _bids(job)))
    commit = next(e for e in producer.tick(2 * INTERVAL_MS) if isinstance(e, ledger.Commit))
    assert commit.block.message.txs == (good.raw,)
    with counting_checks() as checks:
        after = ledger.apply_block(state, commit.block.raw)
    assert checks[0] == 1 + 1 + 64
    assert after.root == producer.state.root


def test_every_kind_carrying_signed_messages_is_checked_at_admission() -> None:
    owner, provider = key("owner"), key("provider")
    producer, [job, _] = _escrowed([owner, provider])
    h = producer.state.height
    # a claim whose Award's signature is bad (the sender is funded: before, only the
    # claim rule at block time checked it)
    award_raw = award(owner, provider, 1, job)
    award_raw = award_raw[:-1] + bytes([award_raw[-1] ^ 1])
    claim = tx.claim(
        provider,
        CHAIN,
        1,
        job_id=job,
        award=award_raw,
        receipt=receipt(owner, provider, job, key=RECEIPT_KEY),
        unseal_key=RECEIPT_KEY,
        expiry_height=h + 30,
    )
    with pytest.raises(ledger.MalformedTransaction, match="bad signature on Award"):
        producer.submit(claim.raw)
    # a lock carrying another's JobSpec
    spec = small_spec(owner, 5)
    lock = tx.lock(
        provider,
        CHAIN,
        1,
        job_id=spec.id,
        amount=1,
        claim_height=500,
        escrow_expiry=600,
        max_per_payee=1,
        max_payees=1,
        spec=spec.raw,
        expiry_height=h + 30,
    )
    with pytest.raises(ledger.MalformedTransaction, match="sender's own signed JobSpec"):
        producer.submit(lock.raw)
    # a slash whose evidence is not the offender's contradicting itself
    slash = tx.slash(
        COORD,
        CHAIN,
        0,
        offender=pub(provider),
        amount=1,
        reason="conflicting_results",
        evidence=[result(provider, b"a", job), result(owner, b"b", job)],
        expiry_height=h + 30,
    )
    with pytest.raises(ledger.MalformedTransaction, match="conflicting_results needs"):
        producer.submit(slash.raw)
    assert len(producer.mempool) == 0


def test_verified_messages_are_remembered_up_to_a_bound_and_never_a_failed_one() -> None:
    known = ledger.VerifiedMessages(limit=2)
    raws = [bid(p, 1) for p in PAYEES[:3]]
    for raw in raws:
        known.decode(raw, CHAIN, protocol.Bid)
    assert known.checks == 3 and len(known) == 2
    known.decode(raws[2], CHAIN, protocol.Bid)  # remembered
    known.decode(raws[0], CHAIN, protocol.Bid)  # forgotten (the oldest): checked again
    assert known.checks == 4
    bad = raws[1][:-1] + bytes([raws[1][-1] ^ 1])
    for _ in range(2):
        with pytest.raises(protocol.ProtocolError, match="bad signature"):
            known.decode(bad, CHAIN, protocol.Bid)
    assert known.checks == 6
    # remembered bytes are still decoded as what they are, on their chain only
    with pytest.raises(protocol.ProtocolError):
        known.decode(raws[0], CHAIN, protocol.Receipt)
    with pytest.raises(protocol.ProtocolError):
        known.decode(raws[0], "another-chain", protocol.Bid)


def test_a_bad_bid_settle_signed_anew_every_block_costs_its_own_check_alone() -> None:
    # The brief's attack: the same payload, signed anew (a new id) for each block.
    owners = [key(f"attacker-{i}") for i in range(4)]
    producer, jobs = _escrowed(owners)
    bids = [_bids(job, bad_last=True) for job in jobs]
    now = 2 * INTERVAL_MS
    per_round = []
    for rnd in range(3):
        with counting_checks() as checks:
            for owner, job, b in zip(owners, jobs, bids, strict=True):
                with pytest.raises(ledger.MalformedTransaction, match="bad signature on Bid"):
                    producer.submit(_settle(owner, job, b, expiry=900 + rnd))
            producer.tick(now)
        now += INTERVAL_MS
        per_round.append(checks[0])
    # the first time: each settle's own signature and its Bids up to the bad one (sorted
    # by provider); then its own signature alone
    assert per_round[0] > len(owners) * 2
    assert per_round[1:] == [len(owners), len(owners)]
    assert len(producer.mempool) == 0
