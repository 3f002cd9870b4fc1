"""Review round 10, R10-3: at a forced finalise (the settle limit) a verified winner still
withholding its key was put in the slash evidence with the paid ones. The ledger takes no
evidence naming an unpaid majority provider, so the coordinator refused the honest
requester's report, counted it as misbehaviour, and the outvoted cheat kept its stake. The
evidence is now the paid (arrived) winners' Results only.

The real :func:`scheduler._requester_settle.finalise`, checked against the real ledger.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest

import ledger
import protocol
from protocol import Award, Receipt
from scheduler import Attest, Output, Settle
from scheduler._config import RequesterConfig
from scheduler._requester_jobs import JobPhase, Replica, ReplicaState, RequesterJob
from scheduler._requester_settle import finalise

from ..keys import key, pub
from ..ledger.helpers import CHAIN, COORD, Chain, bid, job_spec, result

REQUESTER = key("r10-3 requester")
A, B, D, X = (key(f"r10-3 provider {name}") for name in "ABDX")
GOOD, BAD = b"g" * 32, b"b" * 32


@pytest.mark.parametrize("redundancy", [2, 3])
def test_a_winner_still_withholding_its_key_is_kept_out_of_the_slash_evidence(
    redundancy: int,
) -> None:
    # With redundancy 2, A and B are enough to settle: round 11, R11-5, the forced settle
    # then closed the escrow under D's claim in flight, unpaid for verified work. No
    # settle now while a winner holding a sealed receipt has not opened its output.
    c = Chain(
        ledger.State.from_genesis(ledger.make_genesis(CHAIN, [pub(COORD)], {pub(REQUESTER): 10**6}))
    )
    signed = protocol.sign(
        replace(job_spec(REQUESTER, b"r10-3").message, redundancy=redundancy), REQUESTER, CHAIN
    )
    c.ok(
        c.lock(
            REQUESTER,
            400,
            claim_at=50,
            expire_at=60,
            per_payee=100,
            payees=4,
            job=signed.id,
            spec=signed.raw,
        )
    )

    def award(p: object, i: int) -> protocol.Signed[Award]:
        msg = Award(signed.id, pub(REQUESTER), pub(p), i, 100, 10**9, bytes(32))  # type: ignore[arg-type]
        return protocol.sign(msg, REQUESTER, CHAIN)

    def receipt(p: object, i: int, unseal: bytes) -> protocol.Signed[Receipt]:
        msg = Receipt(
            job_id=signed.id,
            requester=pub(REQUESTER),
            provider=pub(p),  # type: ignore[arg-type]
            replica=i,
            result_hash=bytes(32),
            output_commitment=GOOD,
            key_hash=protocol.key_hash(unseal),
            at_once=1,
            claim_by=c.height + 4,
            received_ms=1,
        )
        return protocol.sign(msg, REQUESTER, CHAIN)

    job = RequesterJob(signed, (), None, False, phase=JobPhase.EXECUTING)
    # A and B verified, delivered and claimed (paid); D verified but withholds its key; X
    # outvoted
    for i, (p, commitment, state) in enumerate(
        [
            (A, GOOD, ReplicaState.DELIVERED),
            (B, GOOD, ReplicaState.DELIVERED),
            (D, GOOD, ReplicaState.COMMITTED),
            (X, BAD, ReplicaState.COMMITTED),
        ]
    ):
        res = protocol.decode(
            result(p, b"o", job=signed.id, replica=i, commitment=commitment), CHAIN, protocol.Result
        )
        out = Output(b"o" if state == ReplicaState.DELIVERED else b"", commitment, "x")
        job.replicas.append(
            Replica(
                i,
                pub(p),
                award(p, i),
                10**9,
                0,
                "x",
                state=state,
                result=res,
                output=out,
                bid=bid(p, 100, job=signed.id),
            )
        )
    for i, p in ((0, A), (1, B)):
        unseal = hashlib.sha256(b"%d" % i).digest()
        c.ok(
            ledger.tx.claim(
                p,
                CHAIN,
                0,
                job_id=signed.id,
                award=award(p, i).raw,
                receipt=receipt(p, i, unseal).raw,
                unseal_key=unseal,
                expiry_height=c.height + 10,
            )
        )
    d_key = hashlib.sha256(b"d").digest()
    job.replicas[2].receipt, job.replicas[2].want = receipt(D, 2, d_key), "sealed"
    config = RequesterConfig(key=REQUESTER, chain_id=CHAIN, commitment=lambda b: None)
    effects = finalise(job, 0, config, pub(REQUESTER), {}, c.height, forced=True)
    assert not any(isinstance(e, Settle) for e in effects)  # D claims; the rest refunds
    (report,) = [e for e in effects if isinstance(e, Attest) and e.report]
    assert {r.signer for r in report.evidence} == {pub(X), pub(A), pub(B)}  # not D
    c.until(60)
    c.ok(ledger.tx.refund(REQUESTER, CHAIN, 1, job_id=signed.id, expiry_height=c.height + 10))
    slash = ledger.Slash(pub(X), 1, "failed_verification", tuple(r.raw for r in report.evidence))
    ledger.check_slash_evidence(c.state, slash)  # the ledger takes it: X can be slashed
