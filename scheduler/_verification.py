"""Verification: which replicas' outputs agree, and whether that settles the job.

Outputs are compared by an injected pure function (the sandbox supplies the real one: exact
commitment equality within one determinism class, rtol/atol across classes). Grouping is
greedy in replica order, so it is deterministic even for a comparison that is not
transitive (tolerances).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from protocol import VerificationPolicy

from ._effects import Output

Compare = Callable[[Output, Output, VerificationPolicy], bool]
#: The output commitment of delivered output bytes, or ``None`` when they do not decode.
CommitmentOf = Callable[[bytes], bytes | None]


class VerdictStatus(StrEnum):
    """What the outputs delivered so far decide (see :class:`Verdict`)."""

    VERIFIED = "verified"
    TOO_FEW = "too_few"
    DISAGREE = "disagree"


def slashable_class(determinism_class: str) -> bool:
    """Whether outputs of ``determinism_class`` (``<runtime-version>/<device>/<isa>/<opt>``)
    are proven to agree run after run, so that a provider outvoted in it may be slashed:
    ONNX Runtime on a CPU. Not a TorchScript run (a program: one drawing a random bit got
    honest providers slashed, review round 76, R76-1), nor a GPU run (every CUDA run is
    one class whatever the GPU model, whose kernels may give other bits: round 77, F3);
    those are attested against only."""
    parts = determinism_class.split("/")
    return len(parts) == 4 and parts[0].startswith("ort-") and parts[1] == "cpu"


def commitments_equal(a: Output, b: Output, policy: VerificationPolicy) -> bool:
    """The simplest comparison: equal output commitments (what ``exact`` mode means within
    one determinism class)."""
    return a.commitment == b.commitment


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of comparing the outputs delivered so far.

    ``status``: ``verified`` when a known answer matched, or a group of at least ``required``
    agreeing outputs holds a strict majority; ``too_few`` when everything delivered agrees
    but there is not yet enough of it; ``disagree`` otherwise. ``accepted`` are the replicas
    of the winning group (or, for ``too_few``, of the one group), ``rejected`` the others.
    """

    status: VerdictStatus
    accepted: tuple[int, ...]
    rejected: tuple[int, ...]
    reference: Output | None


def judge(
    outputs: Sequence[tuple[int, Output]],
    *,
    required: int,
    policy: VerificationPolicy,
    compare: Compare,
    known: Output | None = None,
) -> Verdict:
    """Compare ``(replica, output)`` pairs and decide (see :class:`Verdict`)."""
    if known is not None:
        matching = tuple(r for r, o in outputs if compare(known, o, policy))
        wrong = tuple(r for r, o in outputs if r not in matching)
        if matching:
            return Verdict(VerdictStatus.VERIFIED, matching, wrong, known)
        status = VerdictStatus.DISAGREE if wrong else VerdictStatus.TOO_FEW
        return Verdict(status, (), wrong, None)
    groups: list[tuple[Output, list[int]]] = []
    for replica, out in outputs:
        for ref, members in groups:
            if compare(ref, out, policy):
                members.append(replica)
                break
        else:
            groups.append((out, [replica]))
    if not groups:
        return Verdict(VerdictStatus.TOO_FEW, (), (), None)
    # Largest group; ties keep the earliest (they are never a majority anyway).
    ref, best = max(groups, key=lambda g: len(g[1]))
    others = tuple(r for _, m in groups if m is not best for r in m)
    if len(best) >= required and 2 * len(best) > len(outputs):
        return Verdict(VerdictStatus.VERIFIED, tuple(best), others, ref)
    if len(groups) == 1:
        return Verdict(VerdictStatus.TOO_FEW, tuple(best), (), ref)
    return Verdict(VerdictStatus.DISAGREE, (), (), None)
