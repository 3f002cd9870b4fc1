"""Wire-format throughput: sign+encode and verify+decode of a Bid against raw PyNaCl.

Prints a table, then one JSON line per figure. Baselines are raw PyNaCl sign and verify of
a message of the same size, measured in the same run, interleaved with ours.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable

import nacl.signing

import protocol
from protocol import Bid

CHAIN = "aimx-bench"
ROUNDS = 40
PER_ROUND = 500


def rate(fn: Callable[[], object], n: int = PER_ROUND) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return n / (time.perf_counter() - start)


def main() -> None:
    key = nacl.signing.SigningKey(bytes(range(32)))
    bid = Bid(
        job_id=bytes(32),
        provider=bytes(key.verify_key),
        price=25_000,
        est_finish_ms=1_790_000_001_000,
        determinism_class="ort-1.32.0/cpu/avx2/extended",
        bench_score=12_345,
        expires_ms=1_790_000_002_000,
    )
    signed = protocol.sign(bid, key, CHAIN)
    payload = protocol.signing_bytes(bid, CHAIN)
    raw_signed = key.sign(payload)
    verify_key = key.verify_key

    results: dict[str, list[float]] = {
        k: [] for k in ("ours_sign", "raw_sign", "ours_ver", "raw_ver")
    }
    for _ in range(ROUNDS):
        results["ours_sign"].append(rate(lambda: protocol.sign(bid, key, CHAIN).raw))
        results["raw_sign"].append(rate(lambda: key.sign(payload)))
        results["ours_ver"].append(rate(lambda: protocol.decode(signed.raw, CHAIN, Bid)))
        results["raw_ver"].append(rate(lambda: verify_key.verify(raw_signed)))
    med = {k: statistics.median(v) for k, v in results.items()}
    # Ours and the baseline run back to back in each round; the median of the per-round
    # ratios is robust to other load on the machine.
    sign_ratio = statistics.median(
        a / b for a, b in zip(results["ours_sign"], results["raw_sign"], strict=True)
    )
    ver_ratio = statistics.median(
        a / b for a, b in zip(results["ours_ver"], results["raw_ver"], strict=True)
    )

    print(f"Bid: {len(signed.raw)} bytes on the wire, {ROUNDS} rounds of {PER_ROUND}")
    print(f"{'operation':<28}{'per second':>14}")
    print(f"{'sign + encode (ours)':<28}{med['ours_sign']:>14,.0f}")
    print(f"{'sign (raw PyNaCl)':<28}{med['raw_sign']:>14,.0f}")
    print(f"{'verify + decode (ours)':<28}{med['ours_ver']:>14,.0f}")
    print(f"{'verify (raw PyNaCl)':<28}{med['raw_ver']:>14,.0f}")
    for metric, ours, base, ratio in (
        ("sign_encode_per_s", med["ours_sign"], med["raw_sign"], sign_ratio),
        ("verify_decode_per_s", med["ours_ver"], med["raw_ver"], ver_ratio),
    ):
        print(
            json.dumps(
                {
                    "bench": "wire",
                    "metric": metric,
                    "value": round(ours, 1),
                    "baseline": round(base, 1),
                    "ratio": round(ratio, 3),
                }
            )
        )


if __name__ == "__main__":
    main()
