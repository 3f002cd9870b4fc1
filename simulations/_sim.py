"""The simulation: real ``scheduler`` machines and the real pure ledger, driven over a
virtual network by the event loop of ``_loop.py``.

One coordinator holds the ledger (``ledger.Producer``: mempool, ordering, signed blocks)
and produces a block every ``block_ms``. Each requester is a ``scheduler.Requester``, each
provider a ``scheduler.Provider`` (made when a message first reaches it: providers no job
touched cost nothing). Their effects are carried out as the daemon carries them out
(node/daemon/_effects.py): messages go to peers after a drawn latency, timers go into the
heap, ledger effects become signed transactions sent to the coordinator, a ``RunJob``
becomes a virtual run whose duration is the provider's own estimate with noise, plus the
time to fetch the model (unless cached) and the inputs.

The class is split by concern: effect handlers and virtual runs are in ``_sim_effects.py``,
transactions and blocks in ``_sim_ledger.py``, arrivals, submissions and the series in
``_sim_jobs.py`` (module functions bound as methods here), constants and records in
``_sim_base.py``; construction, machines, churn, messages and timers stay here.

specs/simulator.md states the model and its simplifications.
"""

from __future__ import annotations

import gc
import time
from collections import OrderedDict
from typing import Any

import nacl.signing

import ledger
import protocol
import scheduler
from ledger import tx as ledger_tx
from protocol import InputRef, content_hash

from . import _sim_effects, _sim_jobs, _sim_ledger
from ._loop import Loop, derive_rng
from ._scenario import Scenario
from ._sim_base import (
    CHAIN_ID,
    CLAIM_WINDOW_BLOCKS,
    EV_BLOCK,
    EV_BURST,
    EV_COORD,
    EV_EQUIVOCATE,
    EV_OFFLINE,
    EV_ONLINE,
    EV_SAMPLE,
    EV_TO_PROVIDER,
    EV_TO_REQUESTER,
    GC_THRESHOLDS,
    KINDS,
    SETTLE_MARGIN_BLOCKS,
    JobRecord,
    ProviderStats,
    _Series,
    _TxLane,
    honest_output,
    output_commitment,
    peak_rss_mb,
)
from ._verify_cache import verification_cache
from ._workers import WorkerPools
from ._world import ChurnModel, Net, transfer_ms

__all__ = ["KINDS", "JobRecord", "Simulation", "peak_rss_mb"]

#: A GPU tier's runs of CUDA jobs are in class ``ort-sim/cuda/sim/extended``; its runs of
#: CPU jobs, like every other tier's, are in ``ort-sim/cpu/sim/extended`` (one table shared
#: by every GPU provider). Named as the sandbox names classes: a GPU class is not slashable
#: (``scheduler.slashable_class``).
_GPU_RUNS = {
    scheduler.run_key("onnx", "CUDAExecutionProvider", opt): "ort-sim/cuda/sim/extended"
    for opt in protocol.OPT_LEVELS
}


