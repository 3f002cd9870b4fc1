"""Review round 17 on the settle limit (R16B-4's mend). R17B-3: at the settle limit an
accepted result held sealed (another replica still ran) got no receipt, as it does at the
deadline, so work delivered in time went unpaid and the user was told no output came.
R17B-5: results sent late one after another drew sealed receipts claimable past the
escrow's expiry, and the job waited past it; a sealed receipt's claim_by is now at most the
block before the expiry."""

from __future__ import annotations

import protocol
import scheduler
from scheduler._requester_jobs import KEY_DUE_BLOCKS

from ..keys import key, pub
from ..ledger.helpers import BOB
from ._world import World, spec

EXPIRY = 60
LIMIT = EXPIRY - 12
DATA = b"the real output " * 4
DAVE = key("dave")


def _receipts(effects: list[scheduler.Effect]) -> list[protocol.Receipt]:
    return [
        e.message.message
        for e in effects
        if isinstance(e, scheduler.Send) and isinstance(e.message.message, protocol.Receipt)
    ]


def test_the_settle_limit_receipts_a_result_held_sealed_and_waits_for_its_key() -> None:
    w = World([BOB, DAVE], floors={pub(DAVE): 1100})
    w.submit(spec(b"r17b3", redundancy=2, expiry=EXPIRY, deadline_ms=3_000_000))
    w.c.until(LIMIT - 2)
    w.sync(1000)
    assert not _receipts(w.deliver(pub(BOB), DATA, 1100))  # DAVE still runs: no receipt yet
    out: list[scheduler.Effect] = []
    for now in (1200, 1300):  # up to the settle limit
        w.c.ok()
        out += w.pump(w.sync(now), now + 10)
    assert w.c.height == LIMIT
    (receipt,) = _receipts(out)
    assert receipt.provider == pub(BOB) and receipt.at_once and receipt.claim_by < EXPIRY
    assert not [e for e in out if isinstance(e, scheduler.JobDone)]  # waits for the key
    claims = [e for e in out if isinstance(e, scheduler.ClaimWithReceipt)]
    w.c.ok(*[w.claim(fx) for fx in claims])
    out = w.pump(w.sync(1400), 1410)
    (done,) = [e for e in out if isinstance(e, scheduler.JobDone)]
    assert done.output is not None and done.output.data == DATA
    escrow = w.c.state.escrow(w.job_id)
    assert escrow is not None and escrow.paid_to(pub(BOB)) == 1250


def test_a_sealed_receipt_is_claimable_at_most_until_the_block_before_the_expiry() -> None:
    # R17B-5: receipts signed late (colluding winners sending their bytes one after
    # another) were claimable past the escrow's expiry, and the job waited past it.
    from scheduler._requester_exchange import issue_receipt

    for height, claim_by in (
        (EXPIRY - 10, min(EXPIRY - 10 + KEY_DUE_BLOCKS, EXPIRY - 1)),
        (EXPIRY - 3, EXPIRY - 1),
        (EXPIRY - 1, None),
    ):
        w = World([BOB, DAVE], floors={pub(DAVE): 1100})
        w.submit(spec(b"r17b5-%d" % height, redundancy=2, expiry=EXPIRY, deadline_ms=3_000_000))
        w.sync(1000)
        w.deliver(pub(BOB), DATA, 1100)  # DAVE still runs: no receipt yet
        job = w.r.job(w.job_id)
        (rep,) = [r for r in job.replicas if r.provider == pub(BOB)]
        assert rep.receipt is None and rep.sealed
        sent = issue_receipt(job, rep, 1200, w.r.config, w.r.me, height, sealed=True)
        if claim_by is None:  # no block before the expiry left to claim in: none signed
            assert not _receipts(sent) and rep.receipt is None
        else:
            (receipt,) = _receipts(sent)
            assert receipt.claim_by == claim_by
