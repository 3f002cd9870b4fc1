"""A contributor daemon for the dashboard's browser test: every run takes a while (so a
screenshot can catch it working), and the next run fails when the test asks:

    python tests/e2e/dashboard_node.py MS --data-dir DIR [--bootstrap ADDR] [--genesis-hash H]

Each run waits MS milliseconds, then runs in the real sandbox, unless the file
``fail-next`` exists in the data directory: then it is removed and the run (after the
wait too) ends with
``runtime_error`` ("CUDA out of memory", as a real failure would say). Everything else
is the real daemon.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
from pathlib import Path

import trio

from node.config import load_config
from node.daemon import run_daemon
from sandbox import JobRequest, JobRunner, Outcome
from sandbox.testing import FailingRunner, SlowRunner

FAIL_FLAG = "fail-next"


class FailOnRequest:
    """``inner``, except that a run ends ``runtime_error`` once per ``flag`` file."""

    def __init__(self, inner: JobRunner, flag: Path) -> None:
        self.inner = inner
        self.flag = flag
        self.failing = FailingRunner("runtime_error", "CUDA out of memory (injected by the test)")

    def run(self, job: JobRequest) -> Outcome:
        with contextlib.suppress(FileNotFoundError):
            self.flag.unlink()
            return self.failing.run(job)
        return self.inner.run(job)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("delay_ms", type=int)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--bootstrap", action="append")
    parser.add_argument("--genesis-hash")
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )

    def wrap(runner: JobRunner) -> JobRunner:
        return SlowRunner(FailOnRequest(runner, args.data_dir / FAIL_FLAG), args.delay_ms / 1000)

    config = load_config(
        args.data_dir,
        bootstrap=tuple(args.bootstrap or ()) or None,
        genesis_hash=args.genesis_hash,
    )
    trio.run(lambda: run_daemon(args.data_dir, config, wrap_runner=wrap))


if __name__ == "__main__":
    main()
