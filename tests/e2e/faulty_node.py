"""A contributor daemon with a faulty job runner, for the end-to-end tests:

    python tests/e2e/faulty_node.py corrupt --data-dir DIR [--bootstrap ADDR] [--genesis-hash H]
    python tests/e2e/faulty_node.py slow MS --data-dir DIR [--bootstrap ADDR] [--genesis-hash H]

``corrupt`` returns wrong outputs (a cheater); ``slow`` waits MS milliseconds before each
run (so a test can kill it mid-job). Everything else is the real daemon: the sandbox runs
the job, the fakes of :mod:`sandbox.testing` only wrap it.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import trio

from node.config import load_config
from node.daemon import run_daemon
from sandbox import JobRunner
from sandbox.testing import CorruptingRunner, SlowRunner


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("fault", choices=["corrupt", "slow"])
    parser.add_argument("delay_ms", nargs="?", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--bootstrap", action="append")
    parser.add_argument("--genesis-hash")
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )

    def wrap(runner: JobRunner) -> JobRunner:
        if args.fault == "corrupt":
            return CorruptingRunner(runner)
        return SlowRunner(runner, args.delay_ms / 1000)

    config = load_config(
        args.data_dir,
        bootstrap=tuple(args.bootstrap or ()) or None,
        genesis_hash=args.genesis_hash,
    )
    trio.run(lambda: run_daemon(args.data_dir, config, wrap_runner=wrap))


if __name__ == "__main__":
    main()
