"""The simulation's effect handlers and virtual runs: what a scheduler machine's effects do
in the simulated world, as ``node/daemon/_effects.py`` does in the daemon. Functions of the
``Simulation`` (bound as its methods in ``_sim.py``)."""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import ledger
import protocol
import scheduler
from protocol import Usage, content_hash

from ._sim_base import (
    _CHEATING,
    EV_ONLINE,
    EV_RUN_DONE,
    EV_TIMER,
    MODEL_CACHE,
    REPORT_WAIT_BLOCKS,
    SLASH_EVIDENCE,
    honest_output,
    output_commitment,
    raw_tag,
)
from ._world import transfer_ms

if TYPE_CHECKING:
    from ._sim import Simulation


# --- effects --------------------------------------------------------------------------


def effect_handlers(sim: Simulation) -> dict[type, Any]:
    """Effect type -> ``handler(node, is_provider, effect, now)`` (one dict lookup per
    effect instead of a chain of ``isinstance``; effects are final dataclasses)."""
    return {
        scheduler.SetTimer: sim._fx_set_timer,
        scheduler.CancelTimer: sim._fx_cancel_timer,
        scheduler.Send: sim._fx_send,
        scheduler.Publish: sim._fx_publish,
        scheduler.Deliver: sim._fx_deliver,
        scheduler.RunJob: sim._fx_run_job,
        scheduler.AbortJob: sim._fx_abort_job,
        scheduler.NotifyUser: sim._notify,
        scheduler.JobDone: sim._fx_job_done,
        scheduler.Misbehaved: sim._fx_misbehaved,
        scheduler.LockEscrow: sim._fx_lock,
        scheduler.ReservePlace: sim._fx_reserve,
        scheduler.Settle: sim._fx_settle,
        scheduler.Refund: sim._fx_refund,
        scheduler.ClaimWithReceipt: sim._fx_claim,
        scheduler.Attest: sim._fx_attest,
        scheduler.Slash: sim._fx_slash,
    }


def execute(sim: Simulation, node: int, is_provider: bool, effects: list[scheduler.Effect]) -> None:
    if not effects:
        return
    now = sim.loop.now_ms
    handlers = sim._handlers
    for e in effects:
        handler = handlers.get(type(e))
        if handler is not None:
            handler(node, is_provider, e, now)


def fx_set_timer(sim: Simulation, node: int, is_provider: bool, e: Any, now: int) -> None:
    sim._timer_token += 1
    token = sim._timer_token
    key = e.key
    sim.timers[(node, key)] = token
    sim.loop.at(e.at_ms, EV_TIMER, node, key, token, key.job_id[:8])


def fx_cancel_timer(sim: Simulation, node: int, is_provider: bool, e: Any, now: int) -> None:
    sim.timers.pop((node, e.key), None)


def fx_send(sim: Simulation, node: int, is_provider: bool, e: Any, now: int) -> None:
    sim._send_message(node, e.peer, e.message.raw, now)


def fx_publish(sim: Simulation, node: int, is_provider: bool, e: Any, now: int) -> None:
    sim._publish(node, e, now)


def fx_deliver(sim: Simulation, node: int, is_provider: bool, e: Any, now: int) -> None:
    dst = sim.id_of.get(e.peer)
    if dst is not None:
        sim._send(node, dst, e.result.raw, e.output or None, now)


def fx_run_job(sim: Simulation, node: int, is_provider: bool, e: Any, now: int) -> None:
    sim._run_job(node, e, now)


def fx_abort_job(sim: Simulation, node: int, is_provider: bool, e: Any, now: int) -> None:
    sim._stop_run(node, e.job_id, now)


def fx_job_done(sim: Simulation, node: int, is_provider: bool, e: Any, now: int) -> None:
    sim._job_done(node, e, now)


