"""Review round 16, R16B-4: the settle limit forced a job's end while its winner's sealed
claim could still land (within its ``claim_by``). The claim then landed and paid, the
requester never read the key it published, told its user the job failed with no output,
and attested against the winner as withholding it. Now the settle limit waits for such a
claim (until its ``claim_by``), as the deadline already did. Real Requester and Provider
machines, real ledger."""

from __future__ import annotations

import protocol
import scheduler

from ..keys import pub
from ..ledger.helpers import CAROL
from ._world import World, spec

EXPIRY = 60
LIMIT = EXPIRY - 12  # claim_window_blocks 10 + settle_margin_blocks 2 (the defaults)
DATA = b"the real output " * 4


class _Run:
    """A redundancy-1 exact job whose result comes two blocks before the settle limit; its
    winner's claim (``claim``, claimable up to ``claim_by``) is signed but not yet sent."""

    def __init__(self) -> None:
        self.w = w = World([CAROL])
        self.c = w.c
        w.submit(spec(b"r16b4", redundancy=1, expiry=EXPIRY, deadline_ms=3_000_000))
        w.c.until(LIMIT - 2)  # the run is long
        w.sync(1000)
        out = w.deliver(pub(CAROL), DATA, 1100)
        (receipt,) = [
            e.message.message
            for e in out
            if isinstance(e, scheduler.Send) and isinstance(e.message.message, protocol.Receipt)
        ]
        self.claim_by = receipt.claim_by
        assert LIMIT < self.claim_by < EXPIRY  # claimable past the settle limit
        (claim,) = [e for e in out if isinstance(e, scheduler.ClaimWithReceipt)]
        self.claim = w.claim(claim)
        self.job_id = w.job_id

    def sync(self, now: int) -> list[scheduler.Effect]:
        return self.w.sync(now)


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
