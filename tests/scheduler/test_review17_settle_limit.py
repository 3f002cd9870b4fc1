"""Review round 17 on the settle limit (R16B-4's mend). R17B-3: at the settle limit an
accepted result held sealed (another replica still ran) got no receipt, as it does at the
deadline, so work delivered in time went unpaid and the user was told no output came.
(R17B-5, results sent late one after another drawing sealed receipts claimable past the
escrow's expiry, is mended with it: a sealed receipt's claim_by is at most the block
before the expiry; round 17's s4_stall_chain.py shows it, five colluders needed.)"""

from __future__ import annotations

import protocol
import scheduler

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
