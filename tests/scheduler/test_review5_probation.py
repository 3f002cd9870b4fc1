"""Round-5 review mend R5-3: probation that self-dealing cannot buy.

A provider was past probation with ``probation_jobs`` (3) settled jobs on the ledger, and
a settle counts whoever paid it. Two keys of one person settle jobs to each other at fee 0
(the daemon pays no fee, so a working network runs ``min_fee`` 0): 9 free transactions
made a key "established". One such key then took a default job (redundancy 1) alone, two
took a redundancy-2 job (no probation replica; the window closed on their two bids), and
their wrong output was verified and paid. Past probation now also needs
``probation_stake`` bonded (``scheduler.established``): what a known answer or an honest
majority takes when it catches the provider.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import nacl.signing

import ledger
import node.config
import protocol
import scheduler
from ledger import tx
from protocol import (
    Bid,
    InputRef,
    JobSpec,
    Requirements,
    Result,
    Signed,
    Unseal,
    Usage,
    VerificationPolicy,
    content_hash,
    key_hash,
    seal_output,
    sign,
)
from scheduler import Requester, RequesterConfig, Send, TimerKey, TimerKind, established
from scheduler._pricing import Reputation

from ..keys import key, pub

CHAIN = "review5"
HONEST = "ort-1.32.0/cpu/avx2/extended"
RIGHT, WRONG = b"right" * 20, b"WRONG" * 20
#: The veteran: a long record and the default ``probation_stake`` bonded.
VETERAN = Reputation(score_permille=950, settled_jobs=50, failures=0, stake=1_000_000)


def _commit(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=32).digest()


def _spec(
    requester: nacl.signing.SigningKey,
    redundancy: int,
    nonce: int,
    *,
    max_price: int = 50_000,
    expiry: int = 500,
) -> JobSpec:
    return JobSpec(
        requester=pub(requester),
        nonce=nonce.to_bytes(16, "big"),
        runtime="onnx",
        model_hash=bytes([0x22]) * 32,
        model_size=2048,
        inputs=(InputRef(name="x", hash=bytes([0x33]) * 32, size=512),),
        requirements=Requirements(
            device="cpu",
            execution_provider="CPUExecutionProvider",
            min_memory_mb=512,
            capability_class="onnx.cpu.m8",
        ),
        graph_opt_level="extended",
        threads=1,
        max_price=max_price,
        redundancy=redundancy,
        max_retries=3,
        verification=VerificationPolicy(mode="exact", rtol_e9=0, atol_e9=0, spot_check_permille=0),
        created_ms=0,
        bid_window_ms=1_000,
        deadline_ms=600_000,
        escrow_expiry_height=expiry,
    )


def _self_dealt(sybils: list[nacl.signing.SigningKey]) -> ledger.State:
    """The reviewer's self-dealing on the real ledger: one sybil requester key with 2
    micro-credits locks 1 for a JobSpec of its own and settles it to a sybil provider's
    Bid, three times per provider, each handing the credit back. Every transaction at fee
    0, as the daemon signs them; each in a block of its own."""
    coordinator, owner = key("review5-coordinator"), key("review5-sybil-requester")
    genesis = ledger.make_genesis(CHAIN, [pub(coordinator)], {pub(owner): 2})
    state = ledger.State.from_genesis(genesis)
    seq: dict[bytes, int] = {}

    def next_seq(signer: nacl.signing.SigningKey) -> int:
        n = seq.get(pub(signer), 0)
        seq[pub(signer)] = n + 1
        return n

    def block(signed: Signed[Any]) -> None:
        nonlocal state
        produced = ledger.produce_block(state, coordinator, [ledger.verify_tx(signed.raw, CHAIN)])
        assert produced.state.height == state.height + 1
        state = produced.state

    for round_ in range(3):
        for i, provider in enumerate(sybils):
            spec = sign(_spec(owner, 1, 1_000 + 10 * round_ + i, max_price=1), owner, CHAIN)
            h = state.height
            lock = tx.lock(
                owner,
                CHAIN,
                next_seq(owner),
                job_id=spec.id,
                amount=1,
                claim_height=h + 2,
                escrow_expiry=h + 300,
                max_per_payee=1,
                max_payees=1,
                spec=spec.raw,
                expiry_height=h + 30,
            )
            block(lock)
            offer = Bid(
                job_id=spec.id,
                provider=pub(provider),
                price=1,
                est_finish_ms=1,
                determinism_class="x",
                bench_score=1,
                expires_ms=10**9,
            )
            bid = sign(offer, provider, CHAIN)
            payouts, bids = {pub(provider): 1}, {pub(provider): bid.raw}
            settle = tx.settle(
                owner,
                CHAIN,
                next_seq(owner),
                job_id=spec.id,
                payouts=payouts,
                bids=bids,
                expiry_height=h + 30,
            )
            block(settle)
            back = tx.transfer(
                provider, CHAIN, next_seq(provider), to=pub(owner), amount=1, expiry_height=h + 30
            )
            block(back)
    assert state.fees == 0 and state.account(pub(owner)).balance == 2  # nothing spent
    return state


@dataclass
class _Market:
    """An honest requester's exact job, its lookup naming the veteran and the sybils; the
    sybils' records are what the ledger says after ``_self_dealt``, and their outputs are
    wrong. ``veteran``: the veteran's ledger record."""

    sybils: int
    veteran: Reputation = VETERAN
    probation_stake: int = 1_000_000
    awards: dict[bytes, protocol.Award] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.requester = key("review5-requester")
        self.keys = {"veteran": key("review5-veteran")}
        self.keys |= {f"sybil{i}": key(f"review5-sybil{i}") for i in range(self.sybils)}
        self.who = {pub(k): n for n, k in self.keys.items()}
        self.ledger = _self_dealt([self.keys[f"sybil{i}"] for i in range(self.sybils)])
        self.req = Requester(
            RequesterConfig(
                key=self.requester,
                chain_id=CHAIN,
                commitment=_commit,
                reputation=self.reputation,
                probation_stake=self.probation_stake,
            )
        )
        self.req.block(self.ledger.height, 0)
        spec = _spec(self.requester, self.sybils, nonce=7, expiry=self.ledger.height + 300)
        self.job_id, _ = self.req.submit(spec, 0, providers=[pub(k) for k in self.keys.values()])
        self.req.escrow_locked(self.job_id, self.ledger.height)

    def reputation(self, who: bytes) -> Reputation:
        if self.who.get(who) == "veteran":
            return self.veteran
        return Reputation(*self.ledger.provider_record(who))

    def bid(self, name: str, price: int, now_ms: int) -> None:
        k = self.keys[name]
        offer = Bid(
            job_id=self.job_id,
            provider=pub(k),
            price=price,
            est_finish_ms=5_000,
            determinism_class=HONEST,
            bench_score=1_000,
            expires_ms=60_000,
        )
        self._note(self.req.receive(sign(offer, k, CHAIN).raw, now_ms))

    def window_ends(self) -> None:
        self._note(self.req.timer(TimerKey(TimerKind.BIDS, self.job_id), 1_000))

    def _note(self, effects: list[Any]) -> None:
        for e in effects:
            if isinstance(e, Send) and isinstance(e.message.message, protocol.Award):
                self.awards[e.message.message.provider] = e.message.message

    def awarded(self) -> list[str]:
        return sorted(self.who[p] for p in self.awards)

    def deliver_all(self) -> None:
        """Every awarded provider delivers (the veteran the right output, the sybils the
        same wrong one) and hands over its key; replicas added meanwhile deliver too."""
        delivered: dict[str, tuple[Signed[Result], bytes]] = {}
        while pending := [n for n in self.keys if pub(self.keys[n]) in self.awards]:
            pending = [n for n in pending if n not in delivered]
            if not pending:
                break
            for n in pending:
                delivered[n] = self._deliver(n, len(delivered) + 1)
            for n in pending:
                res, k = delivered[n]
                unseal = Unseal(
                    job_id=self.job_id,
                    provider=res.message.provider,
                    replica=res.message.replica,
                    result_hash=res.id,
                    key=k,
                )
                self._note(self.req.receive(sign(unseal, self.keys[n], CHAIN).raw, 200))

    def _deliver(self, name: str, n: int) -> tuple[Signed[Result], bytes]:
        k = self.keys[name]
        out = RIGHT if name == "veteran" else WRONG
        seal_key = bytes([n]) * 32
        sealed = seal_output(seal_key, out)
        res = Result(
            job_id=self.job_id,
            provider=pub(k),
            replica=self.awards[pub(k)].replica,
            outcome="ok",
            message="",
            output_commitment=_commit(out),
            output_hash=content_hash(sealed),
            output_size=len(sealed),
            key_hash=key_hash(seal_key),
            determinism_class=HONEST,
            usage=Usage(cpu_ms=1, wall_ms=1, peak_memory_kb=1, gpu_ms=0),
            finished_ms=100,
        )
        signed = sign(res, k, CHAIN)
        self._note(self.req.receive(signed.raw, 100, output=sealed))
        return signed, seal_key

    def done(self) -> scheduler.JobDone | None:
        return self.req.job(self.job_id).done

    def wrong_verified(self) -> bool:
        done = self.done()
        return done is not None and done.output is not None and done.output.data == WRONG

    def sybils_paid(self) -> list[str]:
        done = self.done()
        paid = [] if done is None else [self.who[p.provider] for p in done.paid]
        return sorted(n for n in paid if n.startswith("sybil"))


