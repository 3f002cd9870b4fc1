"""An award runs only on an escrow the provider's ledger shows covering it (review h23, W1:
a stranger that never locked awarded a provider's bids, filled its slots, so honest
requesters were answered "busy", and the sealed outputs of those runs were kept until an
expiry height the stranger chose)."""

from __future__ import annotations

from dataclasses import replace

import ledger
import protocol
from protocol import Award, Bid, JobSpec, NoBid, Usage
from scheduler import Misbehaved, Output, Provider, RunJob, Send, WorkPhase
from scheduler._provider import AWARD_HOLD_BLOCKS, NO_ESCROW_GRACE_MS
from scheduler._provider_bids import MAX_ESCROW_AHEAD_BLOCKS

from ._harness import BLOCK_MS, CHAIN, DETERMINISM, Node, Sim, commitment

USAGE = Usage(cpu_ms=1, wall_ms=1, peak_memory_kb=1, gpu_ms=0)


def _stranger_award(sim: Sim, prov: Node, spec: JobSpec) -> tuple[bytes, list[object]]:
    """A fresh key announces ``spec`` as its own, never locks, and awards our bid."""
    k = sim.key()
    signed = protocol.sign(replace(spec, requester=bytes(k.verify_key)), k, CHAIN)
    machine = prov.provider
    assert machine is not None
    (bid,) = [e.message for e in machine.receive(signed.raw, sim.now) if isinstance(e, Send)]
    assert isinstance(bid.message, Bid)
    award = Award(
        job_id=signed.id,
        requester=bytes(k.verify_key),
        provider=prov.pub,
        replica=0,
        price=bid.message.price,
        deadline_ms=spec.deadline_ms,
        bid_hash=bid.id,
    )
    return signed.id, list(machine.receive(protocol.sign(award, k, CHAIN).raw, sim.now + 10))


def test_awards_with_no_escrow_are_declined_and_honest_jobs_run() -> None:
    sim = Sim(seed=31)
    alice = sim.add_requester()
    node = sim.add_provider(max_concurrency=2)
    prov = node.provider
    assert prov is not None
    strangers = []
    for _ in range(2):
        spec = sim.spec(alice, deadline_ms=23 * 3_600_000, bid_window_ms=100)
        job_id, fx = _stranger_award(sim, node, spec)
        assert not [e for e in fx if isinstance(e, RunJob)]
        assert prov.get(job_id).phase == WorkPhase.AWARDED  # held: our view may lag
        strangers.append(job_id)
    assert prov.active == 0
    # An honest job meanwhile is bid on, awarded, run and paid.
    honest = sim.submit(alice, sim.spec(alice))
    sim.run_jobs([honest])
    assert sim.done[honest].status == "verified"
    assert sim.ledger.escrow(honest).paid_to(node.pub) > 0  # type: ignore[union-attr]
    # The stranger's awards were declined once AWARD_HOLD_BLOCKS blocks showed no escrow.
    assert all(job_id not in prov.work for job_id in strangers)


def _held_then(prov: Provider, job_id: bytes, now: int) -> list[object]:
    effects: list[object] = []
    for height in range(1, AWARD_HOLD_BLOCKS + 1):
        assert prov.get(job_id).phase == WorkPhase.AWARDED
        effects += prov.follow_ledger(height, lambda _: None, now + height * BLOCK_MS)
    return effects


def test_a_held_award_is_declined_with_a_reason_after_its_blocks() -> None:
    sim = Sim(seed=32)
    alice = sim.add_requester()
    node = sim.add_provider()
    assert node.provider is not None
    job_id, _ = _stranger_award(sim, node, sim.spec(alice))
    effects = _held_then(node.provider, job_id, sim.now)
    (nobid,) = [e.message.message for e in effects if isinstance(e, Send)]
    assert isinstance(nobid, NoBid) and nobid.reason == "busy"
    assert "no escrow on the ledger" in nobid.detail
    assert job_id not in node.provider.work


def test_an_award_seen_before_its_escrow_runs_at_the_next_block() -> None:
    """The requester awards once its ledger shows the lock; ours may be a block behind."""
    sim = Sim(seed=33)
    alice = sim.add_requester()
    node = sim.add_provider()
    prov = node.provider
    assert prov is not None
    first_seen: dict[bytes, int] = {}

    def one_block_behind(job_id: bytes) -> ledger.Escrow | None:
        escrow = sim.ledger.escrow(job_id)
        if escrow is None:
            return None
        seen = first_seen.setdefault(job_id, sim.ledger.height)
        return escrow if sim.ledger.height > seen else None

    prov.config = replace(prov.config, escrow_of=one_block_behind)
    job_id = sim.submit(alice, sim.spec(alice))
    phases: list[WorkPhase] = []
    while job_id not in sim.done and sim.now < sim.spec(alice).deadline_ms:
        sim.run_until(sim.now + 50)
        work = prov.work.get(job_id)
        if work is not None and (not phases or phases[-1] != work.phase):
            phases.append(work.phase)
    assert phases[:3] == [WorkPhase.BIDDING, WorkPhase.AWARDED, WorkPhase.RUNNING]
    assert sim.done[job_id].status == "verified"
    assert not [n for _, n in sim.notes if n.event == "replica_failed"]


def test_an_announcement_whose_escrow_expires_absurdly_late_is_refused() -> None:
    sim = Sim(seed=34)
    alice = sim.add_requester()
    node = sim.add_provider()
    prov = node.provider
    assert prov is not None
    prov.block(1_000, sim.now)
    for expiry in (1_000 + MAX_ESCROW_AHEAD_BLOCKS + 1, 2**40):
        spec = replace(sim.spec(alice), escrow_expiry_height=expiry)
        effects = prov.receive(protocol.sign(spec, alice.key, CHAIN).raw, sim.now)
        assert [type(e) for e in effects] == [Misbehaved]
        assert prov.work == {}
    spec = replace(sim.spec(alice), escrow_expiry_height=1_000 + MAX_ESCROW_AHEAD_BLOCKS)
    effects = prov.receive(protocol.sign(spec, alice.key, CHAIN).raw, sim.now)
    (bid,) = [e.message.message for e in effects if isinstance(e, Send)]
    assert isinstance(bid, Bid)


def test_delivered_work_with_no_escrow_is_dropped_after_its_deadline() -> None:
    """Work whose escrow the ledger no longer shows (nothing can pay it) is not kept, with
    its sealed output, until the job's escrow expiry."""
    sim = Sim(seed=35)
    alice = sim.add_requester()
    node = sim.add_provider()
    prov = node.provider
    assert prov is not None
    job_id = sim.submit(alice, sim.spec(alice))
    while (work := prov.work.get(job_id)) is None or work.phase != WorkPhase.RUNNING:
        sim.run_until(sim.now + 10)  # the announcement, the lock's block, the award
    spec = prov.get(job_id).spec
    data = b"output"
    out = Output(data, commitment(data), DETERMINISM)
    prov.job_finished(job_id, sim.now, outcome="ok", output=out, usage=USAGE)
    assert prov.get(job_id).phase == WorkPhase.DELIVERED
    height = sim.ledger.height
    late = spec.deadline_ms + NO_ESCROW_GRACE_MS
    prov.follow_ledger(height + 1, lambda _: None, late - 1)
    assert job_id in prov.work
    prov.follow_ledger(height + 2, lambda _: None, late)
    assert job_id not in prov.work
