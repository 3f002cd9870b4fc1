"""The requester's probation and anchor rules that the mutation run left unpinned
(specs/marketplace.md, "Award order", "Fill", "Verification", "Finalise"): the probation
replica two established bidders ask for, and never one past the budget; first awards
that a newcomer may take when no established bid is usable; the class a known answer or
a trusted provider names; established outputs that tie, which a newcomer never breaks;
newcomers outvoting an established provider, which is a plain disagreement; and the
reason a job gives when it fails with probation met. Each job is the real Requester,
its providers answering by hand, message by message.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random

import nacl.signing

import protocol
import scheduler
from protocol import (
    Bid,
    JobSpec,
    NoBid,
    Result,
    Unseal,
    Usage,
    content_hash,
    key_hash,
    seal_output,
    sign,
)
from scheduler import Attest, Effect, Requester, RequesterConfig, Send, Settle, Slash, TimerKey
from scheduler import TimerKind as Kind
from scheduler._pricing import NEWCOMER, Reputation

from ..keys import key, pub
from ..ledger.helpers import job_spec

CHAIN = "h38-pins"
CLASS = "ort-1.32.0/cpu/avx2/extended"
OTHER = "ort-1.32.0/cuda/sm90/extended"
RIGHT, WRONG, ODD = b"right" * 20, b"WRONG" * 20, b"other" * 20
#: Established (past probation), not trusted: 5 settled jobs, the default stake bonded.
VETERAN = Reputation(score_permille=950, settled_jobs=5, failures=0, stake=1_000_000)
#: Trusted by adaptive replication (and established): 50 settled jobs, a clean record.
TRUSTED = Reputation(score_permille=950, settled_jobs=50, failures=0, stake=1_000_000)
#: When the job's deadline timer fires.
DEADLINE = 60_000


def _commit(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=32).digest()


def _reputation(name: str) -> Reputation:
    if name.startswith("trusted"):
        return TRUSTED
    return VETERAN if name.startswith("vet") else NEWCOMER


class _Job:
    """One exact job of a real Requester; providers named ``vet*`` are established,
    ``trusted*`` trusted (adaptive replication), any other a newcomer. Bids given before
    ``open`` wait for the end of the first window, which ``open`` brings before the escrow
    lock is confirmed, so that every first award is chosen among them."""

    def __init__(
        self,
        names: list[str],
        *,
        redundancy: int,
        max_retries: int = 3,
        known: bytes | None = None,
        adaptive: bool = False,
    ) -> None:
        self.keys = {n: key(f"h38-{n}") for n in names}
        self.who = {pub(k): n for n, k in self.keys.items()}
        me = key("h38-requester")
        self.req = Requester(
            RequesterConfig(
                key=me,
                chain_id=CHAIN,
                commitment=_commit,
                reputation=lambda p: _reputation(self.who.get(p, "")),
                rng=random.Random(38),
                replication="adaptive" if adaptive else "fixed",
                audit_permille=0,  # adaptive: a trusted provider's job is never audited
            )
        )
        self.req.block(10, 0)
        answer = None if known is None else scheduler.Output(known, _commit(known), CLASS)
        spec = _spec(me, redundancy, max_retries)
        named = [pub(k) for k in self.keys.values()]
        self.job_id, effects = self.req.submit(spec, 0, providers=named, known_answer=answer)
        self.effects: list[Effect] = list(effects)
        #: Every award, in order: the provider's name.
        self.awarded: list[str] = []
        self.results: dict[str, protocol.Signed[Result]] = {}

    def _take(self, effects: list[Effect]) -> list[str]:
        self.effects += effects
        new = [
            self.who[e.message.message.provider]
            for e in effects
            if isinstance(e, Send) and isinstance(e.message.message, protocol.Award)
        ]
        self.awarded += new
        return new

    def open(self, now_ms: int) -> list[str]:
        """The first window ends, and then the escrow lock is confirmed: the first awards."""
        self._take(self.req.timer(TimerKey(Kind.BIDS, self.job_id), now_ms))
        return self._take(self.req.escrow_locked(self.job_id, now_ms))

    def bid(
        self, name: str, price: int, now_ms: int, *, cls: str = CLASS, expires_ms: int = 600_000
    ) -> list[str]:
        offer = Bid(
            job_id=self.job_id,
            provider=pub(self.keys[name]),
            price=price,
            est_finish_ms=5_000,
            determinism_class=cls,
            bench_score=1_000,
            expires_ms=expires_ms,
        )
        return self._take(self.req.receive(sign(offer, self.keys[name], CHAIN).raw, now_ms))

    def decline(self, name: str, now_ms: int) -> list[str]:
        """Its slot was taken meanwhile: a signed NoBid ``busy`` declines its award."""
        nobid = NoBid(self.job_id, pub(self.keys[name]), "busy", "slot taken", 1)
        return self._take(self.req.receive(sign(nobid, self.keys[name], CHAIN).raw, now_ms))

    def deliver(
        self, name: str, data: bytes, now_ms: int, *, sealed: bool = True, unseal: bool = True
    ) -> list[str]:
        """``name``'s Result for its latest award, with its sealed bytes (``sealed``) and
        then its key at once (``unseal``: no receipt awaited)."""
        k = self.keys[name]
        replica = max(i for i, r in enumerate(self.job().replicas) if r.provider == pub(k))
        seal_key = content_hash(b"seal" + pub(k))
        blob = seal_output(seal_key, data)
        result = Result(
            job_id=self.job_id,
            provider=pub(k),
            replica=replica,
            outcome="ok",
            message="",
            output_commitment=_commit(data),
            output_hash=content_hash(blob),
            output_size=len(blob),
            key_hash=key_hash(seal_key),
            determinism_class=self.job().replicas[replica].determinism_class,
            usage=Usage(cpu_ms=1, wall_ms=1, peak_memory_kb=1, gpu_ms=0),
            finished_ms=now_ms,
        )
        signed = sign(result, k, CHAIN)
        self.results[name] = signed
        new = self._take(self.req.receive(signed.raw, now_ms, output=blob if sealed else None))
        if unseal:
            opening = Unseal(self.job_id, pub(k), replica, signed.id, seal_key)
            new += self._take(self.req.receive(sign(opening, k, CHAIN).raw, now_ms + 1))
        return new

    def send_key(self, name: str, now_ms: int) -> list[str]:
        """``name`` sends the key of the Result it delivered sealed."""
        k, signed = self.keys[name], self.results[name]
        seal_key = content_hash(b"seal" + pub(k))
        opening = Unseal(self.job_id, pub(k), signed.message.replica, signed.id, seal_key)
        return self._take(self.req.receive(sign(opening, k, CHAIN).raw, now_ms))

    def timer(self, kind: Kind, now_ms: int) -> list[str]:
        return self._take(self.req.timer(TimerKey(kind, self.job_id), now_ms))

    def job(self) -> scheduler.RequesterJob:
        return self.req.job(self.job_id)

    def done(self) -> scheduler.JobDone | None:
        return self.job().done

    def paid(self) -> set[str]:
        done = self.done()
        return set() if done is None else {self.who[p.provider] for p in done.paid}

    def attested(self) -> set[str]:
        return {self.who[e.subject] for e in self.effects if isinstance(e, Attest)}

    def slashed(self) -> set[str]:
        return {self.who[e.provider] for e in self.effects if isinstance(e, Slash)}

    def settled(self) -> bool:
        return any(isinstance(e, Settle) for e in self.effects)


def _spec(requester: nacl.signing.SigningKey, redundancy: int, max_retries: int) -> JobSpec:
    base = job_spec(requester, b"h38").message
    return dataclasses.replace(
        base,
        model_size=2048,
        requirements=dataclasses.replace(
            base.requirements, min_memory_mb=512, capability_class="onnx.cpu.m8"
        ),
        max_price=5_000,
        redundancy=redundancy,
        max_retries=max_retries,
        created_ms=0,
        bid_window_ms=1_000,
        deadline_ms=DEADLINE,
        escrow_expiry_height=500,
    )


# --- the probation replica (specs/marketplace.md, "Fill") --------------------------------


def test_two_established_bidders_get_a_probation_replica_beside_one_veteran_and_a_newcomer() -> (
    None
):
    # Two established providers bid at redundancy 2: an agreement needs two of their
    # outputs, so the best two bids (a newcomer, one veteran) get the second veteran beside
    # them (mutation run: "two" when exactly two bid went unnoticed).
    j = _Job(["new1", "vet1", "vet2"], redundancy=2)
    j.bid("new1", 500, 5)
    j.bid("vet1", 1_000, 6)
    j.bid("vet2", 1_100, 7)
    assert j.open(1_000) == ["new1", "vet1", "vet2"]
    # The probation replica declines; no other established provider bids. The newcomer and
    # the one veteran agree: one established output is not enough, nobody is paid.
    assert j.decline("vet2", 1_100) == []
    j.deliver("new1", WRONG, 1_200)
    j.deliver("vet1", WRONG, 1_300)
    assert j.done() is None
    j.timer(Kind.DEADLINE, DEADLINE)
    done = j.done()
    assert done is not None and done.status == "unverified" and done.paid == ()
    assert "only 1 of them from an established provider" in done.reason
    assert "nobody is paid" in done.reason
    assert not j.settled()


def test_no_probation_replica_past_the_budget_so_a_late_bid_never_ends_the_job() -> None:
    # Redundancy 1, no retries, newcomers only: the budget is one award, and no "next bid"
    # replica is counted beyond it (mutation run: `n < job.budget` as `<=` went unnoticed).
    # A bid arriving while the verified winner's key is on its way changes nothing.
    j = _Job(["new1", "new2", "new3"], redundancy=1, max_retries=0)
    j.bid("new1", 500, 5)
    j.bid("new2", 600, 6)
    assert j.open(1_000) == ["new1"]
    j.deliver("new1", RIGHT, 1_200, unseal=False)  # its sealed receipt goes; key awaited
    assert j.done() is None
    assert j.bid("new3", 400, 1_300) == []
    assert j.done() is None  # still waiting for the winner's key, not failed
    j.send_key("new1", 1_400)
    done = j.done()
    assert done is not None and done.status == "verified"
    assert done.output is not None and done.output.data == RIGHT
    assert j.paid() == {"new1"}
    assert j.awarded == ["new1"]


# --- who may take an award (specs/marketplace.md, "Fill", "Verification") ----------------


def test_a_newcomer_takes_a_first_award_when_the_established_bids_expired() -> None:
    # The two established bids expire before the window ends: no award, announced again.
    # Nothing was awarded yet, so no established replica is missing: the first awards are
    # the best candidates, a newcomer's too (mutation run: `veterans_short`'s "awards were
    # made" went unnoticed). From then on the job needs established outputs, and an
    # established bid is awarded first.
    j = _Job(["vet1", "vet2", "new1", "new2"], redundancy=2)
    j.bid("vet1", 1_000, 5, expires_ms=500)
    j.bid("vet2", 1_100, 6, expires_ms=500)
    assert j.open(1_000) == []
    assert j.job().phase == "collecting"  # announced again
    j.bid("new1", 500, 1_500)
    assert j.timer(Kind.BIDS, 3_000) == ["new1"]
    j.bid("new2", 400, 3_100)  # cheaper than any, but a newcomer's
    assert j.bid("vet1", 1_000, 3_200) == ["vet1"]
    assert j.awarded == ["new1", "vet1"]


def test_a_job_nobody_was_awarded_does_not_blame_a_failed_established_replica() -> None:
    # The established bids expired and nobody else bid: the job fails for want of bids;
    # no established provider "failed or declined" (mutation run, as above).
    j = _Job(["vet1", "vet2"], redundancy=2)
    j.bid("vet1", 1_000, 5, expires_ms=500)
    j.bid("vet2", 1_100, 6, expires_ms=500)
    assert j.open(1_000) == []
    j.timer(Kind.DEADLINE, DEADLINE)
    done = j.done()
    assert done is not None and done.status == "failed" and done.paid == ()
    assert j.awarded == []
    assert done.reason.startswith("no bids")
    assert "established" not in done.reason and "declined" not in done.reason


def test_established_outputs_that_tie_are_broken_by_another_veteran_never_a_newcomer() -> None:
    # One established provider bid at first (an agreement needs one established output);
    # a second joins after a disagreement and agrees with the newcomer. The two established
    # outputs disagree: only theirs count, the newcomer never tips their tie (mutation
    # run: judging them as a plain majority went unnoticed). A third veteran breaks it.
    j = _Job(["new1", "vet1", "vet2", "new2", "vet3"], redundancy=2)
    j.bid("new1", 500, 5)
    j.bid("vet1", 1_000, 6)
    assert j.open(1_000) == ["new1", "vet1"]
    j.bid("vet2", 1_100, 1_100)  # a spare, after the first awards
    j.deliver("new1", RIGHT, 1_200)
    assert j.deliver("vet1", ODD, 1_300) == ["vet2"]  # a disagreement: one more replica
    j.deliver("vet2", RIGHT, 1_400)  # 2 to 1, but 1 to 1 among established outputs
    assert j.done() is None and j.paid() == set()
    assert j.attested() == set() and j.slashed() == set() and not j.settled()
    # A newcomer's bid, cheaper than any, is not awarded: its output could decide nothing.
    assert j.bid("new2", 300, 1_500) == []
    assert j.timer(Kind.BIDS, 10_000) == []  # announced again
    j.bid("vet3", 1_200, 10_100)
    assert j.timer(Kind.BIDS, 20_000) == ["vet3"]
    j.deliver("vet3", RIGHT, 20_100)
    done = j.done()
    assert done is not None and done.status == "verified"
    assert done.output is not None and done.output.data == RIGHT
    assert j.paid() == {"new1", "vet2", "vet3"}
    assert j.attested() == {"vet1"} and j.slashed() == {"vet1"}  # by established outputs


def test_with_a_known_answer_a_newcomer_may_follow_two_established_wrong_outputs() -> None:
    # Probation is for jobs without a known answer: two established providers' different
    # wrong outputs do not keep the next award from a newcomer (mutation run: their split
    # counted with no probation to hold went unnoticed). The known answer decides.
    j = _Job(["vet1", "vet2", "new1"], redundancy=1, known=RIGHT)
    j.bid("vet1", 1_000, 5)
    j.bid("vet2", 1_100, 6)
    j.bid("new1", 2_000, 7)
    assert j.open(1_000) == ["vet1"]
    assert j.deliver("vet1", WRONG, 1_100) == ["vet2"]
    assert j.deliver("vet2", ODD, 1_200) == ["new1"]
    j.deliver("new1", RIGHT, 1_300)
    done = j.done()
    assert done is not None and done.status == "verified"
    assert "known answer" in done.reason
    assert j.paid() == {"new1"}
    assert j.attested() == {"vet1", "vet2"}


def test_with_a_known_answer_two_established_bidders_ask_for_no_probation_replica() -> None:
    # The known answer decides, not established outputs: a job of redundancy 2 awards its
    # two best bids, a newcomer's among them, and no third replica to hold it (mutation
    # run: probation counted for a job with a known answer went unnoticed).
    j = _Job(["vet1", "vet2", "new1"], redundancy=2, known=RIGHT)
    j.bid("vet1", 1_000, 5)
    j.bid("new1", 600, 6)  # the cheapest, weighed as a newcomer's
    j.bid("vet2", 1_100, 7)
    assert sorted(j.open(1_000)) == ["new1", "vet1"]
    j.deliver("vet1", RIGHT, 1_100)
    j.deliver("new1", RIGHT, 1_200)
    done = j.done()
    assert done is not None and done.status == "verified"
    assert j.paid() == {"vet1", "new1"}


def test_established_outputs_that_split_verify_only_with_the_redundancy_in_agreement() -> None:
    # Redundancy 3: two established outputs agree and a third differs. Their majority
    # decides who is right, but two agreeing results do not verify a job that asked for
    # three: one more replica runs (mutation run: `_by_veterans` verifying short of the
    # redundancy went unnoticed).
    j = _Job(["vet1", "vet2", "vet3", "vet4"], redundancy=3)
    for i, name in enumerate(("vet1", "vet2", "vet3", "vet4")):
        j.bid(name, 1_000 + 100 * i, 5 + i)
    assert j.open(1_000) == ["vet1", "vet2", "vet3"]
    assert j.deliver("vet1", RIGHT, 1_100) == []
    assert j.deliver("vet2", RIGHT, 1_200) == []
    assert j.deliver("vet3", WRONG, 1_300) == ["vet4"]
    assert j.done() is None
    j.deliver("vet4", RIGHT, 1_400)
    done = j.done()
    assert done is not None and done.status == "verified"
    assert j.paid() == {"vet1", "vet2", "vet4"}
    assert j.attested() == {"vet3"}


# --- the anchor class (specs/marketplace.md, "Award order") ------------------------------


def test_a_known_answer_names_the_class_even_against_a_cheaper_bid() -> None:
    # The cheapest bid is in another class than the known answer's: the job runs in the
    # answer's class (mutation run: the known answer's class went unnoticed).
    j = _Job(["new1", "new2"], redundancy=1, known=RIGHT)
    j.bid("new1", 300, 5, cls=OTHER)
    j.bid("new2", 900, 6)
    assert j.open(1_000) == ["new2"]
    j.deliver("new2", RIGHT, 1_100)
    done = j.done()
    assert done is not None and done.status == "verified" and j.paid() == {"new2"}


def test_adaptive_a_trusted_bid_names_the_class_over_more_established_bids() -> None:
    # Adaptive replication: the best trusted bid names the class and runs the job alone,
    # though two established (not trusted) providers bid in another class (mutation run:
    # the trusted provider's class went unnoticed).
    j = _Job(["trusted1", "vet1", "vet2"], redundancy=2, adaptive=True)
    j.bid("trusted1", 1_500, 5)
    j.bid("vet1", 1_000, 6, cls=OTHER)
    j.bid("vet2", 1_100, 7, cls=OTHER)
    assert j.open(1_000) == ["trusted1"]
    j.deliver("trusted1", RIGHT, 1_100)
    done = j.done()
    assert done is not None and done.status == "verified" and j.paid() == {"trusted1"}


# --- how a probation job ends (specs/marketplace.md, "Finalise") -------------------------


def test_newcomers_outvoting_the_veteran_end_in_a_plain_disagreement() -> None:
    # Two newcomers agree against the established provider: not verified (a newcomer never
    # outvotes it), and at the end a plain disagreement, failed with no output, not
    # "probation unmet" handing the newcomers' output over (mutation run: "an established
    # output outside them" went unnoticed).
    j = _Job(["new1", "new2", "vet1"], redundancy=2)
    j.bid("new1", 500, 5)
    j.bid("new2", 600, 6)
    j.bid("vet1", 1_000, 7)
    assert j.open(1_000) == ["new1", "new2", "vet1"]  # the veteran: the probation replica
    j.deliver("new1", WRONG, 1_100)
    j.deliver("new2", WRONG, 1_200)
    j.deliver("vet1", RIGHT, 1_300)
    assert j.done() is None and j.attested() == set()
    j.timer(Kind.DEADLINE, DEADLINE)
    done = j.done()
    assert done is not None and done.status == "failed" and done.output is None
    assert done.reason.startswith("results disagree")
    assert "probation" not in done.reason
    assert done.paid == () and not j.settled()


def test_a_veteran_result_whose_bytes_never_came_fails_for_that_not_for_probation() -> None:
    # The one established provider's result (its commitment alone) is all that arrived:
    # probation is met, the job fails because no output arrived, and says so (mutation
    # run: "as many established outputs as needed" as `>` went unnoticed).
    j = _Job(["new1", "vet1"], redundancy=2)
    j.bid("new1", 500, 5)
    j.bid("vet1", 1_000, 6)
    assert j.open(1_000) == ["new1", "vet1"]
    j.deliver("vet1", RIGHT, 1_100, sealed=False, unseal=False)
    assert j.decline("new1", 1_200) == []
    j.timer(Kind.DEADLINE, DEADLINE)
    done = j.done()
    assert done is not None and done.status == "failed" and done.paid == ()
    assert done.reason.startswith("1 results agree but no output arrived in time")
    assert "established" not in done.reason and "probation" not in done.reason


def test_a_newcomer_replaces_a_newcomer_while_no_established_output_is_in() -> None:
    # An established provider's replica runs; the newcomer beside it declines. No
    # established output is in yet, so none disagree: the next newcomer's bid takes the
    # place (mutation run: `_split`'s "fewer than two outputs" went unnoticed; switched
    # off, the empty comparison raised).
    j = _Job(["new1", "vet1", "new2"], redundancy=2)
    j.bid("new1", 500, 5)
    j.bid("vet1", 1_000, 6)
    assert j.open(1_000) == ["new1", "vet1"]
    assert j.bid("new2", 400, 1_100) == []  # a spare
    assert j.decline("new1", 1_200) == ["new2"]
    j.deliver("new2", RIGHT, 1_300)
    j.deliver("vet1", RIGHT, 1_400)
    done = j.done()
    assert done is not None and done.status == "verified"
    assert j.paid() == {"vet1", "new2"}


def test_established_bids_go_first_only_once_established_outputs_are_in() -> None:
    # A job needing two established outputs awards established bids first once some are
    # in and no verdict is reached (round 26, H2; newcomers after them, round 27, I2);
    # before any is in, a lost replica's place goes to the best bid as always (mutation
    # run: `veterans_stalled`'s "an established output is in" went unnoticed).
    names = ["vet1", "vet2", "vet3", "new1", "new2", "new3"]
    for outputs_in, replacement in ((False, "new3"), (True, "vet3")):
        j = _Job(names, redundancy=2)
        for i, (name, price) in enumerate(
            (("new1", 300), ("vet1", 1_000), ("vet2", 1_100), ("new2", 400), ("new3", 500))
        ):
            j.bid(name, price, 5 + i)
        j.bid("vet3", 5_000, 11)
        assert sorted(j.open(1_000)) == ["new1", "new2", "vet1", "vet2"]
        if outputs_in:
            j.deliver("vet1", RIGHT, 1_050)
        assert j.decline("new1", 1_100) == [replacement]


def test_with_one_established_output_needed_a_lost_replica_goes_to_the_best_bid() -> None:
    # Established first is for jobs needing two established outputs: with one needed (one
    # established bidder when the first awards were chosen), a lost replica's place goes
    # to the best bid, an established one that came later notwithstanding (mutation run:
    # `veterans_stalled`'s "two needed" went unnoticed).
    j = _Job(["vet1", "vet2", "new1", "new2", "new3"], redundancy=2)
    for i, (name, price) in enumerate(
        (("new1", 300), ("vet1", 1_000), ("new2", 400), ("new3", 500))
    ):
        j.bid(name, price, 5 + i)
    assert sorted(j.open(1_000)) == ["new1", "new2", "vet1"]
    j.bid("vet2", 5_000, 1_010)  # established, after the first awards, dearer
    j.deliver("vet1", RIGHT, 1_050)
    assert j.decline("new1", 1_100) == ["new3"]