class Simulation:
    """One run of one scenario with one seed."""

    def __init__(self, scenario: Scenario, seed: int) -> None:
        self.sc = scenario
        self.seed = seed
        self.loop = Loop()
        self.loop.handlers = [
            self._on_to_provider,
            self._on_to_requester,
            self._on_timer,
            self._on_run_done,
            self._on_block,
            self._on_block_seen,
            self._on_arrival,
            self._on_offline,
            self._on_online,
            self._on_tx,
            self._on_sample,
            self._on_coord,
            self._on_equivocate,
            self._on_burst,
        ]
        self.r_world = derive_rng(seed, "world")
        self.r_net = derive_rng(seed, "network")
        self.r_jobs = derive_rng(seed, "jobs")
        self.r_churn = derive_rng(seed, "churn")
        self.r_run = derive_rng(seed, "runs")
        self.r_adv = derive_rng(seed, "adversaries")
        self.r_lookup = derive_rng(seed, "lookup")
        self.r_machines = derive_rng(seed, "machines")
        self.churn = ChurnModel(scenario.churn, self.r_churn)
        self._build_nodes()
        self._build_ledger()
        # Timers: (node, TimerKey) -> token of the live one.
        self.timers: dict[tuple[int, scheduler.TimerKey], int] = {}
        self._timer_token = 0
        self.jobs: dict[bytes, JobRecord] = {}
        self.job_order: list[bytes] = []
        self.running: dict[tuple[int, bytes], tuple[int, int, bytes]] = {}
        self.pending_attests: dict[bytes, list[scheduler.Attest]] = {}
        #: Closed jobs whose escrow may still pay a reserved price (their attestations wait
        #: for it to be final), by requester node.
        self.awaiting_final: dict[bytes, int] = {}
        self.active_providers: dict[int, None] = {}
        self.requesters_with_jobs: dict[int, None] = {}
        self.lanes_busy: dict[int, None] = {}
        self.counters = {"submitted": 0, "verified": 0, "failed": 0, "unverified": 0}
        self.messages = 0
        self.lost = 0
        self.misbehaved = 0
        self.tx_refused = 0
        self.busy_ms = 0
        self._last_busy_ms = 0
        self._last_sample_ms = 0
        self.equivocations = 0
        self.equivocations_detected: list[int] = []
        self.unpaid: dict[int, int] = {}  # nonpaying requester -> unpaid deliveries seen
        self.unpaid_first_ms: dict[int, int] = {}
        self.series = _Series()
        self.wall_s = 0.0
        self.cpu_s = 0.0
        self._rep_cache: dict[bytes, scheduler.Reputation] = {}
        #: Reports a coordinator holds: (job id, offender) -> (evidence, give-up height).
        self.reports: dict[tuple[bytes, bytes], tuple[tuple[bytes, ...], int]] = {}
        self.slashes = 0
        self.reports_refused = 0
        self._rep_height = -1
        self._handlers = self._effect_handlers()
        #: Signature checks with the verification cache on (None when off).
        self.signature_checks: dict[str, int] | None = None

    # --- construction ---------------------------------------------------------------

    def _key(self, i: int) -> nacl.signing.SigningKey:
        seed = content_hash(f"aimx-sim/{self.seed}/key/{i}".encode())
        return nacl.signing.SigningKey(seed)

    def _build_nodes(self) -> None:
        sc, rng = self.sc, self.r_world
        P, R = sc.nodes.providers, sc.nodes.requesters
        self.P, self.R = P, R
        self.coord = P + R
        n = P + R + 1
        self.keys = [self._key(i) for i in range(n)]
        self.pubs = [bytes(k.verify_key) for k in self.keys]
        self.id_of = {p: i for i, p in enumerate(self.pubs)}
        weights = list(sc.network.region_weights)
        regions = range(len(weights))
        self.regions = bytearray(rng.choices(regions, weights, k=n))
        self.nat = bytearray(
            1 if i < P and rng.random() < sc.network.nat_fraction else 0 for i in range(n)
        )
        self.net = Net(sc.network, self.seed, self.regions, self.nat)
        tw = [t.weight for t in sc.tiers]
        self.tier = rng.choices(range(len(sc.tiers)), tw, k=P)
        # adversaries: a fixed share of providers, drawn once
        adv = sc.adversaries
        kinds = ["honest"] * P
        order = list(range(P))
        self.r_adv.shuffle(order)
        k = 0
        for kind, share in (
            ("colluder" if adv.colluding else "cheater", adv.cheaters),
            ("lazy", adv.lazy),
            ("spammer", adv.spammers),
        ):
            count = round(share * P)
            for i in order[k : k + count]:
                kinds[i] = kind
            k += count
        for i in order[k : k + min(adv.sybils, P - k)]:
            kinds[i] = "sybil"
        self.kind = kinds
        nonpay = round(adv.nonpayers * R)
        self.nonpayer = set(self.r_adv.sample(range(R), nonpay)) if nonpay else set()
        # capability classes: class -> providers serving it
        self.classes: dict[str, list[int]] = {}
        self.tier_classes: list[tuple[str, ...]] = []
        for t in sc.tiers:
            eps = ["CPUExecutionProvider"] + (
                ["CUDAExecutionProvider"] if t.device == "gpu" else []
            )
            cls = protocol.provider_classes(
                runtimes=["onnx"],
                execution_providers=eps,
                memory_mb=t.memory_mb,
                gpu_memory_mb=t.gpu_memory_mb,
            )
            self.tier_classes.append(cls)
        for i in range(P):
            for c in self.tier_classes[self.tier[i]]:
                self.classes.setdefault(c, []).append(i)
        self.online = bytearray(P)
        self.online_count = 0
        self.incarnation = [0] * P
        self.providers: dict[int, scheduler.Provider] = {}
        self.instantiated = 0
        self.made = bytearray(P)
        self.model_cache: dict[int, OrderedDict[bytes, None]] = {}
        self.workers = WorkerPools(sc.jobs.startup_ms, sc.jobs.worker_start_ms)
        self.run_worker: dict[tuple[int, bytes], tuple[bytes, bytes]] = {}
        self.pstats = [ProviderStats() for _ in range(P)]
        self.requesters: dict[int, scheduler.Requester] = {}
        self.lanes: dict[int, _TxLane] = {}

    def _build_ledger(self) -> None:
        sc = self.sc
        coord_key = self.keys[self.coord]
        funds = sc.requester_funds
        req_pubs = [self.pubs[self.P + r] for r in range(self.R)]
        in_genesis = req_pubs[:4096]
        genesis = ledger.make_genesis(
            CHAIN_ID, [self.pubs[self.coord]], {p: funds for p in in_genesis}
        )
        state = ledger.State.from_genesis(genesis)
        self.block_bytes = 0
        self.blocks = 0
        # more requesters than a genesis holds: minted in blocks before time 0
        rest = req_pubs[4096:]
        seq = 0
        while rest:
            batch, rest = rest[:4096], rest[4096:]
            vtxs = []
            for p in batch:
                signed = ledger_tx.mint(
                    coord_key, CHAIN_ID, seq, to=p, amount=funds, expiry_height=state.height + 10
                )
                vtxs.append(ledger.verify_tx(signed.raw, CHAIN_ID))
                seq += 1
            produced = ledger.produce_block(state, coord_key, vtxs)
            state = produced.state
            self.block_bytes += len(produced.block.raw)
            self.blocks += 1
        if sc.nodes.provider_stake:
            state, seq = self._bond_providers(state, seq)
        self.producer = ledger.Producer(coord_key, state, interval_ms=sc.block_ms, now_ms=0)
        self.state = state
        self.prev_state = state
        self.coord_up = True
        self.backlog: list[tuple[int, bytes, int]] = []
        self.auditor: ledger.Replica | None = None
        self.last_block_raw = b""
        if sc.coordinator.equivocate_at_s:
            self.auditor = ledger.Replica(state)

    def _bond_providers(self, state: ledger.State, seq: int) -> tuple[ledger.State, int]:
        """Blocks before time 0: each provider is minted ``provider_stake`` and stakes it
        (its own signed transaction, its sequence number 0)."""
        coord_key = self.keys[self.coord]
        amount = self.sc.nodes.provider_stake
        for make in ("mint", "stake"):
            for lo in range(0, self.P, 4096):
                vtxs = []
                for i in range(lo, min(self.P, lo + 4096)):
                    expiry = state.height + 10
                    if make == "mint":
                        signed = ledger_tx.mint(
                            coord_key,
                            CHAIN_ID,
                            seq,
                            to=self.pubs[i],
                            amount=amount,
                            expiry_height=expiry,
                        )
                        seq += 1
                    else:
                        signed = ledger_tx.make(
                            self.keys[i], CHAIN_ID, 0, ledger.Stake(amount), expiry_height=expiry
                        )
                    vtxs.append(ledger.verify_tx(signed.raw, CHAIN_ID))
                produced = ledger.produce_block(state, coord_key, vtxs)
                state = produced.state
                self.block_bytes += len(produced.block.raw)
                self.blocks += 1
        return state, seq

    # --- machines -----------------------------------------------------------------------

    def _escrow_of(self, job_id: bytes) -> ledger.Escrow | None:
        return self.state.escrow(job_id)

    def _reputation(self, who: bytes) -> scheduler.Reputation:
        state = self.state
        if state.height != self._rep_height:
            self._rep_cache.clear()
            self._rep_height = state.height
        rep = self._rep_cache.get(who)
        if rep is None:
            a = state.account(who)
            if a.rep_s == 0 and a.rep_f == 0 and a.stake == 0:
                rep = scheduler.NEWCOMER
            else:
                rep = scheduler.Reputation(*state.provider_record(who))
            self._rep_cache[who] = rep
        return rep

    def _provider(self, i: int) -> scheduler.Provider:
        p = self.providers.get(i)
        if p is None:
            t = self.sc.tiers[self.tier[i]]
            kind = self.kind[i]
            spam = kind == "spammer"
            eps = (
                ("CPUExecutionProvider", "CUDAExecutionProvider")
                if t.device == "gpu"
                else ("CPUExecutionProvider",)
            )
            p = scheduler.Provider(
                scheduler.ProviderConfig(
                    key=self.keys[i],
                    chain_id=CHAIN_ID,
                    capability_classes=self.tier_classes[self.tier[i]],
                    execution_providers=eps,
                    memory_mb=t.memory_mb,
                    gpu_memory_mb=t.gpu_memory_mb,
                    determinism_class="ort-sim/cpu/sim/extended",
                    determinism_classes=_GPU_RUNS if t.device == "gpu" else {},
                    price_floor=1 if spam else 800 + (i * 7919) % 400,
                    max_concurrency=64 if spam else t.max_concurrency,
                    overbook=16 if spam else 2,
                    bench_score=t.bench_score,
                    claim_window_blocks=CLAIM_WINDOW_BLOCKS,
                    escrow_of=self._escrow_of,
                )
            )
            p.block(self.state.height, self.loop.now_ms)
            self.providers[i] = p
            if not self.made[i]:
                self.made[i] = 1
                self.instantiated += 1
        return p

    def _requester(self, r: int) -> scheduler.Requester:
        node = self.P + r
        q = self.requesters.get(node)
        if q is None:
            canaries: tuple[scheduler.Canary, ...] = ()
            if self.sc.jobs.spot_check_permille:
                canaries = tuple(self._canary(node, k) for k in range(4))
            q = scheduler.Requester(
                scheduler.RequesterConfig(
                    key=self.keys[node],
                    chain_id=CHAIN_ID,
                    commitment=output_commitment,
                    reputation=self._reputation,
                    rng=derive_rng(self.seed, f"requester/{r}"),
                    claim_window_blocks=CLAIM_WINDOW_BLOCKS,
                    settle_margin_blocks=SETTLE_MARGIN_BLOCKS,
                    canaries=canaries,
                    replication=self.sc.jobs.replication,
                    probation_stake=self.sc.jobs.probation_stake,
                    trusted_jobs=self.sc.jobs.trusted_jobs,
                    trusted_score_permille=self.sc.jobs.trusted_score_permille,
                    trusted_stake=self.sc.jobs.trusted_stake,
                    trusted_max_failures=self.sc.jobs.trusted_max_failures,
                    audit_permille=self.sc.jobs.audit_permille,
                )
            )
            self.requesters[node] = q
        return q

    def _canary(self, node: int, k: int) -> scheduler.Canary:
        model = content_hash(f"canary/{node}/{k}".encode())
        inputs = (InputRef(name="x", hash=content_hash(model + b"in"), size=1024),)
        data = honest_output(model, inputs)
        answer = scheduler.Output(data, output_commitment(data) or b"", "ort-sim/cpu/sim/extended")
        return scheduler.Canary("onnx", model, 1_000_000, inputs, answer)

    # --- the run --------------------------------------------------------------------------

    def run(self) -> None:
        sc, loop = self.sc, self.loop
        start = time.perf_counter()
        cpu = time.process_time()
        end_ms = int(sc.duration_s * 1000)
        self._start_churn()
        loop.at(sc.block_ms, EV_BLOCK, self.coord)
        loop.at(0, EV_SAMPLE, 0)
        self._next_arrival(0, sc.jobs.rate_per_s, -1)
        for b in sc.jobs.bursts:
            loop.at(int(b.start_s * 1000), EV_BURST, 0, b)
        for o in sc.coordinator.outages:
            loop.at(int(o.start_s * 1000), EV_COORD, self.coord, False)
            loop.at(int(o.end_s * 1000), EV_COORD, self.coord, True)
        for t in sc.coordinator.equivocate_at_s:
            loop.at(int(t * 1000), EV_EQUIVOCATE, self.coord)
        # Millions of small objects live through a run and few reference cycles are made:
        # the cyclic collector runs every 50,000 allocations instead of 700 (it spent about
        # a tenth of the run rescanning them), restored afterwards. No effect on the trace.
        thresholds = gc.get_threshold()
        gc.set_threshold(*GC_THRESHOLDS)
        try:
            with verification_cache(sc.verify_cache) as cache:
                loop.run(end_ms)
        finally:
            gc.set_threshold(*thresholds)
        if cache is not None:
            self.signature_checks = {"real": cache.checks, "cached": cache.hits}
        self._on_sample(end_ms, 0, "final", None)
        self.wall_s = time.perf_counter() - start
        self.cpu_s = time.process_time() - cpu

    def _start_churn(self) -> None:
        sc = self.sc
        churn = sc.churn.enabled
        for i in range(self.P):
            if not churn or self.r_churn.random() < sc.churn.initially_online:
                self.online[i] = 1
                self.online_count += 1
                if churn:
                    # already online for a while: what is left of a session (so that not
                    # every first session ends after the distribution's minimum at once)
                    left = int(self.churn.session_ms() * self.r_churn.random())
                    self.loop.at(max(1_000, left), EV_OFFLINE, i)
            else:
                left = int(self.churn.offline_ms(0) * self.r_churn.random())
                self.loop.at(max(1_000, left), EV_ONLINE, i)

    # --- churn --------------------------------------------------------------------------

    def _on_offline(self, now: int, i: int, a: Any, b: Any) -> None:
        if not self.online[i]:
            return
        self._go_offline(i, now)
        self.loop.at(now + self.churn.offline_ms(now), EV_ONLINE, i)

    def _go_offline(self, i: int, now: int) -> None:
        self.online[i] = 0
        self.online_count -= 1
        self.incarnation[i] += 1
        # the process stops: its machine, timers and runs are gone
        p = self.providers.pop(i, None)
        if p is not None:
            for job_id in list(p.work):
                self.timers.pop((i, scheduler.TimerKey(scheduler.TimerKind.BID, job_id)), None)
                self.timers.pop(
                    (i, scheduler.TimerKey(scheduler.TimerKind.HEARTBEAT, job_id)), None
                )
                self.timers.pop((i, scheduler.TimerKey(scheduler.TimerKind.RESEND, job_id)), None)
                self._stop_run(i, job_id, now)
        self.active_providers.pop(i, None)
        self.workers.clear(i)

    def _on_online(self, now: int, i: int, a: Any, b: Any) -> None:
        if self.online[i]:
            return
        self.online[i] = 1
        self.online_count += 1
        if self.sc.churn.enabled:
            self.loop.at(now + self.churn.session_ms(), EV_OFFLINE, i)

    # --- messages -------------------------------------------------------------------------

    def _send(self, src: int, dst: int, raw: bytes, output: bytes | None, now: int) -> None:
        self.messages += 1
        net = self.net
        if self.sc.network.loss and self.r_net.random() < self.sc.network.loss:
            self.lost += 1
            return
        if net.cut(src, dst, now):
            self.lost += 1
            return
        delay = net.latency_ms(src, dst)
        if output is not None:
            mbps = self.sc.tiers[self.tier[src]].bandwidth_mbps if src < self.P else 100.0
            delay += transfer_ms(len(output), mbps)
        kind = EV_TO_PROVIDER if dst < self.P else EV_TO_REQUESTER
        self.loop.at(now + delay, kind, dst, raw, output, raw[-16:])

    def _on_to_provider(self, now: int, i: int, raw: Any, output: Any) -> None:
        if not self.online[i]:
            return
        p = self._provider(i)
        self.active_providers[i] = None
        self._execute(i, True, p.receive(raw, now))

    def _on_to_requester(self, now: int, node: int, raw: Any, output: Any) -> None:
        req = self.requesters.get(node)
        if req is None:
            return
        self._execute(node, False, req.receive(raw, now, output=output))

    # --- timers ---------------------------------------------------------------------------

    def _on_timer(self, now: int, node: int, key: Any, token: Any) -> None:
        tk = (node, key)
        if self.timers.get(tk) != token:
            return
        del self.timers[tk]
        if node < self.P:
            p = self.providers.get(node)
            if p is not None:
                self._execute(node, True, p.timer(key, now))
        else:
            req = self.requesters.get(node)
            if req is not None:
                self._execute(node, False, req.timer(key, now))

    # --- effects and runs: _sim_effects.py -------------------------------------------------

    _effect_handlers = _sim_effects.effect_handlers
    _execute = _sim_effects.execute
    _fx_set_timer = _sim_effects.fx_set_timer
    _fx_cancel_timer = _sim_effects.fx_cancel_timer
    _fx_send = _sim_effects.fx_send
    _fx_publish = _sim_effects.fx_publish
    _fx_deliver = _sim_effects.fx_deliver
    _fx_run_job = _sim_effects.fx_run_job
    _fx_abort_job = _sim_effects.fx_abort_job
    _fx_job_done = _sim_effects.fx_job_done
    _fx_misbehaved = _sim_effects.fx_misbehaved
    _fx_lock = _sim_effects.fx_lock
    _fx_reserve = _sim_effects.fx_reserve
    _fx_settle = _sim_effects.fx_settle
    _fx_refund = _sim_effects.fx_refund
    _fx_claim = _sim_effects.fx_claim
    _fx_attest = _sim_effects.fx_attest
    _fx_slash = _sim_effects.fx_slash
    _send_message = _sim_effects.send_message
    _publish = _sim_effects.publish
    _notify = _sim_effects.notify
    _unpaid_close = _sim_effects.unpaid_close
    _job_done = _sim_effects.job_done
    _attest = _sim_effects.attest
    _report = _sim_effects.report
    _slash_reported = _sim_effects.slash_reported
    _slash_seen = _sim_effects.slash_seen
    _run_job = _sim_effects.run_job
    _stop_run = _sim_effects.stop_run
    _on_run_done = _sim_effects.on_run_done

    # --- the ledger: _sim_ledger.py --------------------------------------------------------

    _lock = _sim_ledger.lock
    _settle = _sim_ledger.settle
    _lane = _sim_ledger.lane
    _queue_tx = _sim_ledger.queue_tx
    _pump = _sim_ledger.pump
    _sign_and_send = _sim_ledger.sign_and_send
    _on_tx = _sim_ledger.on_tx
    _admit = _sim_ledger.admit
    _tx_failed = _sim_ledger.tx_failed
    _on_coord = _sim_ledger.on_coord
    _on_block = _sim_ledger.on_block
    _on_block_seen = _sim_ledger.on_block_seen
    _on_equivocate = _sim_ledger.on_equivocate

    # --- the workload and the series: _sim_jobs.py -------------------------------------

    _next_arrival = _sim_jobs.next_arrival
    _on_burst = _sim_jobs.on_burst
    _on_arrival = _sim_jobs.on_arrival
    _submit_job = _sim_jobs.submit_job
    _note_job = _sim_jobs.note_job
    _sample = _sim_jobs.sample
    _on_sample = _sim_jobs.on_sample