def fx_misbehaved(sim: Simulation, node: int, is_provider: bool, e: Any, now: int) -> None:
    sim.misbehaved += 1
    peer = sim.id_of.get(e.peer) if e.peer is not None else None
    if peer is not None and peer < sim.P:
        sim.pstats[peer].misbehaved += 1


def fx_lock(sim: Simulation, node: int, is_provider: bool, e: Any, now: int) -> None:
    sim._lock(node, e, now)


def fx_reserve(sim: Simulation, node: int, is_provider: bool, e: Any, now: int) -> None:
    sim._queue_tx(node, ledger.Reserve(e.job_id, e.award.raw), now)


def fx_settle(sim: Simulation, node: int, is_provider: bool, e: Any, now: int) -> None:
    sim._settle(node, e, now)


def fx_refund(sim: Simulation, node: int, is_provider: bool, e: Any, now: int) -> None:
    sim._queue_tx(node, ledger.Refund(e.job_id), now)


def fx_claim(sim: Simulation, node: int, is_provider: bool, e: Any, now: int) -> None:
    sim._queue_tx(node, ledger.Claim(e.job_id, e.award.raw, e.receipt.raw, e.key), now)


def fx_attest(sim: Simulation, node: int, is_provider: bool, e: Any, now: int) -> None:
    sim._attest(node, e, now)


def fx_slash(sim: Simulation, node: int, is_provider: bool, e: Any, now: int) -> None:
    sim._slash_seen(e, now)


def send_message(sim: Simulation, node: int, peer: bytes, raw: bytes, now: int) -> None:
    dst = sim.id_of.get(peer)
    if dst is None:
        return
    if node >= sim.P and node - sim.P in sim.nonpayer and raw_tag(raw) == protocol.Receipt.TAG:
        return  # a requester that does not pay withholds receipts too
    sim._send(node, dst, raw, None, now)


def publish(sim: Simulation, node: int, e: scheduler.Publish, now: int) -> None:
    for i in sim._sample(e.topic, sim.sc.jobs.topic_reach):
        sim._send(node, i, e.message.raw, None, now)


def notify(
    sim: Simulation, node: int, is_provider: bool, e: scheduler.NotifyUser, now: int
) -> None:
    if is_provider:
        if e.event == scheduler.UserEvent.PAID:
            st = sim.pstats[node]
            st.paid_jobs += 1
            st.earned += int(e.detail)
        elif e.event == scheduler.UserEvent.CLOSED and e.detail not in ("paid",):
            sim._unpaid_close(node, e, now)
        return
    if e.event == scheduler.UserEvent.SPOT_CHECK and e.job_id not in sim.jobs:
        job = sim.requesters[node].jobs[e.job_id]  # a spot check's canary
        sim._note_job(e.job_id, node - sim.P, now, job.spec, canary=True)
    rec = sim.jobs.get(e.job_id)
    if rec is None:
        return
    if e.event == scheduler.UserEvent.LOCKED and rec.locked_ms < 0:
        rec.locked_ms = now
    elif e.event == scheduler.UserEvent.AWARDED and rec.awarded_ms < 0:
        rec.awarded_ms = now
    elif e.event == scheduler.UserEvent.DELIVERED and rec.finished_ms < 0:
        rec.delivered_ms = now
    elif e.event == scheduler.UserEvent.ESCROW_CLOSED:
        rec.closed_ms = now


def unpaid_close(sim: Simulation, node: int, e: scheduler.NotifyUser, now: int) -> None:
    rec = sim.jobs.get(e.job_id)
    if rec is None or rec.requester not in sim.nonpayer:
        return
    if not e.detail.startswith(("escrow closed without", "escrow expired")):
        return
    if sim.kind[node] in _CHEATING:
        return
    r = rec.requester
    sim.unpaid[r] = sim.unpaid.get(r, 0) + 1
    sim.unpaid_first_ms.setdefault(r, now)


