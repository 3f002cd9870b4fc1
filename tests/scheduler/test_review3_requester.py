"""Round-3 review mends on the requester's side (issue 14, findings V1, F7 and F6).

- V1: a bid's determinism class is the bidder's word. Two newcomer keys bidding the lowest
  price in a class of their own made that class the exact job's anchor, which filtered the
  established provider's bid out of the job: no probation replica (no trusted run under
  adaptive replication), and their matching wrong output was verified and paid. Likewise
  three newcomer bids closed the window (``redundancy + 1`` answers) before the
  established provider's bid came. An established provider's bid inside the window is now
  always in the job.
- F7: a node's own bid on its own job is ignored (the ledger never lets an escrow pay its
  owner).
- F6: an outvoted loser's attestation asks for a slash report only with a slash
  (``slash_outvoted``, or a known answer contradicted).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import protocol
from protocol import (
    Bid,
    InputRef,
    JobSpec,
    Requirements,
    Result,
    Unseal,
    Usage,
    VerificationPolicy,
    content_hash,
    key_hash,
    seal_output,
    sign,
)
from scheduler import Attest, Requester, RequesterConfig, Send, Slash, TimerKey, TimerKind
from scheduler._pricing import NEWCOMER, Reputation
from scheduler._requester_settle import punish
from scheduler._verification import Verdict, VerdictStatus

from ..keys import key, pub

CHAIN = "review3"
HONEST = "ort-1.32.0/cpu/avx2/extended"
MADE_UP = "sybil/made-up/class"
RIGHT, WRONG = b"right" * 20, b"WRONG" * 20


def _commit(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=32).digest()


def _spec(requester: Any, redundancy: int, nonce: int) -> JobSpec:
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
        max_price=50_000,
        redundancy=redundancy,
        max_retries=3,
        verification=VerificationPolicy(mode="exact", rtol_e9=0, atol_e9=0, spot_check_permille=0),
        created_ms=0,
        bid_window_ms=1_000,
        deadline_ms=600_000,
        escrow_expiry_height=500,
    )


@dataclass
class _Market:
    """One requester, one established provider (``veteran``: 50 settled jobs, trusted
    under adaptive replication) and newcomer keys; the newcomers' outputs are wrong."""

    replication: str = "fixed"
    names: tuple[str, ...] = ("veteran", "sybil1", "sybil2")
    redundancy: int = 2
    requester: Any = field(default_factory=lambda: key("review3-requester"))
    awards: dict[bytes, protocol.Award] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.keys = {n: key(f"review3-{n}") for n in self.names}
        self.who = {pub(k): n for n, k in self.keys.items()}
        veterans = (pub(key("review3-veteran")), pub(key("review3-veteran2")))

        def reputation(p: bytes) -> Reputation:
            if p in veterans:
                return Reputation(score_permille=950, settled_jobs=50, stake=10**7)
            return NEWCOMER

        self.req = Requester(
            RequesterConfig(
                key=self.requester,
                chain_id=CHAIN,
                commitment=_commit,
                reputation=reputation,
                replication=self.replication,  # type: ignore[arg-type]
                audit_permille=0,
            )
        )
        self.req.block(10, 0)
        spec = _spec(self.requester, self.redundancy, nonce=len(self.names))
        self.job_id, _ = self.req.submit(spec, 0, providers=[pub(k) for k in self.keys.values()])
        self.req.escrow_locked(self.job_id, 5)

    def bid(self, name: str, price: int, cls: str, now_ms: int) -> list[Any]:
        k = self.keys[name]
        bid = Bid(
            job_id=self.job_id,
            provider=pub(k),
            price=price,
            est_finish_ms=5_000,
            determinism_class=cls,
            bench_score=1_000,
            expires_ms=60_000,
        )
        effects = self.req.receive(sign(bid, k, CHAIN).raw, now_ms)
        self._note_awards(effects)
        return effects

    def window_ends(self) -> None:
        key = TimerKey(TimerKind.BIDS, self.job_id)
        self._note_awards(self.req.timer(key, 1_000))

    def _note_awards(self, effects: list[Any]) -> None:
        for e in effects:
            if isinstance(e, Send) and isinstance(e.message.message, protocol.Award):
                self.awards[e.message.message.provider] = e.message.message

    def awarded(self) -> list[str]:
        return sorted(self.who[p] for p in self.awards)

    def deliver_all(self, classes: dict[str, str]) -> None:
        """Every awarded provider delivers: the veteran the right output, the newcomers
        the same wrong one (in the class they bid), and hands over its key."""
        keys: dict[str, bytes] = {}
        results = {}
        for n in self.names:
            k = self.keys[n]
            if pub(k) not in self.awards:
                continue
            out = RIGHT if n == "veteran" else WRONG
            keys[n] = bytes([len(keys) + 1]) * 32
            sealed = seal_output(keys[n], out)
            res = Result(
                job_id=self.job_id,
                provider=pub(k),
                replica=self.awards[pub(k)].replica,
                outcome="ok",
                message="",
                output_commitment=_commit(out),
                output_hash=content_hash(sealed),
                output_size=len(sealed),
                key_hash=key_hash(keys[n]),
                determinism_class=classes[n],
                usage=Usage(cpu_ms=1, wall_ms=1, peak_memory_kb=1, gpu_ms=0),
                finished_ms=100,
            )
            results[n] = sign(res, k, CHAIN)
            self._note_awards(self.req.receive(results[n].raw, 100, output=sealed))
        for n, res in results.items():
            k = self.keys[n]
            unseal = Unseal(
                job_id=self.job_id,
                provider=pub(k),
                replica=res.message.replica,
                result_hash=res.id,
                key=keys[n],
            )
            self._note_awards(self.req.receive(sign(unseal, k, CHAIN).raw, 200))

    def wrong_verified(self) -> bool:
        done = self.req.job(self.job_id).done
        return done is not None and done.output is not None and done.output.data == WRONG


