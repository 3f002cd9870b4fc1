"""Shared helpers for the ledger tests: named accounts, a tiny chain driver, evidence."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import nacl.signing

import ledger
import protocol
from ledger import tx
from node.testing.hostile import _sign_raw

from ..keys import key, pub

CHAIN = "aimx-test"

COORD = key("coordinator")
ALICE = key("alice")
BOB = key("bob")
CAROL = key("carol")


@functools.cache
def job_spec(
    owner: nacl.signing.SigningKey, label: bytes = b"job-1"
) -> protocol.Signed[protocol.JobSpec]:
    """A signed JobSpec of ``owner``'s (what a lock carries); ``label`` makes its id."""
    spec = protocol.JobSpec(
        requester=pub(owner),
        nonce=hashlib.blake2b(label, digest_size=16).digest(),
        runtime="onnx",
        model_hash=b"\x03" * 32,
        model_size=1,
        inputs=(),
        requirements=protocol.Requirements(
            device="cpu",
            execution_provider="CPUExecutionProvider",
            min_memory_mb=1,
            capability_class="onnx.cpu.m4",
        ),
        graph_opt_level="extended",
        threads=1,
        max_price=100,
        redundancy=1,
        max_retries=0,
        verification=protocol.VerificationPolicy(
            mode="exact", rtol_e9=0, atol_e9=0, spot_check_permille=0
        ),
        created_ms=1,
        bid_window_ms=1,
        deadline_ms=2,
        # locks must come before it, with an expiry at most ESCROW_RETENTION below it
        escrow_expiry_height=100,
    )
    return protocol.sign(spec, owner, CHAIN)


#: ALICE's job, the one most tests lock.
JOB = job_spec(ALICE).id


def genesis(**params: int) -> ledger.Genesis:
    defaults = {"unbonding_delay": 3, "reputation_half_life": 10}
    defaults.update(params)
    return ledger.make_genesis(
        CHAIN,
        [pub(COORD)],
        {pub(ALICE): 1_000_000, pub(BOB): 1_000_000, pub(CAROL): 1_000_000},
        **defaults,
    )


def signed_block(
    height: int,
    prev_hash: bytes,
    *,
    state_root: bytes = bytes(32),
    txs: Sequence[bytes] = (),
    signer: nacl.signing.SigningKey = COORD,
) -> bytes:
    """A block signed by ``signer`` as its producer, holding whatever a test needs."""
    block = ledger.Block(
        height=height,
        prev_hash=prev_hash,
        producer=pub(signer),
        state_root=state_root,
        txs=tuple(txs),
    )
    return protocol.sign(block, signer, CHAIN).raw


def award(
    requester: nacl.signing.SigningKey,
    provider: nacl.signing.SigningKey,
    price: int,
    job: bytes = JOB,
    replica: int = 0,
    chain: str = CHAIN,
) -> bytes:
    """A signed Award; at a ``price`` below 1, which no Award may carry, one signed as a
    hostile requester would sign it (its wire value with that price)."""
    msg = protocol.Award(
        job_id=job,
        requester=pub(requester),
        provider=pub(provider),
        replica=replica,
        price=max(1, price),
        deadline_ms=1,
        bid_hash=b"\x00" * 32,
    )
    if price >= 1:
        return protocol.sign(msg, requester, chain).raw
    wire = msg.wire()
    wire[[name for name, _ in protocol.Award.specs()].index("price")] = price
    return _sign_raw(protocol.Award.TAG, chain, wire, requester)


#: The unseal key the test receipts name (a claim with one reveals it).
RECEIPT_KEY = bytes([7]) * 32


def receipt(
    requester: nacl.signing.SigningKey,
    provider: nacl.signing.SigningKey,
    job: bytes = JOB,
    replica: int = 0,
    chain: str = CHAIN,
    *,
    key: bytes = b"",
    at_once: bool = False,
    claim_by: int = 1_000,
) -> bytes:
    """A receipt of ``requester``'s naming the unseal key ``key`` (``RECEIPT_KEY`` by
    default, which a claim with it must reveal): sealed (claimable at once, up to
    ``claim_by``) with ``at_once``, plain (claimable from the escrow's claim height)
    otherwise."""
    msg = protocol.Receipt(
        job_id=job,
        requester=pub(requester),
        provider=pub(provider),
        replica=replica,
        result_hash=b"\x01" * 32,
        output_commitment=b"\x02" * 32,
        key_hash=protocol.key_hash(key or RECEIPT_KEY),
        at_once=int(at_once),
        claim_by=claim_by if at_once else 0,
        received_ms=1,
    )
    return protocol.sign(msg, requester, chain).raw


def bid(
    provider: nacl.signing.SigningKey, price: int, job: bytes = JOB, chain: str = CHAIN
) -> bytes:
    """``provider``'s signed Bid for ``job`` at ``price`` (what a settle's payout carries)."""
    msg = protocol.Bid(
        job_id=job,
        provider=pub(provider),
        price=price,
        est_finish_ms=1,
        determinism_class="ort-1.32.0/cpu/avx2/extended",
        bench_score=1,
        expires_ms=1,
    )
    return protocol.sign(msg, provider, chain).raw


#: Signing keys of the named accounts (and a few more), by public key: for their bids.
KEYS = {pub(k): k for k in (ALICE, BOB, CAROL, COORD, key("dave"))}