def job_done(sim: Simulation, node: int, e: scheduler.JobDone, now: int) -> None:
    rec = sim.jobs.get(e.job_id)
    if rec is None:
        return
    rec.finished_ms = now
    rec.outcome = str(e.status)
    rec.reason = e.reason
    if not rec.canary:
        sim.counters[str(e.status)] += 1
    job = sim.requesters[node].jobs.get(e.job_id)
    if job is None:
        return
    rec.replicas = len(job.replicas)
    rec.bids = len({*job.bids, *(r.provider for r in job.replicas)})
    truth = honest_output(job.spec.model_hash, job.spec.inputs)
    if e.output is not None:
        rec.correct = 1 if e.output.data == truth else 0
    for rep in job.replicas:
        if rep.output is None:
            continue
        st = sim.pstats[sim.id_of[rep.provider]]
        st.delivered += 1
        if rep.output.data != truth and st.first_wrong_ms < 0:
            st.first_wrong_ms = rep.received_ms


def attest(sim: Simulation, node: int, e: scheduler.Attest, now: int) -> None:
    if not e.positive and e.reason == "outvoted":
        p = sim.id_of.get(e.subject)
        if p is not None and p < sim.P:
            st = sim.pstats[p]
            st.refused += 1
            if st.detected_ms < 0:
                st.detected_ms = now
                st.jobs_before_detection = st.delivered + 1
    elif not e.positive:
        p = sim.id_of.get(e.subject)
        if p is not None and p < sim.P and sim.kind[p] in ("spammer", "lazy"):
            st = sim.pstats[p]
            if st.detected_ms < 0:
                st.detected_ms = now
                st.jobs_before_detection = st.won
    # As the daemon: it goes once the escrow is closed (a claim may still pay before).
    sim.pending_attests.setdefault(e.job_id, []).append(e)


def report(sim: Simulation, e: scheduler.Attest) -> None:
    """A verdict against a provider the job did not pay goes to the coordinator as
    evidence (its signed Result with the paid majority's) when the requester asked for
    a slash (``Attest.report``), as the daemon's reports do; the coordinator slashes once
    the job's escrow is closed (_slash_reported)."""
    if not e.report or e.positive or not any(r.signer == e.subject for r in e.evidence):
        return
    key = (e.job_id, e.subject)
    if key not in sim.reports:
        evidence = tuple(r.raw for r in e.evidence[:SLASH_EVIDENCE])
        sim.reports[key] = (evidence, sim.state.height + REPORT_WAIT_BLOCKS)


def slash_reported(sim: Simulation, state: ledger.State, now: int) -> None:
    """The coordinator submits a slash for each report whose escrow closed (the
    ledger checks the evidence against the settlement), as ``node.daemon.reports``
    does: at most ``slash_amount``, nothing when the offender has nothing bonded or the
    evidence would not pass (counted as ``reports_refused``)."""
    for key, (evidence, give_up) in list(sim.reports.items()):
        job_id, offender = key
        escrow = state.escrow(job_id)
        if escrow is not None and escrow.is_open and state.height <= give_up:
            continue
        del sim.reports[key]
        if escrow is None or escrow.is_open:
            continue
        a = state.account(offender)
        amount = min(a.stake + a.unbonding_total, sim.sc.coordinator.slash_amount)
        if amount <= 0:
            continue
        slash = ledger.Slash(offender, amount, "failed_verification", evidence)
        try:
            ledger.check_slash_evidence(state, slash)
        except ledger.LedgerError:
            sim.reports_refused += 1
            continue
        sim.slashes += 1
        sim._queue_tx(sim.coord, slash, now)


def slash_seen(sim: Simulation, e: scheduler.Slash, now: int) -> None:
    p = sim.id_of.get(e.provider)
    if p is not None and p < sim.P:
        st = sim.pstats[p]
        if st.detected_ms < 0:
            st.detected_ms = now
            st.jobs_before_detection = st.delivered + 1


# --- runs -----------------------------------------------------------------------------