def test_sybils_bidding_a_made_up_class_cannot_filter_the_established_provider_out() -> None:
    m = _Market()
    m.bid("veteran", 1_000, HONEST, 10)
    m.bid("sybil1", 1, MADE_UP, 11)
    m.bid("sybil2", 1, MADE_UP, 12)
    # The job runs in the established provider's class: the made-up class is not
    # comparable with it, so its bids are no candidates (before: awarded to the two sybils).
    assert "veteran" in m.awarded()
    m.deliver_all({"veteran": HONEST, "sybil1": MADE_UP, "sybil2": MADE_UP})
    assert not m.wrong_verified()
    done = m.req.job(m.job_id).done
    assert done is None or not any(m.who[p.provider].startswith("sybil") for p in done.paid)


def test_sybils_in_the_honest_class_still_meet_the_probation_replica() -> None:
    m = _Market()
    m.bid("veteran", 1_000, HONEST, 10)
    m.bid("sybil1", 1, HONEST, 11)
    m.bid("sybil2", 1, HONEST, 12)
    assert "veteran" in m.awarded()
    m.deliver_all({"veteran": HONEST, "sybil1": HONEST, "sybil2": HONEST})
    assert not m.wrong_verified()


def test_under_adaptive_replication_a_made_up_class_cannot_hide_the_trusted_bid() -> None:
    m = _Market(replication="adaptive")
    m.bid("sybil1", 1, MADE_UP, 6)
    m.bid("sybil2", 1, MADE_UP, 7)
    m.bid("veteran", 1_000, HONEST, 10)  # every named provider answered: window over
    assert m.awarded() == ["veteran"]  # the trusted run (before: the two sybils)
    m.deliver_all({"veteran": HONEST, "sybil1": MADE_UP, "sybil2": MADE_UP})
    assert not m.wrong_verified()
    done = m.req.job(m.job_id).done
    assert done is not None and done.output is not None and done.output.data == RIGHT


def test_newcomer_bids_do_not_close_the_window_before_an_established_bid_inside_it() -> None:
    m = _Market(names=("veteran", "sybil1", "sybil2", "sybil3"))
    for i, n in enumerate(("sybil1", "sybil2", "sybil3")):
        m.bid(n, 900, HONEST, 6 + i)
    # redundancy + 1 newcomer bids, none past probation: the window stays open (before:
    # closed at once and awarded to two sybils).
    assert m.awarded() == []
    m.bid("veteran", 500, HONEST, 50)  # inside the 1,000 ms window
    assert "veteran" in m.awarded()
    m.deliver_all(dict.fromkeys(m.names, HONEST))
    assert not m.wrong_verified()


def test_with_two_established_bids_in_hand_the_window_still_closes_early() -> None:
    # Round 6 (R6-7): at redundancy 2 one established bid no longer ends the window early
    # (one staked key and one free key answering first took the job); two do.
    m = _Market(names=("veteran", "veteran2", "sybil1", "sybil2", "sybil3"))
    m.bid("veteran", 500, HONEST, 6)
    m.bid("sybil1", 900, HONEST, 7)
    assert m.awarded() == []  # one established bid in hand: the window stays open
    m.bid("veteran2", 600, HONEST, 8)
    assert m.awarded() == ["veteran", "veteran2"]  # two established, escrow locked


def test_a_requester_never_awards_its_own_bid() -> None:
    # Its own provider is among those the lookup found, and bids the lowest price.
    m = _Market(names=("me", "other"), redundancy=1, requester=key("review3-me"))
    m.bid("me", 1, HONEST, 6)
    m.bid("other", 1_000, HONEST, 7)
    assert m.awarded() == ["other"]  # before: ["me"], a replica that can never be paid


def test_an_own_key_in_the_lookup_is_not_waited_for() -> None:
    m = _Market(names=("me", "other"), redundancy=1, requester=key("review3-me"))
    assert m.req.job(m.job_id).providers == (pub(m.keys["other"]),)
    m.bid("other", 1_000, HONEST, 7)  # every other named provider answered
    assert m.awarded() == ["other"]