def settle(
    owner: nacl.signing.SigningKey,
    chain: str,
    seq: int,
    *,
    job_id: bytes,
    payouts: dict[bytes, int],
    expiry_height: int,
    keys: dict[bytes, nacl.signing.SigningKey] = KEYS,
) -> protocol.Signed[protocol.Transaction]:
    """``tx.settle`` with each payee's own Bid at the amount paid (signed with ``keys``)."""
    bids = {p: bid(keys[p], a, job=job_id, chain=chain) for p, a in payouts.items()}
    return tx.settle(
        owner, chain, seq, job_id=job_id, payouts=payouts, bids=bids, expiry_height=expiry_height
    )


def result(
    provider: nacl.signing.SigningKey,
    output: bytes,
    job: bytes = JOB,
    replica: int = 0,
    commitment: bytes | None = None,
    *,
    outcome: str = "ok",
    determinism_class: str = "ort-1.32.0/cpu/avx2/extended",
) -> bytes:
    """A signed Result of ``output`` (``ok`` unless told); its commitment (unless given)
    follows the output, so Results of one output agree and of two differ."""
    if commitment is None:
        commitment = hashlib.blake2b(b"commitment:" + output, digest_size=32).digest()
    msg = protocol.Result(
        job_id=job,
        provider=pub(provider),
        replica=replica,
        outcome=outcome,
        message="" if outcome == "ok" else "could not fetch the job's data",
        output_commitment=commitment,
        output_hash=hashlib.blake2b(output, digest_size=32).digest(),
        output_size=len(output),
        key_hash=bytes(32),
        determinism_class=determinism_class,
        usage=protocol.Usage(cpu_ms=1, wall_ms=1, peak_memory_kb=1, gpu_ms=0),
        finished_ms=1,
    )
    return protocol.sign(msg, provider, CHAIN).raw


@dataclass
class Chain:
    """Drives blocks through produce_block and re-applies each as a replica would."""

    state: ledger.State
    blocks: list[bytes] = field(default_factory=list)

    @classmethod
    def new(cls, **params: int) -> Chain:
        return cls(ledger.State.from_genesis(genesis(**params)))

    @property
    def height(self) -> int:
        return self.state.height

    def seq(self, k: nacl.signing.SigningKey) -> int:
        return self.state.next_seq(pub(k))

    def block(self, *signed: protocol.Signed[protocol.Transaction]) -> ledger.Produced:
        vtxs = [ledger.verify_tx(s.raw, CHAIN) for s in signed]
        produced = ledger.produce_block(self.state, COORD, vtxs)
        again = ledger.apply_block(self.state, produced.block.raw)
        assert again.root == produced.state.root
        self.state = again
        self.blocks.append(produced.block.raw)
        ledger.check_invariants(self.state)
        return produced

    def ok(self, *signed: protocol.Signed[protocol.Transaction]) -> ledger.Produced:
        produced = self.block(*signed)
        assert not produced.rejected, [str(e) for _, e in produced.rejected]
        return produced

    def rejects(self, signed: protocol.Signed[protocol.Transaction], error: type[Exception]) -> str:
        produced = self.block(signed)
        assert len(produced.rejected) == 1, "expected a rejection"
        exc = produced.rejected[0][1]
        assert isinstance(exc, error), f"{type(exc).__name__}: {exc}"
        return str(exc)

    def until(self, height: int) -> None:
        for _ in range(height - self.height):
            self.ok()

    def transfer(
        self, frm: nacl.signing.SigningKey, to: nacl.signing.SigningKey, amount: int, fee: int = 0
    ) -> protocol.Signed[protocol.Transaction]:
        return tx.transfer(
            frm,
            CHAIN,
            self.seq(frm),
            to=pub(to),
            amount=amount,
            fee=fee,
            expiry_height=self.height + 10,
        )

    def lock(
        self,
        owner: nacl.signing.SigningKey,
        amount: int,
        *,
        claim_at: int,
        expire_at: int,
        per_payee: int,
        payees: int = 2,
        job: bytes = JOB,
        spec: bytes | None = None,
    ) -> protocol.Signed[protocol.Transaction]:
        """A lock of ``job``: with no ``spec``, ``job`` must be JOB (ALICE's JobSpec goes)."""
        if spec is None:
            assert job == JOB, "pass the JobSpec of any other job"
            spec = job_spec(ALICE).raw
        return tx.lock(
            owner,
            CHAIN,
            self.seq(owner),
            job_id=job,
            amount=amount,
            claim_height=claim_at,
            escrow_expiry=expire_at,
            max_per_payee=per_payee,
            max_payees=payees,
            spec=spec,
            expiry_height=self.height + 10,
        )


def slash_bob_outvoted(c: Chain, *, amount: int = 100) -> protocol.Signed[protocol.Transaction]:
    """COORD's ``failed_verification`` slash of BOB on ALICE's job: BOB's Result
    (commitment ``06…``) against CAROL's and DAVE's agreeing ones (``05…``)."""
    right, wrong = b"\x05" * 32, b"\x06" * 32
    evidence = [
        result(BOB, b"bad", commitment=wrong, replica=0),
        result(CAROL, b"good", commitment=right, replica=1),
        result(key("dave"), b"good", commitment=right, replica=2),
    ]
    return tx.slash(
        COORD,
        CHAIN,
        c.seq(COORD),
        offender=pub(BOB),
        amount=amount,
        reason="failed_verification",
        evidence=evidence,
        expiry_height=20,
    )
