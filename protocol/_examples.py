"""Reference instances of every message: the test vectors of specs/messages.md.

The signing key is derived from a fixed seed, so anyone can reproduce the bytes (Ed25519
signatures are deterministic).
"""

from __future__ import annotations

import nacl.signing

from ._envelope import Signed, sign
from ._messages import (
    Advert,
    Award,
    Bid,
    GpuInfo,
    Heartbeat,
    InputRef,
    JobSpec,
    Message,
    NoBid,
    Receipt,
    Requirements,
    Result,
    Transaction,
    Unseal,
    Usage,
    VerificationPolicy,
)

VECTOR_CHAIN_ID = "aimx-testvectors"
VECTOR_SEED = bytes(range(32))


def vector_key() -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(VECTOR_SEED)


def example_messages() -> list[Message]:
    """One instance of every message type, signed by :func:`vector_key`."""
    me = bytes(vector_key().verify_key)
    other = bytes([0xAB]) * 32
    job = bytes([0x11]) * 32
    return [
        Advert(
            node_id=me,
            seq=3,
            addresses=("/ip4/127.0.0.1/tcp/4001",),
            capability_classes=("onnx.cpu.m8",),
            runtimes=("onnx",),
            determinism_classes=("ort-1.32.0/cpu/avx2/extended",),
            cpu_cores=8,
            memory_mb=16384,
            gpus=(GpuInfo(name="NVIDIA H100", memory_mb=81559, cuda_capability="9.0"),),
            sandbox_layers=("rlimits", "seccomp", "landlock"),
            bench_score=12345,
            price_floor=1000,
            max_concurrency=2,
            issued_ms=1_790_000_000_000,
            expires_ms=1_790_000_600_000,
        ),
        JobSpec(
            requester=me,
            nonce=bytes(16),
            runtime="onnx",
            model_hash=bytes([0x22]) * 32,
            model_size=2048,
            inputs=(InputRef(name="x", hash=bytes([0x33]) * 32, size=512),),
            requirements=Requirements(
                device="cpu",
                execution_provider="CPUExecutionProvider",
                min_memory_mb=512,
                capability_class="onnx.cpu.m8",
            ),
            graph_opt_level="extended",
            threads=1,
            max_price=50_000,
            redundancy=2,
            max_retries=3,
            verification=VerificationPolicy(
                mode="exact", rtol_e9=0, atol_e9=0, spot_check_permille=50
            ),
            created_ms=1_790_000_000_000,
            bid_window_ms=500,
            deadline_ms=1_790_000_060_000,
            escrow_expiry_height=1200,
        ),
        Bid(
            job_id=job,
            provider=me,
            price=20_000,
            est_finish_ms=1_790_000_001_000,
            determinism_class="ort-1.32.0/cpu/avx2/extended",
            bench_score=12345,
            expires_ms=1_790_000_002_000,
        ),
        NoBid(
            job_id=job, provider=me, reason="busy", detail="2 of 2 slots in use", price_floor=1000
        ),
        Award(
            job_id=job,
            requester=me,
            provider=other,
            replica=0,
            price=20_000,
            deadline_ms=1_790_000_060_000,
            bid_hash=bytes([0x44]) * 32,
        ),
        Result(
            job_id=job,
            provider=me,
            replica=1,
            outcome="ok",
            message="",
            output_commitment=bytes([0x55]) * 32,
            output_hash=bytes([0x66]) * 32,
            output_size=4096,
            key_hash=bytes([0x88]) * 32,
            determinism_class="ort-1.32.0/cpu/avx2/extended",
            usage=Usage(cpu_ms=12, wall_ms=15, peak_memory_kb=40960, gpu_ms=0),
            finished_ms=1_790_000_001_500,
        ),
        Receipt(
            job_id=job,
            requester=me,
            provider=other,
            replica=1,
            result_hash=bytes([0x77]) * 32,
            output_commitment=bytes([0x55]) * 32,
            key_hash=bytes([0x88]) * 32,
            at_once=1,
            claim_by=904,
            received_ms=1_790_000_001_600,
        ),
        Unseal(
            job_id=job,
            provider=me,
            replica=1,
            result_hash=bytes([0x77]) * 32,
            key=bytes([0x99]) * 32,
        ),
        Heartbeat(
            job_id=job, provider=me, replica=0, progress_permille=500, sent_ms=1_790_000_001_000
        ),
        Transaction(
            sender=me,
            seq=7,
            expiry_height=1000,
            fee=10,
            kind="transfer",
            payload=bytes.fromhex("92c420" + "ab" * 32 + "cd0400"),
        ),
    ]


def example_signed() -> list[Signed[Message]]:
    key = vector_key()
    return [sign(m, key, VECTOR_CHAIN_ID) for m in example_messages()]