def test_self_dealing_gives_a_key_its_settled_jobs_for_nothing_but_no_stake() -> None:
    # The premise: 9 fee-0 transactions, nothing spent, 3 settled jobs: what was enough.
    sybil = key("review5-sybil0")
    record = Reputation(*_self_dealt([sybil]).provider_record(pub(sybil)))
    config = RequesterConfig(key=key("review5-requester"), chain_id=CHAIN, commitment=_commit)
    assert record.settled_jobs == 3 == config.probation_jobs
    assert record.stake == 0
    assert not established(record, config)


def test_one_self_dealt_key_bidding_first_is_not_awarded_a_default_job_alone() -> None:
    m = _Market(sybils=1)
    m.bid("sybil0", 600, 5)
    # Before: the self-dealt key counted as established, so its one bid (redundancy 1,
    # escrow locked) closed the window and it ran the job alone.
    assert m.awarded() == []
    m.bid("veteran", 500, 40)  # every named provider answered: award
    assert "veteran" in m.awarded()
    m.deliver_all()
    assert not m.wrong_verified()
    assert m.sybils_paid() == []
    done = m.done()
    assert done is not None and done.output is not None and done.output.data == RIGHT


def test_a_self_dealt_key_ranked_first_on_a_default_job_gets_a_probation_replica() -> None:
    # The sybil bids far below the veteran, so it is the best bid; before, it was awarded
    # alone (1 replica) and its wrong output verified and paid.
    m = _Market(sybils=1)
    m.bid("sybil0", 10, 5)
    m.bid("veteran", 5_000, 40)
    assert m.awarded() == ["sybil0", "veteran"]  # the veteran as the probation replica
    m.deliver_all()
    assert not m.wrong_verified()
    assert m.sybils_paid() == []


