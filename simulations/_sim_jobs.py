"""The simulation's workload: job arrivals (steady and in bursts), submissions, the
sample of providers a message reaches, and the series sampled every interval. Functions
of the ``Simulation`` (bound as its methods in ``_sim.py``)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import protocol
import scheduler
from protocol import InputRef, JobSpec, Requirements, VerificationPolicy, content_hash

from ._sim_base import (
    CLAIM_WINDOW_BLOCKS,
    EV_ARRIVAL,
    EV_SAMPLE,
    SETTLE_MARGIN_BLOCKS,
    JobRecord,
)

if TYPE_CHECKING:
    from ._sim import Simulation

# --- jobs -----------------------------------------------------------------------------


def next_arrival(sim: Simulation, now: int, rate: float, until_ms: int) -> None:
    if rate <= 0:
        return
    t = now + int(sim.r_jobs.expovariate(rate) * 1000)
    last = int((sim.sc.duration_s - sim.sc.drain_s) * 1000)
    if until_ms >= 0:
        last = min(last, until_ms)
    if t < last:
        sim.loop.at(t, EV_ARRIVAL, 0, rate, until_ms)


def on_burst(sim: Simulation, now: int, node: int, burst: Any, b: Any) -> None:
    sim._next_arrival(now, burst.rate_per_s, now + int(burst.duration_s * 1000))


def on_arrival(sim: Simulation, now: int, node: int, rate: Any, until: Any) -> None:
    cap = sim.sc.jobs.max_jobs
    if cap and sim.counters["submitted"] >= cap:
        return  # arrivals end after the scenario's count of jobs
    sim._next_arrival(now, rate, until)
    sim._submit_job(now)


def submit_job(sim: Simulation, now: int) -> None:
    sc, rng = sim.sc, sim.r_jobs
    js = sc.jobs
    r = rng.randrange(sim.R)
    node = sim.P + r
    gpu = rng.random() < js.gpu_fraction
    memory = rng.choice(js.memory_mb)
    ep = "CUDAExecutionProvider" if gpu else "CPUExecutionProvider"
    device = "gpu" if gpu else "cpu"
    probe = Requirements(device, ep, memory, "onnx.cpu.m1")
    cls = protocol.job_class("onnx", probe)
    model_index = rng.randrange(js.models_per_class)
    model = content_hash(f"model/{cls}/{model_index}".encode())
    lo, hi = js.model_mb
    frac = int.from_bytes(model[:4], "big") / 2**32
    model_size = int(1_000_000 * math.exp(math.log(lo) + frac * (math.log(hi) - math.log(lo))))
    ilo, ihi = js.input_kb
    input_size = int(1000 * math.exp(rng.uniform(math.log(ilo), math.log(ihi))))
    nonce = rng.randbytes(16)
    req = sim._requester(r)
    sim._execute(node, False, req.block(sim.state.height, now))
    deadline = now + int(js.deadline_s * 1000)
    blocks = math.ceil(js.deadline_s * 1000 / sc.block_ms)
    expiry = sim.state.height + blocks + CLAIM_WINDOW_BLOCKS + SETTLE_MARGIN_BLOCKS + 10
    spec = JobSpec(
        requester=sim.pubs[node],
        nonce=nonce,
        runtime="onnx",
        model_hash=model,
        model_size=model_size,
        # a hash no provider can derive from the JobSpec (one of the nonce alone told every
        # job from its canary, whose inputs are the canary's: review round 62)
        inputs=(
            InputRef(name="x", hash=content_hash(req.config.key.encode() + nonce), size=input_size),
        ),
        requirements=Requirements(device, ep, memory, cls),
        graph_opt_level="extended",
        threads=1,
        max_price=js.max_price,
        redundancy=js.redundancy,
        max_retries=js.max_retries,
        verification=VerificationPolicy("exact", 0, 0, js.spot_check_permille),
        created_ms=now,
        bid_window_ms=js.bid_window_ms,
        deadline_ms=deadline,
        escrow_expiry_height=expiry,
    )
    found = sim._sample(cls, js.lookup)
    try:
        job_id, effects = req.submit(spec, now, providers=[sim.pubs[i] for i in found])
    except scheduler.SchedulerError:
        return
    sim.requesters_with_jobs[node] = None
    sim._note_job(job_id, r, now, spec, canary=False)
    # a spot check's canary is a second job in the same effects: note it at its lock
    sim._execute(node, False, effects)


def note_job(
    sim: Simulation, job_id: bytes, r: int, now: int, spec: JobSpec, *, canary: bool
) -> None:
    sim.jobs[job_id] = JobRecord(job_id, r, now, spec.redundancy, spec.max_price, canary)
    sim.job_order.append(job_id)
    if not canary:
        sim.counters["submitted"] += 1


def sample(sim: Simulation, cls: str, k: int) -> list[int]:
    """Up to ``k`` online providers of ``cls``: what a lookup (or a topic) reaches."""
    pool = sim.classes.get(cls, ())
    if not pool or k <= 0:
        return []
    out: dict[int, None] = {}
    rng = sim.r_lookup
    n = len(pool)
    for _ in range(4 * k):
        i = pool[rng.randrange(n)]
        if sim.online[i]:
            out[i] = None
            if len(out) >= k:
                break
    return list(out)


# --- the series -----------------------------------------------------------------------


def on_sample(sim: Simulation, now: int, node: int, final: Any, b: Any) -> None:
    if final is None:
        sim.loop.at(now + int(sim.sc.interval_s * 1000), EV_SAMPLE, 0)
    # mean runs in progress over the interval (a point sample would see the bursts
    # that follow each block, or the gaps between them, depending on the phase)
    span = max(1, now - sim._last_sample_ms)
    busy = round((sim.busy_ms - sim._last_busy_ms) / span, 2)
    sim._last_sample_ms, sim._last_busy_ms = now, sim.busy_ms
    c = sim.counters
    sim.series.rows.append(
        {
            "t_s": now / 1000.0,
            "submitted": c["submitted"],
            "verified": c["verified"],
            "failed": c["failed"] + c.get("unverified", 0),
            "online_providers": sim.online_count,
            "busy_providers": busy,
            "ledger_height": sim.state.height,
            "ledger_bytes": sim.block_bytes,
            "mempool": len(sim.producer.mempool),
            "events": sim.loop.events,
        }
    )
