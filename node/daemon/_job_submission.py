"""Submitting a job on a requester node: the request checked (:func:`.submit.check_request`)
and against the node's state (its role, its ledger's fault, the balance not yet locked),
the spec built (:func:`.submit.build_spec`), providers looked up, the requester machine
told, and the job's record and content kept."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import ledger
import scheduler

from ._codec import Array
from ._errors import JobSubmitError, RoleMissing
from ._jobs import JobRecord
from .submit import build_spec, check_request, escrow_expiry

if TYPE_CHECKING:
    from ._node import Node


async def submit_job(
    node: Node,
    model: bytes,
    inputs: Mapping[str, Array],
    *,
    runtime: str,
    redundancy: int,
    max_retries: int,
    max_price: int | None,
    deadline_ms: int | None,
    min_memory_mb: int,
    model_name: str,
) -> bytes:
    """Escrow, sign and announce a job on ``node``; returns its id (:meth:`Node.submit_job`
    has the defaults)."""
    if node.requester is None:
        raise RoleMissing("this node is not a requester; start it with --role requester")
    await node.started.wait()
    if node.fault is not None:
        raise JobSubmitError(
            "this node takes no new jobs until its ledger can be written again "
            f"({node.fault}); free some space: it resumes by itself"
        )
    settings = node.config.requester
    price = settings.max_price if max_price is None else max_price
    ahead = settings.deadline_ms if deadline_ms is None else deadline_ms
    blobs = check_request(
        model,
        inputs,
        runtime=runtime,
        redundancy=redundancy,
        max_retries=max_retries,
        max_price=price,
        deadline_ms=ahead,
    )
    state = node.ledger.state
    budget = redundancy + max_retries
    _check_funds(node, price * budget)
    now = node.now_ms()
    deadline = now + ahead
    spec = build_spec(
        requester=node.me,
        nonce=node.rng.randbytes(16),
        runtime=runtime,
        model=model,
        inputs=blobs,
        max_price=price,
        redundancy=redundancy,
        max_retries=max_retries,
        min_memory_mb=min_memory_mb,
        created_ms=now,
        bid_window_ms=settings.bid_window_ms,
        deadline_ms=deadline,
        escrow_expiry_height=escrow_expiry(
            height=state.height,
            now_ms=now,
            deadline_ms=deadline,
            block_interval_ms=node.config.coordinator.block_interval_ms,
            slack_blocks=settings.expiry_slack_blocks,
        ),
    )
    providers = await node.providers_for(spec.requirements.capability_class)
    # Again: another submit may have been recorded while the lookup was awaited (two at
    # once both passed the check, the second answered 201 and its lock then failed:
    # review round 69, R69-3).
    _check_funds(node, price * budget)
    now = node.now_ms()
    try:
        job_id, effects = node.requester.submit(spec, now, providers=providers)
    except scheduler.SchedulerError as exc:
        raise JobSubmitError(str(exc)) from None
    node.content.store.pin(job_id, model)
    for _, data in blobs:
        node.content.store.pin(job_id, data)
    record = JobRecord(job_id, spec, now, model_name)
    node.jobs.add(record)
    node.journal.submitted(record)
    node.metrics.jobs_submitted.inc()
    node.effects.execute("requester", effects)
    return job_id


def _check_funds(node: Node, escrow: int) -> None:
    """Raise a :class:`JobSubmitError` unless the balance not yet locked for other jobs
    pays ``escrow`` and its two fees (the lock's and the settle's, or the refund's)."""
    assert node.requester is not None
    state = node.ledger.state
    fee = node.txq.fee()
    spendable = state.balance(node.me) - locked_pending(node.requester, state, fee)
    fees = 2 * fee
    if escrow + fees > spendable:
        paid = f" and {fees} in transaction fees" if fees else ""
        raise JobSubmitError(
            f"escrow needs {escrow} micro-credits (max_price × (redundancy + "
            f"max_retries)){paid} but the balance available is {spendable}; get credits "
            "(the devnet faucet) or lower max_price"
        )


def locked_pending(requester: scheduler.Requester, state: ledger.State, fee: int = 0) -> int:
    """Credits the jobs submitted here still need: the escrow of each whose lock is not in
    a block yet, with its ``fee``, and the ``fee`` of each one's settle or refund while its
    escrow is not closed (each job's two fees were checked only when it was submitted, so
    two jobs could leave one fee for two closes, and the refund of the second was refused
    for good: round 15, R15-5)."""
    total = 0
    for j in requester.jobs.values():
        escrow = state.escrow(j.id)
        if j.phase == "locking" and j.done is None and escrow is None:
            total += j.spec.max_price * j.budget + 2 * fee
        elif escrow is not None and not escrow.is_done:
            total += fee  # its settle, or its refund (of prices still reserved, once settled)
    return total
