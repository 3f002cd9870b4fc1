"""The report protocol's bounds on a reporter (node/daemon/reports.py); what a coordinator
holds is tested in test_review6_reports.py (it holds nothing)."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import protocol
from node.daemon import reports as reports_module
from node.daemon.reports import Reports

from ...keys import key, pub

CHAIN = "aimx-test"
REQUESTER = key("reporter")
JOB = bytes(range(32))


def signed_result(signer: Any) -> protocol.Signed[protocol.Result]:
    """An ok Result of ``JOB`` signed by ``signer`` (evidence for reports and attestations)."""
    result = protocol.Result(
        job_id=JOB,
        provider=pub(signer),
        replica=0,
        outcome="ok",
        message="",
        output_commitment=bytes(32),
        output_hash=bytes(32),
        output_size=0,
        key_hash=bytes(32),
        determinism_class="ort-1.32.0/cpu/avx2/extended",
        usage=protocol.Usage(cpu_ms=1, wall_ms=1, peak_memory_kb=0, gpu_ms=0),
        finished_ms=1,
    )
    return protocol.sign(result, signer, CHAIN)


def _result(offender: int) -> bytes:
    return signed_result(key(f"offender-{offender}")).raw


class _Coordinator:
    """What Reports reads of a node: a ledger whose one escrow (the reporter's) stays open,
    and a spawn that only counts the tasks (each holds its report while the escrow is open)."""

    def __init__(self) -> None:
        escrow = SimpleNamespace(owner=pub(REQUESTER), slashed=frozenset(), is_open=True)
        state = SimpleNamespace(escrow=lambda job_id: escrow if job_id == JOB else None)
        self.ledger = SimpleNamespace(state=state)
        self.chain_id = CHAIN
        self.roles = ("coordinator",)
        self.spawned: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self.conduct = SimpleNamespace(misbehaved=lambda peer, why: None)

    def spawn(self, fn: Callable[..., Any], *args: Any) -> None:
        self.spawned.append((fn, args))


def test_a_reporter_remembers_a_bounded_number_of_reports(monkeypatch: Any) -> None:
    monkeypatch.setattr(reports_module, "REMEMBERED", 16)
    node = _Coordinator()
    reports = Reports(node)  # type: ignore[arg-type]
    for offender in range(100):
        reports.report(pub(key(f"offender-{offender}")), [_result(offender)])
    assert len(node.spawned) == 100
    assert len(reports._reported) == 16
