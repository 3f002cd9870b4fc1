"""A peer that bids the lowest price from fresh keys and declines every award it gets
(specs/marketplace.md, "Failing" and "Award order"): declines cost nothing, but past the
job's budget of them, keys with no settled job are awarded after every established
provider and oldest bid first, so the honest bids that came before the fresh keys' are
reached."""

from __future__ import annotations

import nacl.signing
import pytest

from protocol import Award, Bid, JobSpec, NoBid, sign
from scheduler import Effect, ReplicaState, Send

from ..keys import pub
from ._harness import CHAIN, DETERMINISM, Machine, Node, Sim, honest_output

#: What an established provider has bonded (``RequesterConfig.probation_stake``).
ESTABLISHED_STAKE = 1_000_000


class DeclineLoop(Sim):
    """A simulation with one hostile peer (``relay``): for each announcement it sends
    ``keys`` bids at price 1 from fresh keys (or from ``keys`` established keys, with a
    record on the ledger); each award to one of them is declined by a NoBid "busy" from
    that key, followed by another bid at price 1 (from a fresh key, or the same one)."""

    def __init__(self, seed: int, keys: int, *, established: bool = False) -> None:
        super().__init__(seed)
        self.keys = keys
        self.ours: dict[bytes, nacl.signing.SigningKey] = {}
        self.seen: set[bytes] = set()
        self.relay = self.add_provider(capability_classes=("none",))
        self.established = [self.key() for _ in range(keys if established else 0)]
        for k in self.established:
            self.ledger.open_account(pub(k), balance=0, stake=ESTABLISHED_STAKE, settled_jobs=50)

    def bid(self, requester: Node, job_id: bytes, again: bytes = b"") -> None:
        if again and self.established:
            k = self.ours[again]
        else:
            k = self.established[len(self.ours)] if self.established else self.key()
        self.ours[pub(k)] = k
        bid = Bid(
            job_id=job_id,
            provider=pub(k),
            price=1,
            est_finish_ms=self.now + 300,
            determinism_class=DETERMINISM,
            bench_score=1000,
            expires_ms=self.now + 50_000,
        )
        signed = sign(bid, k, CHAIN)
        self._send(self.relay, requester.pub, signed.raw, signed.message, None)

    def _carry_out(self, node: Node, role: Machine, fx: Effect) -> None:
        if role == "requester" and isinstance(fx, Send):
            msg = fx.message.message
            if isinstance(msg, JobSpec) and fx.message.raw not in self.seen:
                self.seen.add(fx.message.raw)
                for _ in range(self.keys):
                    self.bid(node, fx.message.id)
            if isinstance(msg, Award) and msg.provider in self.ours:
                k = self.ours[msg.provider]
                nobid = sign(NoBid(msg.job_id, msg.provider, "busy", "full", 1), k, CHAIN)

                def decline(job_id: bytes = msg.job_id) -> None:
                    self._send(self.relay, node.pub, nobid.raw, nobid.message, None)
                    self.bid(node, job_id, again=msg.provider)

                self._at(self.now + 5, decline)
        super()._carry_out(node, role, fx)


@pytest.mark.parametrize(
    ("veterans", "redundancy"), [(0, 1), (0, 2), (50, 2)], ids=["newcomers", "r2", "veterans"]
)
def test_fresh_keys_declining_every_award_do_not_fail_the_job(
    veterans: int, redundancy: int
) -> None:
    # Before: 256 awards, every one to a fresh key, and the job failed in 5 s at no cost.
    sim = DeclineLoop(9, keys=20)
    req = sim.add_requester()
    honest = [sim.add_provider(reputation=veterans) for _ in range(3)]
    spec = sim.spec(req, redundancy=redundancy, deadline_ms=60_000)
    job = sim.submit(req, spec)
    sim.run_jobs([job], limit_ms=200_000)

    done = sim.done[job]
    assert done.status == "verified"
    assert done.output == honest_output(spec)
    assert req.requester is not None
    declined = [r for r in req.requester.job(job).replicas if r.provider in sim.ours]
    assert all(r.state == ReplicaState.FAILED for r in declined)
    assert len(declined) <= sim.keys + spec.redundancy + spec.max_retries + 1
    paid = {p.provider for p in done.paid}
    assert paid and paid <= {h.pub for h in honest}
    assert all(sim.ledger.state.balance(p) > 0 for p in paid)
    assert not sim.misbehaved


def test_a_provider_declining_twice_is_excluded_from_the_job() -> None:
    # Two established keys declining in turn and bidding again took award after award.
    sim = DeclineLoop(3, keys=2, established=True)
    req = sim.add_requester()
    honest = [sim.add_provider(reputation=50, stake=ESTABLISHED_STAKE) for _ in range(2)]
    spec = sim.spec(req, redundancy=1)
    job = sim.submit(req, spec)
    sim.run_jobs([job])

    done = sim.done[job]
    assert done.status == "verified"
    assert {p.provider for p in done.paid} <= {h.pub for h in honest}
    assert req.requester is not None
    rj = req.requester.job(job)
    awards = [sum(r.provider == pub(k) for r in rj.replicas) for k in sim.established]
    assert max(awards) == 2 and sum(awards) <= 4
    assert all(
        pub(k) in rj.excluded for k, n in zip(sim.established, awards, strict=True) if n == 2
    )
