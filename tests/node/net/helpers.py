"""Building signed capability records for the network tests."""

from __future__ import annotations

import nacl.signing

import protocol
from protocol import Advert, Signed

CHAIN = "aimx-test"


def advert(
    signing_key: nacl.signing.SigningKey,
    classes: tuple[str, ...],
    *,
    now_ms: int,
    ttl_ms: int = 600_000,
    seq: int = 1,
    addresses: tuple[str, ...] = (),
    chain_id: str = CHAIN,
) -> Signed[Advert]:
    record = Advert(
        node_id=bytes(signing_key.verify_key),
        seq=seq,
        addresses=addresses,
        capability_classes=classes,
        runtimes=("onnx",),
        determinism_classes=("ort-1.32.0/cpu/avx2/extended",),
        cpu_cores=2,
        memory_mb=8192,
        gpus=(),
        sandbox_layers=("rlimits",),
        bench_score=100,
        price_floor=10,
        max_concurrency=1,
        issued_ms=now_ms,
        expires_ms=now_ms + ttl_ms,
    )
    return protocol.sign(record, signing_key, chain_id)