def test_two_self_dealt_keys_do_not_close_a_redundancy_2_window_or_outvote_the_veteran() -> None:
    m = _Market(sybils=2)
    m.bid("sybil0", 600, 5)
    m.bid("sybil1", 600, 6)
    # Before: two bids, "one past probation", escrow locked: awarded to both at once.
    assert m.awarded() == []
    m.bid("veteran", 500, 40)  # 40 ms later, cheaper
    assert "veteran" in m.awarded()
    m.deliver_all()
    assert not m.wrong_verified()
    assert m.sybils_paid() == []


def test_two_self_dealt_keys_ranked_first_meet_the_probation_replica() -> None:
    m = _Market(sybils=2)
    m.bid("sybil0", 10, 5)
    m.bid("sybil1", 10, 6)
    m.bid("veteran", 5_000, 40)
    assert m.awarded() == ["sybil0", "sybil1", "veteran"]  # before: the two sybils alone
    m.deliver_all()
    assert not m.wrong_verified()
    assert m.sybils_paid() == []


def test_a_staked_established_provider_still_closes_the_window_early() -> None:
    # Exactly the probation thresholds: 3 settled jobs and probation_stake bonded.
    at_threshold = Reputation(score_permille=800, settled_jobs=3, stake=1_000_000)
    m = _Market(sybils=1, veteran=at_threshold)
    m.bid("veteran", 500, 5)
    assert m.awarded() == ["veteran"]  # at once: redundancy bids, one established
    m.deliver_all()
    done = m.done()
    assert done is not None and done.output is not None and done.output.data == RIGHT


def test_one_micro_credit_short_of_the_probation_stake_is_still_on_probation() -> None:
    short = Reputation(score_permille=800, settled_jobs=3, stake=999_999)
    m = _Market(sybils=1, veteran=short)
    m.bid("veteran", 500, 5)
    assert m.awarded() == []  # a newcomer's bid, announced on the topic: the window waits
    config = m.req.config
    assert not established(short, config)
    assert established(Reputation(800, 3, stake=1_000_000), config)
    assert not established(Reputation(800, 2, stake=10**9), config)


def test_a_probation_stake_of_zero_counts_settled_jobs_alone() -> None:
    m = _Market(sybils=1, probation_stake=0)
    m.bid("sybil0", 600, 5)
    assert m.awarded() == ["sybil0"]  # the rule before the mend, now only by choice


def test_the_node_setting_defaults_to_the_machines_probation_stake() -> None:
    section = node.config.NodeConfig().requester
    machine = RequesterConfig(key=key("review5-requester"), chain_id=CHAIN, commitment=_commit)
    assert section.probation_stake == machine.probation_stake == 1_000_000


def test_a_provider_one_micro_credit_short_chosen_alone_gets_a_probation_replica() -> None:
    # ``with_probation`` at the stake threshold: the cheapest bid is the only one chosen
    # (redundancy 1); short of the stake it is a newcomer, so the next bid runs beside it.
    short = Reputation(score_permille=800, settled_jobs=3, stake=999_999)
    m = _Market(sybils=1, veteran=short)
    m.bid("veteran", 10, 5)
    m.bid("sybil0", 600, 6)  # every named provider answered (announced to them alone)
    assert m.awarded() == ["sybil0", "veteran"]
    exact = Reputation(score_permille=800, settled_jobs=3, stake=1_000_000)
    m = _Market(sybils=1, veteran=exact)
    m.bid("veteran", 10, 5)
    assert m.awarded() == ["veteran"]  # established: alone, at once
