"""A small driver of the real Requester and Provider machines over the real ledger
(``tests/ledger/helpers.Chain``), with messages handed over by hand: for tests that must
place a result, a block and a timer in an exact order (the settle-limit tests)."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import nacl.signing

import ledger
import protocol
import scheduler
from ledger import tx

from ..keys import pub
from ..ledger.helpers import ALICE, CHAIN, Chain, job_spec

USAGE = protocol.Usage(cpu_ms=1, wall_ms=1, peak_memory_kb=1, gpu_ms=0)


def commit(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=32).digest()


def spec(label: bytes, *, redundancy: int, expiry: int, deadline_ms: int) -> protocol.JobSpec:
    return dataclasses.replace(
        job_spec(ALICE, label).message,
        max_price=2000,
        redundancy=redundancy,
        created_ms=0,
        bid_window_ms=100,
        deadline_ms=deadline_ms,
        escrow_expiry_height=expiry,
    )


class World:
    """ALICE requests; each of ``providers`` bids (its price floor 1000, or as given)."""

    def __init__(
        self, providers: list[nacl.signing.SigningKey], floors: dict[bytes, int] | None = None
    ) -> None:
        self.c = c = Chain.new()
        self.r = scheduler.Requester(
            scheduler.RequesterConfig(key=ALICE, chain_id=CHAIN, commitment=commit)
        )
        self.p: dict[bytes, scheduler.Provider] = {}
        for k in providers:
            self.p[pub(k)] = scheduler.Provider(
                scheduler.ProviderConfig(
                    key=k,
                    chain_id=CHAIN,
                    capability_classes=("onnx.cpu.m4",),
                    escrow_of=lambda j: c.state.escrow(j),
                    price_floor=(floors or {}).get(pub(k), 1000),
                )
            )
        self.keys = {pub(k): k for k in providers}
        self.job_id = b""
        self.bids: dict[bytes, protocol.Signed[protocol.Bid]] = {}

    def sync(self, now: int) -> list[scheduler.Effect]:
        c = self.c
        out = self.r.follow_ledger(c.height, c.state.escrow, now)
        for p in self.p.values():
            out += p.follow_ledger(c.height, c.state.escrow, now)
            p.note_head(c.height)
        return out

    def submit(self, job: protocol.JobSpec) -> list[scheduler.Effect]:
        """Submit, lock, bid and award: the effects of the awards, delivered."""
        c = self.c
        self.job_id, eff = self.r.submit(job, 0, providers=list(self.p))
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
        eff = []
        for who, p in self.p.items():
            sent = [e.message for e in p.receive(lock.spec, 20) if isinstance(e, scheduler.Send)]
            if sent:
                self.bids[who] = sent[0]  # type: ignore[assignment]
                eff += self.r.receive(sent[0].raw, 30)
        eff += self.r.timer(scheduler.TimerKey(scheduler.TimerKind.BIDS, self.job_id), 200)
        return self.pump(eff, 210)

    def finish(self, who: bytes, data: bytes, now: int) -> list[scheduler.Effect]:
        """``who`` finishes its run with ``data``: its effects, nothing handed over yet."""
        cls = self.bids[who].message.determinism_class
        out = scheduler.Output(data, commit(data), cls)
        return self.p[who].job_finished(self.job_id, now, outcome="ok", output=out, usage=USAGE)

    def finished(self, who: bytes, data: bytes, now: int) -> scheduler.Deliver:
        """``who`` finishes its run with ``data``: its Result and sealed bytes, not sent."""
        (deliver,) = [e for e in self.finish(who, data, now) if isinstance(e, scheduler.Deliver)]
        return deliver

    def deliver(self, who: bytes, data: bytes, now: int) -> list[scheduler.Effect]:
        """``who`` finishes its run with ``data``; its Result and bytes reach the requester."""
        return self.pump(self.finish(who, data, now), now + 1)

    def pump(self, eff: list[Any], now: int, rounds: int = 6) -> list[Any]:
        """Hand every Send and Deliver over, both ways, until quiet; all effects seen."""
        seen, todo = list(eff), list(eff)
        for _ in range(rounds):
            nxt: list[Any] = []
            for e in todo:
                if isinstance(e, scheduler.Send) and e.peer in self.p:
                    nxt += self.p[e.peer].receive(e.message.raw, now)
                elif isinstance(e, scheduler.Send) and e.peer == pub(ALICE):
                    nxt += self.r.receive(e.message.raw, now)
                elif isinstance(e, scheduler.Deliver) and e.peer == pub(ALICE):
                    nxt += self.r.receive(e.result.raw, now, output=e.output)
            if not nxt:
                break
            seen += nxt
            todo = nxt
            now += 1
        return seen

    def claim(self, fx: scheduler.ClaimWithReceipt) -> protocol.Signed[protocol.Transaction]:
        return tx.claim(
            self.keys[fx.award.message.provider],
            CHAIN,
            ledger.UNSEQUENCED,
            job_id=fx.job_id,
            award=fx.award.raw,
            receipt=fx.receipt.raw,
            unseal_key=fx.key,
            expiry_height=self.c.height + 10,
        )