def run_job(sim: Simulation, i: int, e: scheduler.RunJob, now: int) -> None:
    kind = sim.kind[i]
    job_id = e.job.id
    st = sim.pstats[i]
    st.won += 1
    if st.first_won_ms < 0:
        st.first_won_ms = now
    if kind == "lazy":
        # win, then vanish: the process is gone for a while
        sim._go_offline(i, now)
        sim.loop.at(now + int(sim.sc.adversaries.lazy_away_s * 1000), EV_ONLINE, i)
        return
    if kind == "spammer":
        return  # never runs what it wins
    spec = e.job.message
    tier = sim.sc.tiers[sim.tier[i]]
    cache = sim.model_cache.setdefault(i, OrderedDict())
    size = sum(x.size for x in spec.inputs)
    fetch = 0
    if spec.model_hash in cache:
        cache.move_to_end(spec.model_hash)
    else:
        size += spec.model_size
        fetch = int(sim.sc.jobs.model_fetch_ms)
        cache[spec.model_hash] = None
        if len(cache) > MODEL_CACHE:
            cache.popitem(last=False)
    fetch += transfer_ms(size, tier.bandwidth_mbps) + sim.net.latency_ms(
        i, sim.id_of[spec.requester]
    )
    js = sim.sc.jobs
    if js.run_ms:
        # a measured run of the model, after its sandbox worker's start-up
        worker = (spec.requester, spec.model_hash)
        sim.run_worker[(i, job_id)] = worker
        estimate = int(js.run_ms + sim.workers.acquire(i, worker, now))
    else:
        estimate = scheduler.estimate_run_ms(spec, tier.bench_score, 200)
    noise = js.run_noise
    run = int(estimate * (sim.r_run.lognormvariate(0.0, noise) if noise else 1.0))
    cheat = kind in _CHEATING and sim.r_run.random() < sim.sc.adversaries.cheat_rate
    if cheat:
        who = b"collude" if kind in ("colluder", "sybil") else sim.pubs[i]
        data = b"bad:" + content_hash(job_id + who)
    else:
        data = honest_output(spec.model_hash, spec.inputs)
    sim.running[(i, job_id)] = (now + fetch, run, data)
    sim.loop.at(now + fetch + run, EV_RUN_DONE, i, job_id, sim.incarnation[i], job_id[:8])


def stop_run(sim: Simulation, i: int, job_id: bytes, now: int) -> None:
    sim.run_worker.pop((i, job_id), None)  # an aborted run's worker is killed
    run = sim.running.pop((i, job_id), None)
    if run is not None:
        started, _, _ = run
        rec = sim.jobs.get(job_id)
        if now > started:
            sim.busy_ms += now - started
            if rec is not None:
                rec.compute_ms += now - started


def on_run_done(sim: Simulation, now: int, i: int, job_id: Any, incarnation: Any) -> None:
    if incarnation != sim.incarnation[i]:
        return
    run = sim.running.pop((i, job_id), None)
    if run is None:
        return
    _, duration, data = run
    sim.busy_ms += duration
    worker = sim.run_worker.pop((i, job_id), None)
    if worker is not None:
        pool = max(2, sim.sc.tiers[sim.tier[i]].max_concurrency)
        sim.workers.release(i, worker, pool)
    rec = sim.jobs.get(job_id)
    if rec is not None:
        rec.compute_ms += duration
        if data.startswith(b"ok:"):
            rec.min_run_ms = duration if rec.min_run_ms < 0 else min(rec.min_run_ms, duration)
    p = sim.providers.get(i)
    if p is None:
        return
    work = p.work.get(job_id)
    cls = p.config.class_for(work.spec) if work is not None else p.config.determinism_class
    out = scheduler.Output(data, output_commitment(data) or b"", cls)
    usage = Usage(cpu_ms=duration, wall_ms=duration, peak_memory_kb=0, gpu_ms=0)
    sim._execute(i, True, p.job_finished(job_id, now, outcome="ok", output=out, usage=usage))
