"""Review round 16, R16B-4: the settle limit forced a job's end while its winner's sealed
claim could still land (within its ``claim_by``). The claim then landed and paid, the
requester never read the key it published, told its user the job failed with no output,
and attested against the winner as withholding it. Now the settle limit waits for such a
claim (until its ``claim_by``), as the deadline already did. Real Requester and Provider
machines, real ledger."""

from __future__ import annotations

import dataclasses
import hashlib

import ledger
import protocol
import scheduler
from ledger import tx
from scheduler._effects import Output

from ..keys import pub
from ..ledger.helpers import ALICE, CAROL, CHAIN, Chain, job_spec

EXPIRY = 60
LIMIT = EXPIRY - 12  # claim_window_blocks 10 + settle_margin_blocks 2 (the defaults)
DATA = b"the real output " * 4


def _commit(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=32).digest()


class _Run:
    """A redundancy-1 exact job whose result comes two blocks before the settle limit."""

    def __init__(self) -> None:
        self.c = c = Chain.new()
        self.r = scheduler.Requester(
            scheduler.RequesterConfig(key=ALICE, chain_id=CHAIN, commitment=_commit)
        )
        self.p = scheduler.Provider(
            scheduler.ProviderConfig(
                key=CAROL,
                chain_id=CHAIN,
                capability_classes=("onnx.cpu.m4",),
                escrow_of=lambda j: c.state.escrow(j),
                price_floor=1000,
            )
        )
        spec = dataclasses.replace(
            job_spec(ALICE, b"r16b4").message,
            max_price=2000,
            created_ms=0,
            bid_window_ms=100,
            deadline_ms=3_000_000,  # the deadline is after the settle limit
            escrow_expiry_height=EXPIRY,
        )
        self.job_id, eff = self.r.submit(spec, 0, providers=[pub(CAROL)])
        lock = next(e for e in eff if isinstance(e, scheduler.LockEscrow))
        c.ok(
            tx.lock(
                ALICE,
                CHAIN,
                c.seq(ALICE),
                job_id=lock.job_id,
                amount=lock.amount,
                claim_height=lock.claim_height,
                escrow_expiry=lock.expiry_height,
                max_per_payee=lock.max_per_payee,
                max_payees=lock.max_payees,
                spec=lock.spec,
                expiry_height=c.height + 10,
            )
        )
        self.sync(10)
        eff = self.p.receive(lock.spec, 20)
        bid = next(e.message for e in eff if isinstance(e, scheduler.Send))
        eff = self.r.receive(bid.raw, 30)
        eff = self.r.timer(scheduler.TimerKey(scheduler.TimerKind.BIDS, self.job_id), 200) + eff
        award = next(
            e.message
            for e in eff
            if isinstance(e, scheduler.Send) and isinstance(e.message.message, protocol.Award)
        )
        assert any(isinstance(e, scheduler.RunJob) for e in self.p.receive(award.raw, 210))
        c.until(LIMIT - 2)  # the run is long
        self.sync(1000)
        cls = bid.message.determinism_class
        eff = self.p.job_finished(
            self.job_id,
            1100,
            outcome="ok",
            output=Output(DATA, _commit(DATA), cls),
            usage=protocol.Usage(cpu_ms=1, wall_ms=1, peak_memory_kb=1, gpu_ms=0),
        )
        delivered = next(e for e in eff if isinstance(e, scheduler.Deliver))
        eff = self.r.receive(delivered.result.raw, 1110, output=delivered.output)
        receipt = next(
            e.message
            for e in eff
            if isinstance(e, scheduler.Send) and isinstance(e.message.message, protocol.Receipt)
        )
        self.claim_by = receipt.message.claim_by
        assert LIMIT < self.claim_by < EXPIRY  # claimable past the settle limit
        eff = self.p.receive(receipt.raw, 1120)
        claim = next(e for e in eff if isinstance(e, scheduler.ClaimWithReceipt))
        self.claim = tx.claim(
            CAROL,
            CHAIN,
            ledger.UNSEQUENCED,
            job_id=self.job_id,
            award=claim.award.raw,
            receipt=claim.receipt.raw,
            unseal_key=claim.key,
            expiry_height=c.height + 10,
        )

    def sync(self, now: int) -> list[scheduler.Effect]:
        c = self.c
        out = self.r.follow_ledger(c.height, c.state.escrow, now)
        out += self.p.follow_ledger(c.height, c.state.escrow, now)
        self.p.note_head(c.height)
        return out


def _done(effects: list[scheduler.Effect]) -> list[scheduler.JobDone]:
    return [e for e in effects if isinstance(e, scheduler.JobDone)]


def test_a_claim_landing_past_the_settle_limit_delivers_the_output() -> None:
    run = _Run()
    run.c.ok()
    assert not _done(run.sync(1200))
    run.c.ok()  # the settle limit: the winner may still claim, so the job waits
    assert run.c.height == LIMIT and not _done(run.sync(1300))
    run.c.ok(run.claim)  # it lands, within its claim_by
    effects = run.sync(1400)
    (done,) = _done(effects)
    assert done.status == scheduler.JobStatus.VERIFIED, done.reason
    assert done.output is not None and done.output.data == DATA
    assert not [e for e in effects if isinstance(e, scheduler.Attest) and not e.positive]
    e = run.c.state.escrow(run.job_id)
    assert e is not None and e.paid_to(pub(CAROL)) == 1250


def test_a_claim_that_never_comes_ends_the_job_once_its_claim_by_passed() -> None:
    run = _Run()
    effects: list[scheduler.Effect] = []
    while run.c.height < run.claim_by - 1:
        run.c.ok()
        effects = run.sync(1200 + run.c.height)
        assert not _done(effects), run.c.height
    run.c.ok()  # claim_by: no claim in this block, none can land later
    effects = run.sync(5000)
    (done,) = _done(effects)
    assert done.status == scheduler.JobStatus.FAILED and done.output is None
    withheld = [e for e in effects if isinstance(e, scheduler.Attest) and not e.positive]
    assert [a.subject for a in withheld] == [pub(CAROL)]
    assert run.c.height < EXPIRY  # decided before the escrow's expiry: the refund follows
