"""Ledger throughput: committed transactions per second against raw PyNaCl verification.

A *committed* transaction has been signature-verified, validated and applied, and
persisted to SQLite (WAL, synchronous=FULL: one fsync'd transaction per block) as part of
a block. Two paths are measured:

- replica: receive signed blocks, verify the block and every transaction, apply, commit;
- coordinator: admit each transaction to the mempool (verified there, once), produce
  blocks from the mempool, commit.

The baseline is raw PyNaCl Ed25519 verification (``crypto_sign_open``) of the same
transactions, measured in the same run, interleaved block by block with ours (so a busy
machine slows both alike).

Prints a table, then one JSON line per figure.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import tempfile
import time
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path and this module would shadow
# the ledger package of the same name: drop it.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import nacl.bindings  # noqa: E402
import nacl.signing  # noqa: E402

import ledger  # noqa: E402
import protocol  # noqa: E402
from ledger import tx  # noqa: E402

CHAIN = "aimx-bench"
ACCOUNTS = 2000
TXS = 20_000
BLOCK_TXS = 1000


def key(i: int) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(hashlib.sha256(b"bench-%d" % i).digest())


def make_workload() -> tuple[ledger.Genesis, nacl.signing.SigningKey, list[bytes]]:
    rng = random.Random(7)
    coord = key(-1)
    users = [key(i) for i in range(ACCOUNTS)]
    pubs = [bytes(u.verify_key) for u in users]
    genesis = ledger.make_genesis(
        CHAIN,
        [bytes(coord.verify_key)],
        {p: 10**12 for p in pubs},
        min_fee=1,
        max_block_txs=BLOCK_TXS,
    )
    seqs = [0] * ACCOUNTS
    raws = []
    for _ in range(TXS):
        a, b = rng.randrange(ACCOUNTS), rng.randrange(ACCOUNTS)
        raws.append(
            tx.transfer(
                users[a],
                CHAIN,
                seqs[a],
                to=pubs[b],
                amount=rng.randrange(1, 1000),
                fee=1 + rng.randrange(3),
                expiry_height=1_000,  # the mempool takes at most 1,000 blocks ahead
            ).raw
        )
        seqs[a] += 1
    return genesis, coord, raws


def verify_items(raws: list[bytes]) -> list[tuple[bytes, bytes]]:
    """What a bare verifier needs per transaction: signature || signed bytes, and the key."""
    items = []
    for raw in raws:
        tag, chain, body, signer, sig = protocol.unpack(raw)
        items.append((sig + protocol.pack([tag, chain, body]), signer))
    return items


def raw_verify_seconds(items: list[tuple[bytes, bytes]]) -> float:
    start = time.perf_counter()
    for signed, pk in items:
        nacl.bindings.crypto_sign_open(signed, pk)
    return time.perf_counter() - start


def coordinator(
    genesis: ledger.Genesis, coord: nacl.signing.SigningKey, raws: list[bytes], db: Path
) -> tuple[float, float, list[bytes]]:
    """(our seconds, raw verify seconds, blocks) for the coordinator path."""
    store = ledger.LedgerStore.open(db, genesis)
    producer = ledger.Producer(coord, store.state, interval_ms=1, now_ms=0)
    blocks: list[bytes] = []
    ours = base = 0.0
    for n, i in enumerate(range(0, len(raws), BLOCK_TXS), 1):
        chunk = raws[i : i + BLOCK_TXS]
        base += raw_verify_seconds(verify_items(chunk))
        start = time.perf_counter()
        for raw in chunk:
            producer.submit(raw)
        for effect in producer.tick(n):
            if isinstance(effect, ledger.Commit):
                store.commit(effect.block, effect.state)
                blocks.append(effect.block.raw)
        ours += time.perf_counter() - start
    committed = sum(len(protocol.unpack(b, max_bytes=ledger.MAX_BLOCK_BYTES)[2][4]) for b in blocks)
    assert committed == len(raws), (committed, len(raws))
    store.close()
    return ours, base, blocks


def replica(genesis: ledger.Genesis, blocks: list[bytes], db: Path) -> tuple[float, float]:
    """(our seconds, raw verify seconds) for the replica path."""
    store = ledger.LedgerStore.open(db, genesis)
    ours = base = 0.0
    for raw in blocks:
        txs = protocol.unpack(raw, max_bytes=ledger.MAX_BLOCK_BYTES)[2][4]
        base += raw_verify_seconds(verify_items(txs))
        start = time.perf_counter()
        store.apply_and_commit(raw)
        ours += time.perf_counter() - start
    assert store.height == len(blocks)
    store.close()
    return ours, base


def main() -> None:
    genesis, coord, raws = make_workload()
    with tempfile.TemporaryDirectory() as tmp:
        c_ours, c_base, blocks = coordinator(genesis, coord, raws, Path(tmp) / "coord.sqlite3")
        r_ours, r_base = replica(genesis, blocks, Path(tmp) / "replica.sqlite3")
    print(
        f"{TXS} transfers among {ACCOUNTS} accounts, {BLOCK_TXS} per block, "
        "SQLite WAL synchronous=FULL (one fsync'd transaction per block)"
    )
    figures = []
    for name, metric, ours, base in (
        ("replica", "committed_tx_per_s", r_ours, r_base),
        ("coordinator", "coordinator_committed_tx_per_s", c_ours, c_base),
    ):
        value, baseline = TXS / ours, TXS / base
        print(
            f"  {name:12} committed {value:8.0f} tx/s   raw PyNaCl verify {baseline:8.0f} /s"
            f"   ratio {value / baseline:.2f}"
        )
        figures.append((metric, value, baseline))
    for metric, value, baseline in figures:
        print(
            json.dumps(
                {
                    "bench": "ledger",
                    "metric": metric,
                    "value": round(value, 1),
                    "baseline": round(baseline, 1),
                    "ratio": round(value / baseline, 3),
                }
            )
        )


if __name__ == "__main__":
    main()
