"""Building signed capability records, and libp2p nodes on loopback, for the network
tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import nacl.signing

import protocol
from node.net.libp2p_host import Libp2pConfig, Libp2pNetwork, open_libp2p_network
from protocol import Advert, Signed

from ...keys import key

CHAIN = "aimx-test"
LOOPBACK = ("/ip4/127.0.0.1/tcp/0",)


@asynccontextmanager
async def node(n: int, **config: Any) -> AsyncIterator[Libp2pNetwork]:
    """A libp2p network of key ``n`` listening on loopback (unless ``config`` says where),
    with ``config``."""
    config.setdefault("listen", LOOPBACK)
    async with open_libp2p_network(key(n), Libp2pConfig(chain_id=CHAIN, **config)) as net:
        yield net


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
