"""The evidence a slash must carry: signed Results of one job with an escrow, checked
against what the ledger itself holds (specs/ledger.md, "slash"). A coordinator checks a
report with the same rules before it signs a slash."""

from __future__ import annotations

from collections.abc import Sequence

import protocol
from protocol import ProtocolError

from . import _state
from ._draft import Draft
from ._errors import BadEvidence, EscrowError
from ._payloads import Slash
from ._state import Escrow

#: Fewest other providers whose agreeing, paid Results make a verified majority.
MIN_MAJORITY = 2


def not_outputs(results: Sequence[protocol.Result]) -> str:
    """Why ``results`` are not outputs a verdict could compare (else ""): each must be a
    run that ended ``ok`` with a commitment, and all of one determinism class (outputs
    are compared only within one). A failed run commits to nothing: counted as a wrong
    output, a requester that withheld a provider's job data (so its run "crashed") had
    it slashed on two honest providers' agreeing Results (review round 16, R16B-1)."""
    if any(r.outcome != "ok" or not any(r.output_commitment) for r in results):
        return (
            "every evidence Result must be an output (outcome ok, with a commitment): "
            "a failed run is no wrong answer"
        )
    if len({r.determinism_class for r in results}) != 1:
        return "the evidence Results must be of one determinism class (outputs compare within one)"
    return ""


def check_evidence(draft: Draft, p: Slash) -> tuple[bytes, Escrow, frozenset[bytes]]:
    """Check a slash's evidence; returns the job id, its escrow and the witnesses (the
    majority's providers of a ``failed_verification``, none for ``conflicting_results``).
    The evidence is signed Results of one job with an escrow, one at least by the
    offender, and shows either the offender contradicting itself (``conflicting_results``)
    or the offender's output outvoted by a majority the job's escrow paid
    (``failed_verification``). A job's evidence slashes each provider at most once."""
    chain = draft.genesis.chain_id
    try:
        results = [protocol.decode(ev, chain, protocol.Result).message for ev in p.evidence]
    except ProtocolError as exc:
        raise BadEvidence(f"slash evidence must be signed Results: {exc}") from None
    if not results:
        raise BadEvidence("a slash needs at least one signed Result as evidence")
    jobs = {r.job_id for r in results}
    if len(jobs) != 1:
        raise BadEvidence("every evidence Result must be for one job")
    (job_id,) = jobs
    mine = [r for r in results if r.provider == p.offender]
    others = [r for r in results if r.provider != p.offender]
    if not mine:
        raise BadEvidence("the evidence must hold a Result signed by the offender")
    e = draft.escrow(job_id)
    if e is None:
        raise BadEvidence("the evidence's job has no escrow on the ledger")
    why = not_outputs(results)
    if why:
        raise BadEvidence(why)
    if p.reason == "conflicting_results":
        if len(results) != 2 or others:
            raise BadEvidence("conflicting_results needs exactly two Results of the offender")
        a, b = results
        if a.replica != b.replica or a.output_commitment == b.output_commitment:
            raise BadEvidence(
                "conflicting_results needs two Results for one job replica with different outputs"
            )
    else:
        majority = {r.output_commitment for r in others}
        providers = {r.provider for r in others}
        if len(providers) < MIN_MAJORITY or len(majority) != 1:
            raise BadEvidence(
                f"failed_verification needs the agreeing Results of at least {MIN_MAJORITY} "
                "other providers of the job"
            )
        if any(r.output_commitment in majority for r in mine):
            raise BadEvidence("the offender's Result agrees with the majority")
        if e.is_open:
            raise BadEvidence("the job's escrow is still open: no verdict has been paid")
        if any(e.paid_to(q) == 0 for q in providers) or e.paid_to(p.offender) > 0:
            raise BadEvidence(
                "the majority must be the providers the job's escrow paid, and not the offender"
            )
    if p.offender in e.slashed:
        raise EscrowError("this job's evidence already slashed this provider; it is used once")
    if p.reason == "conflicting_results":
        return job_id, e, frozenset()
    return job_id, e, frozenset(r.provider for r in others)


def witness_bond(
    view: Draft | _state.State, witnesses: frozenset[bytes], *, released_after: int = -1
) -> int | None:
    """The least any witness holds bonded, its unbonding stake released after
    ``released_after`` included (None without witnesses): a ``failed_verification`` slash
    takes no more. A majority is whoever its requester paid, so two free keys paid by
    their own requester framed an honest veteran for its whole stake, after which free
    keys decided the jobs it had bonded (round 26, H1); now the majority must hold as much
    as it takes. Unbonding counts: a witness unstaking in the slash's block dodged an
    honest slash (round 27, I3)."""
    if not witnesses:
        return None
    return min(holding(view.account(q), released_after) for q in witnesses)


def holding(account: _state.Account, released_after: int = -1) -> int:
    """What a slash landing after height ``released_after`` can take from ``account``, and
    what it holds then as a witness: its stake and what it unbonds past that height."""
    return account.stake + sum(a for release, a in account.unbonding if release > released_after)


def strongest_witnesses(
    view: Draft | _state.State,
    escrow: Escrow,
    offender: bytes,
    evidence: Sequence[bytes],
    results: Sequence[protocol.Result],
    *,
    released_after: int,
) -> list[bytes]:
    """A ``failed_verification`` slash's evidence as a coordinator makes it from a report
    (``evidence``, decoded as ``results``): the offender's Results and, as witnesses, the
    ``MIN_MAJORITY`` others the escrow paid that hold the most past ``released_after``,
    the first Result of each, in the report's order among equals. The slash takes no more than the
    least witness holds, and a requester naming them from its own view before the close
    named a helper of the cheat whose unbonding was released right after it, or a winner
    the close never paid: either voided the slash (round 29, K1, K2). With fewer than
    ``MIN_MAJORITY`` paid, the evidence as sent (``check_evidence`` says why not)."""
    mine = [e for e, r in zip(evidence, results, strict=True) if r.provider == offender]
    paid: dict[bytes, bytes] = {}
    for e, r in zip(evidence, results, strict=True):
        if r.provider != offender and escrow.paid_to(r.provider) > 0:
            paid.setdefault(r.provider, e)
    if len(paid) < MIN_MAJORITY:
        return list(evidence)
    ranked = sorted(paid, key=lambda q: -holding(view.account(q), released_after))
    return mine + [paid[q] for q in ranked[:MIN_MAJORITY]]


def check_slash_evidence(
    state: _state.State, slash: Slash, *, released_after: int = -1
) -> int | None:
    """Raise :class:`BadEvidence` or :class:`EscrowError` if ``slash``'s evidence would not
    pass on ``state`` (the next block's evidence rules; the sender and amount are the
    caller's): a coordinator checks a report before it signs a slash the ledger would
    refuse. Returns the most it could take for its witnesses (``witness_bond``, counting
    what they unbond past ``released_after``, the height by which it lands; None without
    witnesses)."""
    _, _, witnesses = check_evidence(Draft(state, state.height + 1), slash)
    return witness_bond(state, witnesses, released_after=released_after)