def test_a_lookup_filled_with_fresh_keys_does_not_close_the_window_before_a_topic_bid() -> None:
    # Round 4: the lookup keeps the records of the smallest keys, and twenty such keys
    # take a fraction of a second to make. Named, they all bid at once; "every named
    # provider answered" closed the window before the established provider's bid came
    # from the topic, and two sybils ran the job and were paid for their wrong output.
    sybils = tuple(f"sybil{i}" for i in range(1, 21))
    m = _Market(names=("veteran", *sybils))
    # The lookup named the sybils only (the veteran's record sorted after theirs).
    m.req.job(m.job_id).providers = tuple(pub(m.keys[n]) for n in sybils)
    for i, n in enumerate(sybils):
        m.bid(n, 900, HONEST, 6 + i)
    assert m.awarded() == []  # every named provider answered, all newcomers: wait
    m.bid("veteran", 500, HONEST, 60)  # from the topic, inside the 1,000 ms window
    m.window_ends()
    assert "veteran" in m.awarded()
    m.deliver_all(dict.fromkeys(m.names, HONEST))
    assert not m.wrong_verified()


def test_newcomers_named_alone_and_all_answered_are_awarded_at_once() -> None:
    # Three named (fewer than ``direct_only_below``): the announcement went to them alone,
    # so no other bid can come and waiting would bring nothing.
    m = _Market(names=("sybil1", "sybil2", "sybil3"))
    for i, n in enumerate(m.names):
        m.bid(n, 900, HONEST, 6 + i)
    assert len(m.awarded()) == 2


def _outvoted(slash_outvoted: bool, known: bool, runtime: str = "onnx") -> list[Any]:
    """``punish`` of one loser outvoted by two winners."""
    w1, w2, loser = key("review3-w1"), key("review3-w2"), key("review3-loser")
    job_id = bytes([9]) * 32

    def res(k: Any, c: bytes) -> Any:
        r = Result(
            job_id=job_id,
            provider=pub(k),
            replica=0,
            outcome="ok",
            message="",
            output_commitment=c,
            output_hash=bytes(32),
            output_size=100,
            key_hash=bytes([1]) * 32,
            determinism_class=HONEST,
            usage=Usage(cpu_ms=1, wall_ms=1, peak_memory_kb=1, gpu_ms=0),
            finished_ms=1,
        )
        return sign(r, k, CHAIN)

    def rep(k: Any, c: bytes) -> Any:
        return SimpleNamespace(result=res(k, c), provider=pub(k))

    cfg = RequesterConfig(
        key=key("review3-requester"),
        chain_id=CHAIN,
        commitment=_commit,
        slash_outvoted=slash_outvoted,
    )
    answer = SimpleNamespace(commitment=b"A" * 32, determinism_class=HONEST)
    job = SimpleNamespace(
        id=job_id, known=answer if known else None, spec=SimpleNamespace(runtime=runtime)
    )
    ref = SimpleNamespace(commitment=b"A" * 32)
    verdict = Verdict(VerdictStatus.VERIFIED, (0, 1), (2,), ref)  # type: ignore[arg-type]
    winners = [rep(w1, b"A" * 32), rep(w2, b"A" * 32)]
    losers = [rep(loser, b"B" * 32)]
    return punish(job, verdict, losers, winners, cfg, {}, 0)  # type: ignore[arg-type]


def test_an_outvoted_loser_is_reported_only_when_slash_outvoted_is_on() -> None:
    off = _outvoted(slash_outvoted=False, known=False)
    assert not any(isinstance(e, Slash) for e in off)
    (attest,) = [e for e in off if isinstance(e, Attest)]
    assert attest.reason == "outvoted" and not attest.report
    on = _outvoted(slash_outvoted=True, known=False)
    assert any(isinstance(e, Slash) for e in on)
    assert [e.report for e in on if isinstance(e, Attest)] == [True]
    contradicted = _outvoted(slash_outvoted=False, known=True)
    assert any(isinstance(e, Slash) for e in contradicted)
    assert [e.report for e in contradicted if isinstance(e, Attest)] == [True]


def test_an_outvoted_torchscript_run_is_attested_against_and_never_slashed() -> None:
    # Review round 76, R76-1: a program's runs are not proven to agree (one drawing a
    # random bit had honest providers outvoted and slashed their whole stake).
    for known in (False, True):
        effects = _outvoted(slash_outvoted=True, known=known, runtime="torchscript")
        assert not any(isinstance(e, Slash) for e in effects)
        assert [(e.reason, e.report) for e in effects if isinstance(e, Attest)] == [
            ("outvoted", False)
        ]


def test_only_onnx_runtime_runs_on_a_cpu_are_slashable() -> None:
    from scheduler import slashable_class

    assert slashable_class("ort-1.32.0/cpu/avx512vnni/extended")
    for other in ("torch-2.5.1/cpu/avx2/jit", "ort-1.32.0/cuda/cuda/extended", "cpu", ""):
        assert not slashable_class(other), other
