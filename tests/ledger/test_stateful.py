"""Hypothesis stateful test: random valid and invalid transactions and blocks.

At every height: conservation (balances + escrows + stakes + fees = minted − burned),
nothing negative, paid ≤ locked, each (account, seq) applied once, each escrow closes
exactly once and is never refunded before expiry; replayed and other-chain transactions
and blocks with one bad signature are rejected; a replica applying the same blocks from
genesis reaches the same state root.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import hypothesis.strategies as st
import nacl.signing
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import ledger
import protocol
from ledger import tx

from ..keys import key, pub
from .helpers import CHAIN, COORD, RECEIPT_KEY, award, bid, job_spec, receipt, result, signed_block

USERS = [key(f"user{i}") for i in range(4)]
JOBS = [hashlib.blake2b(bytes([i]), digest_size=32).digest() for i in range(16)]
user = st.sampled_from(USERS)
job = st.sampled_from(JOBS)
amount = st.integers(min_value=1, max_value=400)


def settle_payload(job_id: bytes, payouts: dict[bytes, int]) -> ledger.Settle:
    keys = {pub(u): u for u in [*USERS, COORD]}
    return ledger.Settle(
        job_id,
        tuple(ledger.Payout(p, a, bid(keys[p], a, job=job_id)) for p, a in sorted(payouts.items())),
    )


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.genesis = ledger.make_genesis(
            CHAIN,
            [pub(COORD)],
            {pub(u): 1000 for u in [*USERS, COORD]},
            unbonding_delay=2,
            reputation_half_life=3,
            min_fee=1,
        )
        self.state = ledger.State.from_genesis(self.genesis)
        # built at block time against the block's draft (next sequence numbers, escrows)
        self.pending: list[Callable[[ledger.Draft], protocol.Signed[protocol.Transaction]]] = []
        self.blocks: list[bytes] = []
        self.applied: set[tuple[bytes, int]] = set()
        self.included: list[bytes] = []
        self.closed: dict[bytes, int] = {}

    # --- building transactions --------------------------------------------------------

    def add(
        self,
        sender: nacl.signing.SigningKey,
        payload: ledger.Payload,
        *,
        fee: int = 1,
        expiry_height: int | None = None,
    ) -> None:
        """Sign ``payload`` at block time, with the sender's next sequence number then."""
        expiry = self.state.height + 3 if expiry_height is None else expiry_height

        def at_block(d: ledger.Draft) -> protocol.Signed[protocol.Transaction]:
            seq = d.account(pub(sender)).next_seq
            return tx.make(sender, CHAIN, seq, payload, expiry_height=expiry, fee=fee)

        self.pending.append(at_block)

    def add_for_escrow(
        self,
        j: bytes,
        honest: bool,
        default: nacl.signing.SigningKey,
        build: Callable[
            [nacl.signing.SigningKey, bytes, ledger.Escrow | None],
            tuple[nacl.signing.SigningKey, ledger.Payload],
        ],
        *,
        closed: bool = False,
        unsequenced: bool = False,
    ) -> None:
        """Build at block time; an honest one picks an existing escrow and its owner.
        ``build(owner, job_id, escrow)`` says who signs what; ``unsequenced``: with no
        sequence number (a claim's)."""
        expiry = self.state.height + 3

        def at_block(d: ledger.Draft) -> protocol.Signed[protocol.Transaction]:
            job_id = j
            owner = default
            if honest:
                job_id = self.existing(j, closed=closed)
                owner = self.owner_of(job_id, default)
            sender, payload = build(owner, job_id, d.escrow(job_id))
            seq = ledger.UNSEQUENCED if unsequenced else d.account(pub(sender)).next_seq
            return tx.make(sender, CHAIN, seq, payload, expiry_height=expiry, fee=1)

        self.pending.append(at_block)

    @rule(frm=user, to=user, amt=st.integers(1, 1500), fee=st.integers(0, 3))
    def transfer(self, frm, to, amt, fee) -> None:  # type: ignore[no-untyped-def]
        self.add(frm, ledger.Transfer(pub(to), amt), fee=fee)

    @rule(to=user, amt=amount)
    def mint(self, to, amt) -> None:  # type: ignore[no-untyped-def]
        self.add(COORD, ledger.Mint(pub(to), amt))

    @rule(
        owner=user, j=job, amt=amount, claim=st.integers(0, 4), life=st.integers(1, 6), cap=amount
    )
    def lock(self, owner, j, amt, claim, life, cap) -> None:  # type: ignore[no-untyped-def]
        h = self.state.height + 1  # the height of the block it goes into
        spec = job_spec(owner, j)
        payload = ledger.Lock(spec.id, amt, h + claim, h + claim + life, min(cap, amt), 2, spec.raw)
        self.add(owner, payload, expiry_height=h)

    def existing(self, j: bytes, *, closed: bool = False) -> bytes:
        """``j`` if it has an escrow, else some job that has one (open first, or closed with
        payouts first when ``closed``), else ``j``."""
        if self.state.escrow(j) is not None:
            return j
        if closed:
            jobs = sorted(self.state.escrows(), key=lambda x: (x[1].is_open, not x[1].paid, x[0]))
        else:
            jobs = sorted(self.state.escrows(), key=lambda x: (not x[1].is_open, x[0]))
        return jobs[0][0] if jobs else j

    def owner_of(self, j: bytes, default: nacl.signing.SigningKey) -> nacl.signing.SigningKey:
        e = self.state.escrow(j)
        return default if e is None else next(u for u in USERS if pub(u) == e.owner)

    @rule(owner=user, j=job, pays=st.dictionaries(user, amount, max_size=3), honest=st.booleans())
    def settle(self, owner, j, pays, honest) -> None:  # type: ignore[no-untyped-def]
        def build(sender, job_id, e):  # type: ignore[no-untyped-def]
            payouts = {pub(k): v for k, v in pays.items() if k is not sender}
            return sender, settle_payload(job_id, payouts)

        self.add_for_escrow(j, honest, owner, build)

    @rule(
        provider=user,
        requester=user,
        j=job,
        price=amount,
        honest=st.booleans(),
        unsequenced=st.booleans(),
    )
    def claim(self, provider, requester, j, price, honest, unsequenced) -> None:  # type: ignore[no-untyped-def]
        def build(owner, job_id, e):  # type: ignore[no-untyped-def]
            awarded = award(owner, provider, price, job=job_id)
            received = receipt(owner, provider, job=job_id)
            return provider, ledger.Claim(job_id, awarded, received, RECEIPT_KEY)

        self.add_for_escrow(j, honest, requester, build, unsequenced=unsequenced)

    @rule(owner=user, j=job, honest=st.booleans())
    def refund(self, owner, j, honest) -> None:  # type: ignore[no-untyped-def]
        def build(sender, job_id, e):  # type: ignore[no-untyped-def]
            return sender, ledger.Refund(job_id)

        self.add_for_escrow(j, honest, owner, build)

    @rule(k=user, amt=amount, up=st.booleans())
    def stake(self, k, amt, up) -> None:  # type: ignore[no-untyped-def]
        self.add(k, ledger.Stake(amt) if up else ledger.Unstake(amt))

    @rule(offender=user, amt=amount)
    def slash(self, offender, amt) -> None:  # type: ignore[no-untyped-def]
        evidence = (result(offender, b"a"), result(offender, b"b"))
        self.add(COORD, ledger.Slash(pub(offender), amt, "conflicting_results", evidence))

    @rule(frm=user, subject=user, j=job, positive=st.booleans(), honest=st.booleans())
    def attest(self, frm, subject, j, positive, honest) -> None:  # type: ignore[no-untyped-def]
        def build(owner, job_id, e):  # type: ignore[no-untyped-def]
            sender, about = frm, subject
            if honest and e is not None and e.paid:
                sender = owner
                about = next(u for u in USERS if pub(u) == e.paid[0][0])
            return sender, ledger.Attest(job_id, pub(about), int(positive))

        self.add_for_escrow(j, honest, frm, build, closed=True)

    # --- blocks ----------------------------------------------------------------------

    @rule()
    def produce(self) -> None:
        before = self.state
        # sign each pending transaction with its sender's next sequence number in a draft,
        # keeping the ones the draft accepts; the producer must agree on every one
        draft = ledger.Draft(before, before.height + 1)
        draft.mature()
        vtxs = []
        for build in self.pending:
            vtx = ledger.verify_tx(build(draft).raw, CHAIN)
            try:
                ledger.apply_tx(draft, vtx)
            except ledger.TransactionRejected:
                continue
            vtxs.append(vtx)
        self.pending = []
        produced = ledger.produce_block(before, COORD, vtxs)
        assert not produced.rejected
        new = ledger.apply_block(before, produced.block.raw)
        assert new.root == produced.state.root
        for vtx in produced.included:
            key_ = (vtx.sender, vtx.tx.seq)
            assert key_ not in self.applied
            self.applied.add(key_)
            self.included.append(vtx.raw)
        for jid, e in new.escrows():
            old = before.escrow(jid)
            if old is not None and not old.is_open:
                assert e == old or e.attested != old.attested  # closed escrows stay closed
                assert (e.status, e.remaining, e.paid) == (old.status, old.remaining, old.paid)
            if not e.is_open and (old is None or old.is_open):
                assert jid not in self.closed
                self.closed[jid] = new.height
                if e.status == ledger.EscrowStatus.REFUNDED:
                    assert new.height >= e.expiry_height
        self.state = new
        self.blocks.append(produced.block.raw)

    @rule(
        owner=user,
        provider=user,
        other=user,
        j=job,
        price=st.integers(1, 100),
        positive=st.booleans(),
    )
    def job_lifecycle(self, owner, provider, other, j, price, positive) -> None:  # type: ignore[no-untyped-def]
        """Lock, claim with the requester's award and receipt, settle, attest: one block each."""
        h = self.state.height + 1
        spec = job_spec(owner, j)
        j = spec.id
        self.add(owner, ledger.Lock(j, 300, h + 1, h + 8, 100, 3, spec.raw), expiry_height=h)
        self.produce()
        evidence = award(owner, provider, price, job=j), receipt(owner, provider, job=j)
        self.add(provider, ledger.Claim(j, *evidence, RECEIPT_KEY), expiry_height=h + 1)
        self.produce()
        payouts = {pub(other): 50} if other is not owner else {}
        self.add(owner, settle_payload(j, payouts), expiry_height=h + 2)
        self.produce()
        self.add(owner, ledger.Attest(j, pub(provider), int(positive)), expiry_height=h + 3)
        self.add(provider, ledger.Attest(j, pub(owner), int(positive)), expiry_height=h + 3)
        self.produce()

    @rule(n=st.integers(1, 4))
    def produce_several(self, n: int) -> None:
        for _ in range(n):
            self.produce()

    @precondition(lambda self: bool(self.included))
    @rule(data=st.data())
    def replayed_tx_rejected(self, data: st.DataObject) -> None:
        raw = data.draw(st.sampled_from(self.included))
        self.assert_block_rejected([raw])

    @rule(frm=user)
    def other_chain_tx_rejected(self, frm) -> None:  # type: ignore[no-untyped-def]
        other = tx.transfer(
            frm,
            "other-chain",
            self.state.next_seq(pub(frm)),
            to=pub(frm),
            amount=1,
            fee=1,
            expiry_height=self.state.height + 3,
        )
        self.assert_block_rejected([other.raw])

    @rule(frm=user, to=user)
    def bad_signature_block_rejected(self, frm, to) -> None:  # type: ignore[no-untyped-def]
        good = tx.transfer(
            frm,
            CHAIN,
            self.state.next_seq(pub(frm)),
            to=pub(to),
            amount=1,
            fee=1,
            expiry_height=self.state.height + 3,
        ).raw
        self.assert_block_rejected([good[:-1] + bytes([good[-1] ^ 0x40])])

    def assert_block_rejected(self, txs: list[bytes]) -> None:
        state = self.state
        raw = signed_block(state.height + 1, state.last_block_hash, state_root=state.root, txs=txs)
        before = self.state.root
        try:
            ledger.apply_block(self.state, raw)
        except ledger.BlockRejected as exc:
            assert exc.index is not None
        else:
            raise AssertionError("block should have been rejected")
        assert self.state.root == before

    # --- invariants ------------------------------------------------------------------

    @invariant()
    def conserved_and_non_negative(self) -> None:
        ledger.check_invariants(self.state)
        held, issued = self.state.conservation()
        assert held == issued

    def teardown(self) -> None:
        replica = ledger.replay(self.genesis, self.blocks)
        assert replica.root == self.state.root
        assert ledger.compute_root(self.state.leaves()) == self.state.root


TestLedger = LedgerMachine.TestCase
TestLedger.settings = settings(max_examples=120, stateful_step_count=50, deadline=None)
