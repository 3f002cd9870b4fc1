"""The steady job stream of the chaos suite: jobs submitted to the workspace from a few
threads (redundancy 1 and 2 in turn) while a fault happens, across workspace restarts,
and the wait for every job's escrow to close afterwards.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ...api import ApiError, Client
from ...devnet import DevNode, tiny_model_and_inputs


@dataclass
class JobRun:
    """One job the stream submitted: its id, when, and what the workspace said last."""

    job_id: str
    redundancy: int
    submitted_at: float
    done_at: float | None = None
    status: dict[str, Any] = field(default_factory=dict)


class JobStream:
    """``threads`` threads, each submitting a job to the workspace and waiting for it to be
    done, again and again, until :meth:`stop`. A submission the workspace refuses or cannot
    take (it is down) is counted and retried a little later, with a new client (a restarted
    workspace has a new API address)."""

    def __init__(self, workspace: DevNode, *, threads: int = 2, deadline_s: float = 10.0) -> None:
        self.workspace = workspace
        self.deadline_s = deadline_s
        self.jobs: list[JobRun] = []
        self.refused: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._count = 0
        self._model, self._inputs = tiny_model_and_inputs()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def start(self) -> JobStream:
        for t in self._threads:
            t.start()
        return self

    def stop(self, timeout_s: float = 60.0) -> None:
        """Stop submitting; wait (bounded) for the threads' current jobs to be done."""
        self._stop.set()
        deadline = time.monotonic() + timeout_s
        for t in self._threads:
            t.join(max(0.1, deadline - time.monotonic()))

    def _client(self) -> Client | None:
        try:
            return self.workspace.client(timeout_s=10.0)
        except Exception:  # node.json or the token not there yet (a restart)
            return None

    def _refused(self, why: str) -> None:
        with self._lock:
            key = why[:100]
            self.refused[key] = self.refused.get(key, 0) + 1

    def _run(self) -> None:
        client: Client | None = None
        while not self._stop.is_set():
            if client is None:
                client = self._client()
                if client is None:
                    self._stop.wait(0.2)
                    continue
            with self._lock:
                self._count += 1
                redundancy = 1 + self._count % 2
            try:
                job_id = client.submit(
                    self._model, self._inputs, redundancy=redundancy, deadline_s=self.deadline_s
                )
            except ApiError as exc:
                self._refused(str(exc))
                client.close()
                client = None
                self._stop.wait(0.2)
                continue
            run = JobRun(job_id, redundancy, time.monotonic())
            with self._lock:
                self.jobs.append(run)
            client = self._wait(client, run)

    def _wait(self, client: Client | None, run: JobRun) -> Client | None:
        """Until ``run`` is done (or long past its deadline); across workspace restarts."""
        give_up = run.submitted_at + self.deadline_s + 30.0
        while time.monotonic() < give_up:
            if client is None:
                client = self._client()
                if client is None:
                    time.sleep(0.2)
                    continue
            try:
                status = client.job(run.job_id, wait_s=1.0)
            except ApiError as exc:
                if " 404 " in str(exc):  # the workspace lost the record (SIGKILL)
                    run.status = {"status": "unknown", "reason": "record lost"}
                    return client
                client.close()
                client = None
                time.sleep(0.2)
                continue
            run.status = status
            if status.get("done"):
                run.done_at = time.monotonic()
                return client
        return client

    def verified_since(self, at: float) -> bool:
        """Whether a job was seen verified at ``at`` (monotonic) or later."""
        with self._lock:
            return any(
                r.done_at is not None and r.done_at >= at and r.status.get("status") == "verified"
                for r in self.jobs
            )

    def snapshot(self) -> list[JobRun]:
        with self._lock:
            return list(self.jobs)


def wait_closed(
    workspace: DevNode, jobs: list[JobRun], timeout_s: float, past_deadline_ms: int
) -> None:
    """Until every job the workspace still knows is done and its escrow closed (bounded).
    A failed job whose lock never landed has no escrow and never shows ``closed``: one that
    failed is waited for until ``past_deadline_ms`` past its deadline (its expiry and the
    margin), and the chain says later whether it was locked."""
    deadline = time.monotonic() + timeout_s
    for run in jobs:
        while time.monotonic() < deadline:
            try:
                with workspace.client(timeout_s=10.0) as c:
                    status = c.job(
                        run.job_id, wait_s=min(1.0, deadline - time.monotonic()), until="closed"
                    )
            except ApiError as exc:
                if " 404 " in str(exc):
                    run.status = run.status or {"status": "unknown", "reason": "record lost"}
                    break
                time.sleep(0.2)
                continue
            except Exception:  # node.json not back yet (a restart)
                time.sleep(0.2)
                continue
            if status.get("done") and run.done_at is None:
                run.done_at = time.monotonic()
            run.status = status
            if status.get("closed"):
                break
            over_ms = int(status.get("deadline_ms", 0)) + past_deadline_ms
            if status.get("status") == "failed" and time.time() * 1000 > over_ms:
                break
