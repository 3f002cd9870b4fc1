"""A ledger writer that kills itself with SIGKILL at a random point (for test_crash.py).

Usage: python crash_writer.py DB CHAIN_FILE SEED. CHAIN_FILE holds the canonical msgpack of
``[genesis bytes, [block bytes, ...]]``. It opens the store, then applies the blocks above
the stored height, printing each committed height; a seeded random count of SQLite VM steps
(or of committed blocks) later it sends itself SIGKILL, mid-transaction or between them.
"""

from __future__ import annotations

import os
import random
import signal
import sys

import ledger
import protocol


def main() -> None:
    db, chain_file, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with open(chain_file, "rb") as f:
        genesis_raw, blocks = protocol.unpack(f.read(), max_bytes=1 << 30)
    rng = random.Random(seed)
    store = ledger.LedgerStore.open(db, ledger.Genesis.decode(genesis_raw))
    steps = [0]
    target = rng.randrange(1, 4000)

    def progress() -> int:
        steps[0] += 1
        if steps[0] >= target:
            os.kill(os.getpid(), signal.SIGKILL)
        return 0

    if rng.random() < 0.8:
        store._conn.set_progress_handler(progress, rng.choice([1, 3, 10]))
    kill_after = rng.randrange(1, 6)
    for n, raw in enumerate(blocks[store.height :], 1):
        state = store.apply_and_commit(raw)
        print(state.height, flush=True)
        if n == kill_after and rng.random() < 0.5:
            os.kill(os.getpid(), signal.SIGKILL)
    print("done", flush=True)


if __name__ == "__main__":
    main()
