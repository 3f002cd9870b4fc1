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

specs/simulator.md states the model and its simplifications.
"""

from __future__ import annotations

import gc
import math
import resource
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import nacl.signing

import ledger
import protocol
import scheduler
from ledger import tx as ledger_tx
from protocol import InputRef, JobSpec, Requirements, Usage, VerificationPolicy, content_hash

from ._loop import Loop, derive_rng
from ._scenario import Scenario
from ._verify_cache import verification_cache
from ._workers import WorkerPools
from ._world import ChurnModel, Net, transfer_ms

CHAIN_ID = "aimx-sim"
CLAIM_WINDOW_BLOCKS = 10
SETTLE_MARGIN_BLOCKS = 2
#: Transactions of one node in flight (signed, not yet in a block) at once.
TX_WINDOW = 16
#: Blocks the coordinator waits for a reported job's escrow to close (the daemon's
#: ``reports.CLOSE_WAIT_BLOCKS``).
REPORT_WAIT_BLOCKS = 30
#: Signed Results a slash carries at most (``ledger.Slash``'s evidence).
SLASH_EVIDENCE = 4
#: A transaction is valid this many blocks (heights stop while the coordinator is down).
TX_LIFETIME_BLOCKS = 200
#: Models a provider keeps cached.
MODEL_CACHE = 8
#: The cyclic garbage collector's thresholds while a run's loop runs.
GC_THRESHOLDS = (50_000, 20, 10)

# Event kinds (indexes into Loop.handlers).
EV_TO_PROVIDER = 0
EV_TO_REQUESTER = 1
EV_TIMER = 2
EV_RUN_DONE = 3
EV_BLOCK = 4
EV_BLOCK_SEEN = 5
EV_ARRIVAL = 6
EV_OFFLINE = 7
EV_ONLINE = 8
EV_TX = 9
EV_SAMPLE = 10
EV_COORD = 11
EV_EQUIVOCATE = 12
EV_BURST = 13

KINDS = ("honest", "cheater", "colluder", "lazy", "sybil", "spammer")
_CHEATING = frozenset({"cheater", "colluder", "sybil"})

_ZERO_USAGE = Usage(cpu_ms=0, wall_ms=0, peak_memory_kb=0, gpu_ms=0)


def output_commitment(data: bytes) -> bytes | None:
    """The simulated sandbox's output commitment (``None``: malformed bytes)."""
    if len(data) < 3:
        return None
    return content_hash(b"aimx-sim/commitment/" + data)


def honest_output(model_hash: bytes, inputs: tuple[InputRef, ...]) -> bytes:
    """What every honest run outputs: a function of the model and the inputs."""
    return b"ok:" + content_hash(model_hash + b"".join(i.hash for i in inputs))


@dataclass(slots=True)
class JobRecord:
    """What the simulator notes about one submitted job (jobs.csv)."""

    job_id: bytes
    requester: int
    submitted_ms: int
    redundancy: int
    price: int
    canary: bool
    finished_ms: int = -1
    outcome: str = "pending"
    reason: str = ""
    replicas: int = 0
    bids: int = 0
    compute_ms: int = 0
    min_run_ms: int = -1
    correct: int = -1
    #: When the requester saw its phases (NotifyUser; -1: never): the escrow in a block,
    #: the first award, the latest delivery, the escrow closed.
    locked_ms: int = -1
    awarded_ms: int = -1
    delivered_ms: int = -1
    closed_ms: int = -1


@dataclass(slots=True)
class ProviderStats:
    won: int = 0
    paid_jobs: int = 0
    earned: int = 0
    refused: int = 0
    delivered: int = 0
    first_wrong_ms: int = -1
    first_won_ms: int = -1
    detected_ms: int = -1
    jobs_before_detection: int = -1
    misbehaved: int = 0


@dataclass(slots=True)
class _TxLane:
    """A node's ledger transactions: the next sequence number it signs, what is signed
    and not yet in a block, and payloads waiting for the window."""

    key: nacl.signing.SigningKey
    next_seq: int = 0
    inflight: dict[int, ledger.Payload] = field(default_factory=dict)
    queued: list[ledger.Payload] = field(default_factory=list)


