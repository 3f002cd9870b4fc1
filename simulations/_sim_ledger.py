"""The simulation's ledger side: escrow and settlement transactions, each node's
transaction lane (sequence numbers, window, fillers; claims, unsequenced, go on their
own), the coordinator's blocks and what
the nodes learn from them. Functions of the ``Simulation`` (bound as its methods in
``_sim.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import ledger
import scheduler
from ledger import tx as ledger_tx

from ._sim_base import (
    CHAIN_ID,
    EV_BLOCK,
    EV_BLOCK_SEEN,
    EV_TX,
    TX_LIFETIME_BLOCKS,
    TX_WINDOW,
    _TxLane,
)

if TYPE_CHECKING:
    from ._sim import Simulation


# --- the ledger -----------------------------------------------------------------------


def lock(sim: Simulation, node: int, e: scheduler.LockEscrow, now: int) -> None:
    lock = ledger.Lock(
        e.job_id,
        e.amount,
        e.claim_height,
        e.expiry_height,
        e.max_per_payee,
        e.max_payees,
        e.spec,
    )
    sim._queue_tx(node, lock, now)


def settle(sim: Simulation, node: int, e: scheduler.Settle, now: int) -> None:
    if node - sim.P in sim.nonpayer:
        return  # never settles; refunds at expiry
    payouts = e.as_dict()
    bids = e.bids()
    items = tuple(ledger.Payout(p, a, bids[p]) for p, a in sorted(payouts.items()))
    sim._queue_tx(node, ledger.Settle(e.job_id, items), now)


def send_attests(
    sim: Simulation,
    node: int,
    job_id: bytes,
    state: Any,
    now: int,
    skip: frozenset[bytes] = frozenset(),
) -> None:
    """The job's escrow closed: its attestations go, as the daemon sends them, about the
    providers it paid (by the settle or by their claims); a verdict against a provider it
    did not pay goes to the coordinator as evidence."""
    attests = sim.pending_attests.pop(job_id, [])
    if skip:  # about providers that may still claim: kept until the escrow is final
        sim.pending_attests[job_id] = [a for a in attests if a.subject in skip]
        attests = [a for a in attests if a.subject not in skip]
    escrow = state.escrow(job_id) if attests else None
    paid = {p for p, _ in escrow.paid} if escrow is not None and not escrow.is_open else set()
    done: set[bytes] = set()
    for attest in attests:
        if attest.subject in paid:
            if attest.subject not in done:  # one per party and job
                done.add(attest.subject)
                tx = ledger.Attest(job_id, attest.subject, int(attest.positive))
                sim._queue_tx(node, tx, now)
        else:
            sim._report(attest)


def lane(sim: Simulation, node: int) -> _TxLane:
    lane = sim.lanes.get(node)
    if lane is None:
        lane = sim.lanes[node] = _TxLane(sim.keys[node], sim.state.next_seq(sim.pubs[node]))
    return lane


def queue_tx(sim: Simulation, node: int, payload: ledger.Payload, now: int) -> None:
    if isinstance(payload, ledger.Claim):  # no sequence number: sent on its own at once
        signed = ledger_tx.make(
            sim.keys[node],
            CHAIN_ID,
            ledger.UNSEQUENCED,
            payload,
            expiry_height=sim.state.height + TX_LIFETIME_BLOCKS,
        )
        delay = sim.net.latency_ms(node, sim.coord)
        sim.loop.at(now + delay, EV_TX, node, signed.raw, ledger.UNSEQUENCED, signed.raw[-16:])
        return
    lane = sim._lane(node)
    lane.queued.append(payload)
    sim._pump(node, lane, now)


def pump(sim: Simulation, node: int, lane: _TxLane, now: int) -> None:
    while lane.queued and len(lane.inflight) < TX_WINDOW:
        payload = lane.queued.pop(0)
        sim._sign_and_send(node, lane, payload, now)
    if lane.queued or lane.inflight:
        sim.lanes_busy[node] = None
    else:
        sim.lanes_busy.pop(node, None)


def sign_and_send(
    sim: Simulation, node: int, lane: _TxLane, payload: ledger.Payload, now: int
) -> None:
    seq = lane.next_seq
    lane.next_seq += 1
    lane.inflight[seq] = payload
    signed = ledger_tx.make(
        lane.key, CHAIN_ID, seq, payload, expiry_height=sim.state.height + TX_LIFETIME_BLOCKS
    )
    delay = sim.net.latency_ms(node, sim.coord)
    sim.loop.at(now + delay, EV_TX, node, signed.raw, seq, signed.raw[-16:])


def on_tx(sim: Simulation, now: int, node: int, raw: Any, seq: Any) -> None:
    if not sim.coord_up:
        sim.backlog.append((node, raw, seq))  # the sender retries until it is back
        return
    sim._admit(node, raw, seq, now)


def admit(sim: Simulation, node: int, raw: bytes, seq: int, now: int) -> None:
    try:
        sim.producer.submit(raw)
    except ledger.TransactionRejected as exc:
        sim._tx_failed(node, seq, str(exc), now)


def tx_failed(sim: Simulation, node: int, seq: int, reason: str, now: int) -> None:
    """A transaction of ``node`` was refused or dropped: what it was for learns so,
    and the sequence number is filled (a transfer of 1 to itself), as the daemon's
    queue does, so the transactions after it are not held back."""
    if seq == ledger.UNSEQUENCED:  # a claim: it leaves no gap
        sim.tx_refused += 1
        return
    lane = sim.lanes.get(node)
    if lane is None:
        return
    payload = lane.inflight.pop(seq, None)
    if payload is None:
        return
    # Only behind another one's gap: signed again later (the daemon's queue sends it again,
    # or puts it back), while a filler takes its number.
    again = ledger.SequenceGap.TEXT in reason or reason.startswith(ledger.DROPPED_BEHIND)
    if again and not isinstance(payload, ledger.Transfer):
        lane.queued.append(payload)
    elif not again:
        sim.tx_refused += 1
    if isinstance(payload, ledger.Lock) and node >= sim.P and not again:
        req = sim.requesters.get(node)
        if req is not None:
            sim._execute(node, False, req.escrow_failed(payload.job_id, reason, now))
    if isinstance(payload, ledger.Transfer):
        return  # a filler failed: resync from the chain at the next block
    lane.inflight[seq] = ledger.Transfer(sim.pubs[node], 1)
    filler = ledger_tx.make(
        lane.key,
        CHAIN_ID,
        seq,
        lane.inflight[seq],
        expiry_height=sim.state.height + TX_LIFETIME_BLOCKS,
    )
    sim.loop.at(now + sim.net.latency_ms(node, sim.coord), EV_TX, node, filler.raw, seq)


def on_coord(sim: Simulation, now: int, node: int, up: Any, b: Any) -> None:
    sim.coord_up = bool(up)
    if up:
        backlog, sim.backlog = sim.backlog, []
        for sender, raw, seq in backlog:
            sim._admit(sender, raw, seq, now)


def on_block(sim: Simulation, now: int, node: int, a: Any, b: Any) -> None:
    sim.loop.at(now + sim.sc.block_ms, EV_BLOCK, sim.coord)
    if not sim.coord_up:
        return
    prev = sim.producer.state
    effects = sim.producer.tick(now)
    dropped = []
    for e in effects:
        if isinstance(e, ledger.Commit):
            sim.prev_state = prev
            sim.state = e.state
            sim.blocks += 1
            sim.block_bytes += len(e.block.raw)
            sim.last_block_raw = e.block.raw
            if sim.auditor is not None:
                sim.auditor.on_blocks(sim.pubs[sim.coord], [e.block.raw])
        elif isinstance(e, ledger.TxDropped):
            dropped.append(e)
    if sim.reports:
        sim._slash_reported(sim.state, now)
    for d in dropped:
        sender = sim.id_of.get(d.sender)
        if sender is not None:
            sim._tx_failed(sender, d.seq, d.reason, now)
    delay = int(sim.sc.network.block_delay_ms)
    sim.loop.at(now + delay, EV_BLOCK_SEEN, sim.coord, sim.state, None, sim.state.root[:8])


def on_block_seen(sim: Simulation, now: int, node: int, state: Any, b: Any) -> None:
    height = state.height
    escrow = state.escrow
    # requesters with jobs follow every block
    for n in list(sim.requesters_with_jobs):
        req = sim.requesters[n]
        sim._execute(n, False, req.follow_ledger(height, escrow, now))
        for job_id, job in list(req.jobs.items()):
            if job.phase == scheduler.JobPhase.CLOSED:
                e = escrow(job_id)
                later = scheduler.still_payable(job, e, height) if e is not None else frozenset()
                req.forget(job_id)
                send_attests(sim, n, job_id, state, now, skip=later)
                if later or (e is not None and e.remaining):
                    sim.awaiting_final[job_id] = n
        if not req.jobs:
            del sim.requesters_with_jobs[n]
    for job_id, n in list(sim.awaiting_final.items()):
        e = escrow(job_id)
        if e is None or e.final_at(height):
            del sim.awaiting_final[job_id]
            send_attests(sim, n, job_id, state, now)
            if e is not None and e.remaining:  # reserved prices nobody claimed: back
                sim._queue_tx(n, ledger.Refund(job_id), now)
    for i in list(sim.active_providers):
        p = sim.providers.get(i)
        if p is None:
            del sim.active_providers[i]
            continue
        sim._execute(i, True, p.follow_ledger(height, escrow, now))
        if not p.work:
            del sim.active_providers[i]
    # transaction lanes: what made it in frees the window
    for n in list(sim.lanes_busy):
        lane = sim.lanes[n]
        chain_next = state.next_seq(sim.pubs[n])
        for seq in [s for s in lane.inflight if s < chain_next]:
            del lane.inflight[seq]
        if not lane.inflight and lane.next_seq != chain_next:
            # everything sent is in a block or was refused: the chain is the truth
            lane.next_seq = chain_next
        sim._pump(n, lane, now)


def on_equivocate(sim: Simulation, now: int, node: int, a: Any, b: Any) -> None:
    """The coordinator signs a second block at the height it produced last (the same
    parent, different contents) and sends it to the auditing replica."""
    if sim.auditor is None or sim.state.height == 0:
        return
    produced = ledger.produce_block(sim.prev_state, sim.keys[sim.coord], [])
    if produced.block.raw == sim.last_block_raw:
        return
    sim.equivocations += 1
    for e in sim.auditor.on_blocks(sim.pubs[sim.coord], [produced.block.raw]):
        if isinstance(e, ledger.ProofFound):
            sim.equivocations_detected.append(now)
