"""How the verdict compares two outputs (``scheduler/_requester_verdict._compare``), which
the mutation run left unpinned: in ``exact`` mode, within one determinism class, by
commitment alone; across classes, or in ``tolerance`` mode, by the injected comparison."""

from __future__ import annotations

from dataclasses import replace

import scheduler
from protocol import VerificationPolicy
from scheduler._requester_verdict import _compare

from ..keys import key

EXACT = VerificationPolicy(mode="exact", rtol_e9=0, atol_e9=0, spot_check_permille=0)
TOLERANT = replace(EXACT, mode="tolerance", rtol_e9=1_000, atol_e9=0)
CLASS = "ort-1.32.0/cpu/avx2/extended"


def _config(calls: list[str]) -> scheduler.RequesterConfig:
    def compare(a: scheduler.Output, b: scheduler.Output, policy: VerificationPolicy) -> bool:
        calls.append(policy.mode)
        return False  # the injected comparison: never equal

    return scheduler.RequesterConfig(
        key=key("verdict"), chain_id="aimx-test", commitment=lambda data: data[:32], compare=compare
    )


def test_exact_outputs_of_one_class_compare_by_commitment_alone() -> None:
    calls: list[str] = []
    compare = _compare(_config(calls), {})
    a = scheduler.Output(b"bytes a", b"\x01" * 32, CLASS)
    b = scheduler.Output(b"bytes b", b"\x01" * 32, CLASS)
    assert compare(a, b, EXACT)
    assert not compare(a, replace(b, commitment=b"\x02" * 32), EXACT)
    assert calls == []  # the injected comparison was not asked


def test_other_classes_and_tolerance_mode_use_the_injected_comparison() -> None:
    calls: list[str] = []
    compare = _compare(_config(calls), {})
    a = scheduler.Output(b"bytes", b"\x01" * 32, CLASS)
    other = replace(a, determinism_class="ort-1.32.0/cuda/sm90/extended")
    assert not compare(a, other, EXACT)  # same commitment, another class: not by it
    assert not compare(a, a, TOLERANT)
    assert calls == ["exact", "tolerance"]


def test_a_pair_of_outputs_is_given_to_the_injected_comparison_once() -> None:
    """Review round 59, F3: a verdict taken again for each stranger's Bid compared (and
    decoded) the same outputs again each time."""
    calls: list[str] = []
    compare = _compare(_config(calls), {})
    a = scheduler.Output(b"bytes a", b"\x01" * 32, CLASS)
    b = scheduler.Output(b"bytes b", b"\x02" * 32, CLASS)
    for _ in range(3):
        assert not compare(a, b, TOLERANT)
    assert calls == ["tolerance"]