@dataclass(slots=True)
class _Series:
    rows: list[dict[str, Any]] = field(default_factory=list)


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
        self.payees: dict[bytes, frozenset[bytes]] = {}
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
                    determinism_class=f"sim/{t.device}",
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
        answer = scheduler.Output(data, output_commitment(data) or b"", "sim/cpu")
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

    # --- jobs -----------------------------------------------------------------------------

    def _next_arrival(self, now: int, rate: float, until_ms: int) -> None:
        if rate <= 0:
            return
        t = now + int(self.r_jobs.expovariate(rate) * 1000)
        last = int((self.sc.duration_s - self.sc.drain_s) * 1000)
        if until_ms >= 0:
            last = min(last, until_ms)
        if t < last:
            self.loop.at(t, EV_ARRIVAL, 0, rate, until_ms)

    def _on_burst(self, now: int, node: int, burst: Any, b: Any) -> None:
        self._next_arrival(now, burst.rate_per_s, now + int(burst.duration_s * 1000))

    def _on_arrival(self, now: int, node: int, rate: Any, until: Any) -> None:
        cap = self.sc.jobs.max_jobs
        if cap and self.counters["submitted"] >= cap:
            return  # arrivals end after the scenario's count of jobs
        self._next_arrival(now, rate, until)
        self._submit_job(now)

    def _submit_job(self, now: int) -> None:
        sc, rng = self.sc, self.r_jobs
        js = sc.jobs
        r = rng.randrange(self.R)
        node = self.P + r
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
        req = self._requester(r)
        self._execute(node, False, req.block(self.state.height, now))
        deadline = now + int(js.deadline_s * 1000)
        blocks = math.ceil(js.deadline_s * 1000 / sc.block_ms)
        expiry = self.state.height + blocks + CLAIM_WINDOW_BLOCKS + SETTLE_MARGIN_BLOCKS + 10
        spec = JobSpec(
            requester=self.pubs[node],
            nonce=nonce,
            runtime="onnx",
            model_hash=model,
            model_size=model_size,
            inputs=(InputRef(name="x", hash=content_hash(nonce), size=input_size),),
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
        found = self._sample(cls, js.lookup)
        try:
            job_id, effects = req.submit(spec, now, providers=[self.pubs[i] for i in found])
        except scheduler.SchedulerError:
            return
        self.requesters_with_jobs[node] = None
        self._note_job(job_id, r, now, spec, canary=False)
        # a spot check's canary is a second job in the same effects: note it at its lock
        self._execute(node, False, effects)

    def _note_job(self, job_id: bytes, r: int, now: int, spec: JobSpec, *, canary: bool) -> None:
        self.jobs[job_id] = JobRecord(job_id, r, now, spec.redundancy, spec.max_price, canary)
        self.job_order.append(job_id)
        if not canary:
            self.counters["submitted"] += 1

    def _sample(self, cls: str, k: int) -> list[int]:
        """Up to ``k`` online providers of ``cls``: what a lookup (or a topic) reaches."""
        pool = self.classes.get(cls, ())
        if not pool or k <= 0:
            return []
        out: dict[int, None] = {}
        rng = self.r_lookup
        n = len(pool)
        for _ in range(4 * k):
            i = pool[rng.randrange(n)]
            if self.online[i]:
                out[i] = None
                if len(out) >= k:
                    break
        return list(out)

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

    # --- effects --------------------------------------------------------------------------

    def _effect_handlers(self) -> dict[type, Any]:
        """Effect type -> ``handler(node, is_provider, effect, now)`` (one dict lookup per
        effect instead of a chain of ``isinstance``; effects are final dataclasses)."""
        return {
            scheduler.SetTimer: self._fx_set_timer,
            scheduler.CancelTimer: self._fx_cancel_timer,
            scheduler.Send: self._fx_send,
            scheduler.Publish: self._fx_publish,
            scheduler.Deliver: self._fx_deliver,
            scheduler.RunJob: self._fx_run_job,
            scheduler.AbortJob: self._fx_abort_job,
            scheduler.NotifyUser: self._notify,
            scheduler.JobDone: self._fx_job_done,
            scheduler.Misbehaved: self._fx_misbehaved,
            scheduler.LockEscrow: self._fx_lock,
            scheduler.Settle: self._fx_settle,
            scheduler.Refund: self._fx_refund,
            scheduler.ClaimWithReceipt: self._fx_claim,
            scheduler.Attest: self._fx_attest,
            scheduler.Slash: self._fx_slash,
        }

    def _execute(self, node: int, is_provider: bool, effects: list[scheduler.Effect]) -> None:
        if not effects:
            return
        now = self.loop.now_ms
        handlers = self._handlers
        for e in effects:
            handler = handlers.get(type(e))
            if handler is not None:
                handler(node, is_provider, e, now)

    def _fx_set_timer(self, node: int, is_provider: bool, e: Any, now: int) -> None:
        self._timer_token += 1
        token = self._timer_token
        key = e.key
        self.timers[(node, key)] = token
        self.loop.at(e.at_ms, EV_TIMER, node, key, token, key.job_id[:8])

    def _fx_cancel_timer(self, node: int, is_provider: bool, e: Any, now: int) -> None:
        self.timers.pop((node, e.key), None)

    def _fx_send(self, node: int, is_provider: bool, e: Any, now: int) -> None:
        self._send_message(node, e.peer, e.message.raw, now)

    def _fx_publish(self, node: int, is_provider: bool, e: Any, now: int) -> None:
        self._publish(node, e, now)

    def _fx_deliver(self, node: int, is_provider: bool, e: Any, now: int) -> None:
        dst = self.id_of.get(e.peer)
        if dst is not None:
            self._send(node, dst, e.result.raw, e.output or None, now)

    def _fx_run_job(self, node: int, is_provider: bool, e: Any, now: int) -> None:
        self._run_job(node, e, now)

    def _fx_abort_job(self, node: int, is_provider: bool, e: Any, now: int) -> None:
        self._stop_run(node, e.job_id, now)

    def _fx_job_done(self, node: int, is_provider: bool, e: Any, now: int) -> None:
        self._job_done(node, e, now)

    def _fx_misbehaved(self, node: int, is_provider: bool, e: Any, now: int) -> None:
        self.misbehaved += 1
        peer = self.id_of.get(e.peer) if e.peer is not None else None
        if peer is not None and peer < self.P:
            self.pstats[peer].misbehaved += 1

    def _fx_lock(self, node: int, is_provider: bool, e: Any, now: int) -> None:
        self._lock(node, e, now)

    def _fx_settle(self, node: int, is_provider: bool, e: Any, now: int) -> None:
        self._settle(node, e, now)

    def _fx_refund(self, node: int, is_provider: bool, e: Any, now: int) -> None:
        self._queue_tx(node, ledger.Refund(e.job_id), now)

    def _fx_claim(self, node: int, is_provider: bool, e: Any, now: int) -> None:
        self._queue_tx(node, ledger.Claim(e.job_id, e.award.raw, e.receipt.raw, e.key), now)

    def _fx_attest(self, node: int, is_provider: bool, e: Any, now: int) -> None:
        self._attest(node, e, now)

    def _fx_slash(self, node: int, is_provider: bool, e: Any, now: int) -> None:
        self._slash_seen(e, now)

    def _send_message(self, node: int, peer: bytes, raw: bytes, now: int) -> None:
        dst = self.id_of.get(peer)
        if dst is None:
            return
        if (
            node >= self.P
            and node - self.P in self.nonpayer
            and raw_tag(raw) == protocol.Receipt.TAG
        ):
            return  # a requester that does not pay withholds receipts too
        self._send(node, dst, raw, None, now)

    def _publish(self, node: int, e: scheduler.Publish, now: int) -> None:
        for i in self._sample(e.topic, self.sc.jobs.topic_reach):
            self._send(node, i, e.message.raw, None, now)

    def _notify(self, node: int, is_provider: bool, e: scheduler.NotifyUser, now: int) -> None:
        if is_provider:
            if e.event == scheduler.UserEvent.PAID:
                st = self.pstats[node]
                st.paid_jobs += 1
                st.earned += int(e.detail)
            elif e.event == scheduler.UserEvent.CLOSED and e.detail not in ("paid",):
                self._unpaid_close(node, e, now)
            return
        if e.event == scheduler.UserEvent.SPOT_CHECK and e.job_id not in self.jobs:
            job = self.requesters[node].jobs[e.job_id]  # a spot check's canary
            self._note_job(e.job_id, node - self.P, now, job.spec, canary=True)
        rec = self.jobs.get(e.job_id)
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

    def _unpaid_close(self, node: int, e: scheduler.NotifyUser, now: int) -> None:
        rec = self.jobs.get(e.job_id)
        if rec is None or rec.requester not in self.nonpayer:
            return
        if not e.detail.startswith(("escrow closed without", "escrow expired")):
            return
        if self.kind[node] in _CHEATING:
            return
        r = rec.requester
        self.unpaid[r] = self.unpaid.get(r, 0) + 1
        self.unpaid_first_ms.setdefault(r, now)

    def _job_done(self, node: int, e: scheduler.JobDone, now: int) -> None:
        rec = self.jobs.get(e.job_id)
        if rec is None:
            return
        rec.finished_ms = now
        rec.outcome = str(e.status)
        rec.reason = e.reason
        if not rec.canary:
            self.counters[str(e.status)] += 1
        job = self.requesters[node].jobs.get(e.job_id)
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
            st = self.pstats[self.id_of[rep.provider]]
            st.delivered += 1
            if rep.output.data != truth and st.first_wrong_ms < 0:
                st.first_wrong_ms = rep.received_ms

    def _attest(self, node: int, e: scheduler.Attest, now: int) -> None:
        if not e.positive and e.reason == "outvoted":
            p = self.id_of.get(e.subject)
            if p is not None and p < self.P:
                st = self.pstats[p]
                st.refused += 1
                if st.detected_ms < 0:
                    st.detected_ms = now
                    st.jobs_before_detection = st.delivered + 1
        elif not e.positive:
            p = self.id_of.get(e.subject)
            if p is not None and p < self.P and self.kind[p] in ("spammer", "lazy"):
                st = self.pstats[p]
                if st.detected_ms < 0:
                    st.detected_ms = now
                    st.jobs_before_detection = st.won
        payees = self.payees.get(e.job_id)
        if payees is None:
            self.pending_attests.setdefault(e.job_id, []).append(e)
        elif e.subject in payees:
            self._queue_tx(node, ledger.Attest(e.job_id, e.subject, int(e.positive)), now)
        else:
            self._report(e)

    def _report(self, e: scheduler.Attest) -> None:
        """A verdict against a provider the job did not pay goes to the coordinator as
        evidence (its signed Result with the paid majority's), as the daemon's reports
        do; the coordinator slashes once the job's escrow is closed (_slash_reported)."""
        if e.positive or not any(r.signer == e.subject for r in e.evidence):
            return
        key = (e.job_id, e.subject)
        if key not in self.reports:
            evidence = tuple(r.raw for r in e.evidence[:SLASH_EVIDENCE])
            self.reports[key] = (evidence, self.state.height + REPORT_WAIT_BLOCKS)

    def _slash_reported(self, state: ledger.State, now: int) -> None:
        """The coordinator submits a slash for each report whose escrow closed (the
        ledger checks the evidence against the settlement), as ``node.daemon.reports``
        does: at most ``slash_amount``, nothing when the offender has nothing bonded or the
        evidence would not pass (counted as ``reports_refused``)."""
        for key, (evidence, give_up) in list(self.reports.items()):
            job_id, offender = key
            escrow = state.escrow(job_id)
            if escrow is not None and escrow.is_open and state.height <= give_up:
                continue
            del self.reports[key]
            if escrow is None or escrow.is_open:
                continue
            a = state.account(offender)
            amount = min(a.stake + a.unbonding_total, self.sc.coordinator.slash_amount)
            if amount <= 0:
                continue
            slash = ledger.Slash(offender, amount, "failed_verification", evidence)
            try:
                ledger.check_slash_evidence(state, slash)
            except ledger.LedgerError:
                self.reports_refused += 1
                continue
            self.slashes += 1
            self._queue_tx(self.coord, slash, now)

    def _slash_seen(self, e: scheduler.Slash, now: int) -> None:
        p = self.id_of.get(e.provider)
        if p is not None and p < self.P:
            st = self.pstats[p]
            if st.detected_ms < 0:
                st.detected_ms = now
                st.jobs_before_detection = st.delivered + 1

    # --- runs -----------------------------------------------------------------------------

    def _run_job(self, i: int, e: scheduler.RunJob, now: int) -> None:
        kind = self.kind[i]
        job_id = e.job.id
        st = self.pstats[i]
        st.won += 1
        if st.first_won_ms < 0:
            st.first_won_ms = now
        if kind == "lazy":
            # win, then vanish: the process is gone for a while
            self._go_offline(i, now)
            self.loop.at(now + int(self.sc.adversaries.lazy_away_s * 1000), EV_ONLINE, i)
            return
        if kind == "spammer":
            return  # never runs what it wins
        spec = e.job.message
        tier = self.sc.tiers[self.tier[i]]
        cache = self.model_cache.setdefault(i, OrderedDict())
        size = sum(x.size for x in spec.inputs)
        fetch = 0
        if spec.model_hash in cache:
            cache.move_to_end(spec.model_hash)
        else:
            size += spec.model_size
            fetch = int(self.sc.jobs.model_fetch_ms)
            cache[spec.model_hash] = None
            if len(cache) > MODEL_CACHE:
                cache.popitem(last=False)
        fetch += transfer_ms(size, tier.bandwidth_mbps) + self.net.latency_ms(
            i, self.id_of[spec.requester]
        )
        js = self.sc.jobs
        if js.run_ms:
            # a measured run of the model, after its sandbox worker's start-up
            worker = (spec.requester, spec.model_hash)
            self.run_worker[(i, job_id)] = worker
            estimate = int(js.run_ms + self.workers.acquire(i, worker, now))
        else:
            estimate = scheduler.estimate_run_ms(spec, tier.bench_score, 200)
        noise = js.run_noise
        run = int(estimate * (self.r_run.lognormvariate(0.0, noise) if noise else 1.0))
        cheat = kind in _CHEATING and self.r_run.random() < self.sc.adversaries.cheat_rate
        if cheat:
            who = b"collude" if kind in ("colluder", "sybil") else self.pubs[i]
            data = b"bad:" + content_hash(job_id + who)
        else:
            data = honest_output(spec.model_hash, spec.inputs)
        self.running[(i, job_id)] = (now + fetch, run, data)
        self.loop.at(now + fetch + run, EV_RUN_DONE, i, job_id, self.incarnation[i], job_id[:8])

    def _stop_run(self, i: int, job_id: bytes, now: int) -> None:
        self.run_worker.pop((i, job_id), None)  # an aborted run's worker is killed
        run = self.running.pop((i, job_id), None)
        if run is not None:
            started, _, _ = run
            rec = self.jobs.get(job_id)
            if now > started:
                self.busy_ms += now - started
                if rec is not None:
                    rec.compute_ms += now - started

    def _on_run_done(self, now: int, i: int, job_id: Any, incarnation: Any) -> None:
        if incarnation != self.incarnation[i]:
            return
        run = self.running.pop((i, job_id), None)
        if run is None:
            return
        _, duration, data = run
        self.busy_ms += duration
        worker = self.run_worker.pop((i, job_id), None)
        if worker is not None:
            pool = max(2, self.sc.tiers[self.tier[i]].max_concurrency)
            self.workers.release(i, worker, pool)
        rec = self.jobs.get(job_id)
        if rec is not None:
            rec.compute_ms += duration
            if data.startswith(b"ok:"):
                rec.min_run_ms = duration if rec.min_run_ms < 0 else min(rec.min_run_ms, duration)
        p = self.providers.get(i)
        if p is None:
            return
        tier = self.sc.tiers[self.tier[i]]
        out = scheduler.Output(data, output_commitment(data) or b"", f"sim/{tier.device}")
        usage = Usage(cpu_ms=duration, wall_ms=duration, peak_memory_kb=0, gpu_ms=0)
        self._execute(i, True, p.job_finished(job_id, now, outcome="ok", output=out, usage=usage))

    # --- the ledger -----------------------------------------------------------------------

    def _lock(self, node: int, e: scheduler.LockEscrow, now: int) -> None:
        lock = ledger.Lock(
            e.job_id,
            e.amount,
            e.claim_height,
            e.expiry_height,
            e.max_per_payee,
            e.max_payees,
            e.spec,
        )
        self._queue_tx(node, lock, now)

    def _settle(self, node: int, e: scheduler.Settle, now: int) -> None:
        if node - self.P in self.nonpayer:
            return  # never settles; refunds at expiry
        payouts = e.as_dict()
        self.payees[e.job_id] = frozenset(payouts)
        bids = e.bids()
        items = tuple(ledger.Payout(p, a, bids[p]) for p, a in sorted(payouts.items()))
        self._queue_tx(node, ledger.Settle(e.job_id, items), now)
        for attest in self.pending_attests.pop(e.job_id, []):
            if attest.subject in payouts:
                self._queue_tx(
                    node, ledger.Attest(e.job_id, attest.subject, int(attest.positive)), now
                )
            else:
                self._report(attest)

    def _lane(self, node: int) -> _TxLane:
        lane = self.lanes.get(node)
        if lane is None:
            lane = self.lanes[node] = _TxLane(self.keys[node], self.state.next_seq(self.pubs[node]))
        return lane

    def _queue_tx(self, node: int, payload: ledger.Payload, now: int) -> None:
        lane = self._lane(node)
        lane.queued.append(payload)
        self._pump(node, lane, now)

    def _pump(self, node: int, lane: _TxLane, now: int) -> None:
        while lane.queued and len(lane.inflight) < TX_WINDOW:
            payload = lane.queued.pop(0)
            self._sign_and_send(node, lane, payload, now)
        if lane.queued or lane.inflight:
            self.lanes_busy[node] = None
        else:
            self.lanes_busy.pop(node, None)

    def _sign_and_send(self, node: int, lane: _TxLane, payload: ledger.Payload, now: int) -> None:
        seq = lane.next_seq
        lane.next_seq += 1
        lane.inflight[seq] = payload
        signed = ledger_tx.make(
            lane.key, CHAIN_ID, seq, payload, expiry_height=self.state.height + TX_LIFETIME_BLOCKS
        )
        delay = self.net.latency_ms(node, self.coord)
        self.loop.at(now + delay, EV_TX, node, signed.raw, seq, signed.raw[-16:])

    def _on_tx(self, now: int, node: int, raw: Any, seq: Any) -> None:
        if not self.coord_up:
            self.backlog.append((node, raw, seq))  # the sender retries until it is back
            return
        self._admit(node, raw, seq, now)

    def _admit(self, node: int, raw: bytes, seq: int, now: int) -> None:
        try:
            self.producer.submit(raw)
        except ledger.TransactionRejected as exc:
            self._tx_failed(node, seq, str(exc), now)

    def _tx_failed(self, node: int, seq: int, reason: str, now: int) -> None:
        """A transaction of ``node`` was refused or dropped: what it was for learns so,
        and the sequence number is filled (a transfer of 1 to itself), as the daemon's
        queue does, so the transactions after it are not held back."""
        lane = self.lanes.get(node)
        if lane is None:
            return
        payload = lane.inflight.pop(seq, None)
        if payload is None:
            return
        self.tx_refused += 1
        if isinstance(payload, ledger.Lock) and node >= self.P:
            req = self.requesters.get(node)
            if req is not None:
                self._execute(node, False, req.escrow_failed(payload.job_id, reason, now))
        if isinstance(payload, ledger.Transfer):
            return  # a filler failed: resync from the chain at the next block
        lane.inflight[seq] = ledger.Transfer(self.pubs[node], 1)
        filler = ledger_tx.make(
            lane.key,
            CHAIN_ID,
            seq,
            lane.inflight[seq],
            expiry_height=self.state.height + TX_LIFETIME_BLOCKS,
        )
        self.loop.at(now + self.net.latency_ms(node, self.coord), EV_TX, node, filler.raw, seq)

    def _on_coord(self, now: int, node: int, up: Any, b: Any) -> None:
        self.coord_up = bool(up)
        if up:
            backlog, self.backlog = self.backlog, []
            for sender, raw, seq in backlog:
                self._admit(sender, raw, seq, now)

    def _on_block(self, now: int, node: int, a: Any, b: Any) -> None:
        self.loop.at(now + self.sc.block_ms, EV_BLOCK, self.coord)
        if not self.coord_up:
            return
        prev = self.producer.state
        effects = self.producer.tick(now)
        dropped = []
        for e in effects:
            if isinstance(e, ledger.Commit):
                self.prev_state = prev
                self.state = e.state
                self.blocks += 1
                self.block_bytes += len(e.block.raw)
                self.last_block_raw = e.block.raw
                if self.auditor is not None:
                    self.auditor.on_blocks(self.pubs[self.coord], [e.block.raw])
            elif isinstance(e, ledger.TxDropped):
                dropped.append(e)
        if self.reports:
            self._slash_reported(self.state, now)
        for d in dropped:
            sender = self.id_of.get(d.sender)
            if sender is not None:
                self._tx_failed(sender, d.seq, d.reason, now)
        delay = int(self.sc.network.block_delay_ms)
        self.loop.at(now + delay, EV_BLOCK_SEEN, self.coord, self.state, None, self.state.root[:8])

    def _on_block_seen(self, now: int, node: int, state: Any, b: Any) -> None:
        height = state.height
        escrow = state.escrow
        # requesters with jobs follow every block
        for n in list(self.requesters_with_jobs):
            req = self.requesters[n]
            self._execute(n, False, req.follow_ledger(height, escrow, now))
            for job_id, job in list(req.jobs.items()):
                if job.phase == scheduler.JobPhase.CLOSED:
                    req.forget(job_id)
                    self.pending_attests.pop(job_id, None)
                    self.payees.pop(job_id, None)
            if not req.jobs:
                del self.requesters_with_jobs[n]
        for i in list(self.active_providers):
            p = self.providers.get(i)
            if p is None:
                del self.active_providers[i]
                continue
            self._execute(i, True, p.follow_ledger(height, escrow, now))
            if not p.work:
                del self.active_providers[i]
        # transaction lanes: what made it in frees the window
        for n in list(self.lanes_busy):
            lane = self.lanes[n]
            chain_next = state.next_seq(self.pubs[n])
            for seq in [s for s in lane.inflight if s < chain_next]:
                del lane.inflight[seq]
            if not lane.inflight and lane.next_seq != chain_next:
                # everything sent is in a block or was refused: the chain is the truth
                lane.next_seq = chain_next
            self._pump(n, lane, now)

    def _on_equivocate(self, now: int, node: int, a: Any, b: Any) -> None:
        """The coordinator signs a second block at the height it produced last (the same
        parent, different contents) and sends it to the auditing replica."""
        if self.auditor is None or self.state.height == 0:
            return
        produced = ledger.produce_block(self.prev_state, self.keys[self.coord], [])
        if produced.block.raw == self.last_block_raw:
            return
        self.equivocations += 1
        for e in self.auditor.on_blocks(self.pubs[self.coord], [produced.block.raw]):
            if isinstance(e, ledger.ProofFound):
                self.equivocations_detected.append(now)

    # --- the series -----------------------------------------------------------------------

    def _on_sample(self, now: int, node: int, final: Any, b: Any) -> None:
        if final is None:
            self.loop.at(now + int(self.sc.interval_s * 1000), EV_SAMPLE, 0)
        # mean runs in progress over the interval (a point sample would see the bursts
        # that follow each block, or the gaps between them, depending on the phase)
        span = max(1, now - self._last_sample_ms)
        busy = round((self.busy_ms - self._last_busy_ms) / span, 2)
        self._last_sample_ms, self._last_busy_ms = now, self.busy_ms
        c = self.counters
        self.series.rows.append(
            {
                "t_s": now / 1000.0,
                "submitted": c["submitted"],
                "verified": c["verified"],
                "failed": c["failed"] + c.get("unverified", 0),
                "online_providers": self.online_count,
                "busy_providers": busy,
                "ledger_height": self.state.height,
                "ledger_bytes": self.block_bytes,
                "mempool": len(self.producer.mempool),
                "events": self.loop.events,
            }
        )


def raw_tag(raw: bytes) -> str:
    """The domain tag of a signed message's wire bytes (cheap: no signature check)."""
    try:
        value = protocol.unpack(raw, check_types=False)
        return str(value[0])
    except (protocol.ProtocolError, IndexError, TypeError):
        return ""


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
