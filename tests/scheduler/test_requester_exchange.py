"""The requester's side of the fair exchange over the real ledger: when a receipt is
signed, how long its key is awaited, and which results are receipted at the deadline."""

from __future__ import annotations

import pytest

from scheduler import ClaimWithReceipt, Effect
from scheduler._requester_jobs import KEY_DUE_BLOCKS

from . import _harness
from ._harness import Machine, Node, Sim, honest_output


def test_a_receipt_for_a_result_accepted_short_awaits_its_key_for_blocks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Review round 2 (K1): results accepted short of the redundancy are receipted when no
    replica is left to award; that receipt recorded no height, so its key was awaited
    for seconds, not blocks. With slow blocks the honest winner was failed as withholding
    it, paid by its claim, and the requester kept nothing."""
    monkeypatch.setattr(_harness, "BLOCK_MS", 8_000)
    sim = Sim(5)
    req = sim.add_requester()
    silent = sim.add_provider()
    good = sim.add_provider()
    sim.run_until(sim.now + 10 * _harness.BLOCK_MS)  # a chain past its first blocks
    spec = sim.spec(req, redundancy=2, max_retries=0, deadline_ms=120_000)
    job = sim.submit(req, spec, providers=[silent, good])
    silent.run_ms = 10**8  # never finishes: its replica fails at its award deadline
    sim.run_jobs([job], limit_ms=3_000_000)
    done = sim.done[job]
    assert done.status == "unverified" and done.output == honest_output(spec)
    assert [p.provider for p in done.paid] == [good.pub]
    assert not [a for a in sim.attests if a.subject == good.pub]
    (payout,) = done.paid
    assert sim.ledger.state.account(good.pub).balance == payout.amount


def test_a_result_delivered_in_time_is_receipted_at_the_deadline() -> None:
    """Review round 2 (U1): while another replica still ran, a result that agreed (sealed
    bytes held) got no receipt, and the deadline decided the job without it: the requester
    held its sealed bytes and never opened them, and its provider was paid nothing. At the
    deadline it now gets its sealed receipt and the job waits for the key (its claim)."""
    sim = Sim(5)
    req = sim.add_requester()
    quick = sim.add_provider()
    slow = sim.add_provider(base_run_ms=17_000)  # its award deadline is the job's
    slow.run_ms = 10**8  # never finishes, heartbeats all along
    spec = sim.spec(req, redundancy=2, max_retries=0, deadline_ms=20_000)
    job = sim.submit(req, spec, providers=[quick, slow])
    sim.run_jobs([job], limit_ms=400_000)
    done = sim.done[job]
    assert done.status == "unverified" and done.output == honest_output(spec)
    (payout,) = done.paid
    assert payout.provider == quick.pub
    assert sim.ledger.state.account(quick.pub).balance == payout.amount
    assert sim.ledger.state.account(slow.pub).balance == 0
    assert not [a for a in sim.attests if a.subject == quick.pub]


class LateClaim(Sim):
    """A simulation whose first sealed claim is held back ``delay_ms`` by its provider."""

    def __init__(self, seed: int, delay_ms: int) -> None:
        super().__init__(seed)
        self.delay_ms = delay_ms
        self.late: bytes = b""
        self.reserves = False  # every key comes with its claim's block

    def _carry_out(self, node: Node, role: Machine, fx: Effect) -> None:
        if role == "provider" and isinstance(fx, ClaimWithReceipt) and not self.late:
            self.late = node.pub
            self._at(
                self.now + self.delay_ms, lambda: super(LateClaim, self)._carry_out(node, role, fx)
            )
            return
        super()._carry_out(node, role, fx)


#: A claim held back this long lands past its receipt's claim_by (blocks of 1 s).
LATE_MS = (KEY_DUE_BLOCKS + 2) * _harness.BLOCK_MS


@pytest.mark.parametrize(("redundancy", "providers"), [(1, 1), (2, 4)])
@pytest.mark.parametrize("delay_ms", [2_000, LATE_MS, 20_000])
def test_a_sealed_claim_held_back_past_its_claim_by_is_never_paid(
    redundancy: int, providers: int, delay_ms: int
) -> None:
    """Review round 2 (D1): a verified winner held its claim back until the requester had
    failed it as withholding its key; then it claimed and was paid, for an output the
    requester no longer read (and, with a replacement, paid twice). The ledger now takes a
    sealed claim only up to its receipt's claim_by, and the requester waits that long."""
    sim = LateClaim(5, delay_ms)
    req = sim.add_requester()
    for _ in range(providers):
        sim.add_provider()
    retries = 0 if providers == 1 else 2
    spec = sim.spec(req, redundancy=redundancy, max_retries=retries, deadline_ms=60_000)
    job = sim.submit(req, spec)
    sim.run_jobs([job], limit_ms=400_000)
    done = sim.done[job]
    claimer = sim.ledger.state.account(sim.late).balance
    escrow = sim.ledger.escrow(job)
    assert escrow is not None and not escrow.is_open
    # Paid exactly when the requester read its output: never for an output it dropped.
    assert (claimer > 0) == bool(escrow.unsealed_by(sim.late))
    assert (claimer > 0) == any(p.provider == sim.late for p in done.paid)
    spent = 100_000_000 - sim.ledger.state.account(req.pub).balance
    assert spent == sum(p.amount for p in done.paid)
    if delay_ms >= LATE_MS:
        assert claimer == 0 and [a.subject for a in sim.attests] == [sim.late]
    if providers > 1:
        assert done.status == "verified" and done.output == honest_output(spec)
        assert len(done.paid) == redundancy
