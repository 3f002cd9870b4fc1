"""The job-runner seam: what a caller of the sandbox needs of it, and nothing more.

A daemon runs a contributor's jobs through a :class:`JobRunner`. The real one is
:class:`sandbox.Sandbox`; :mod:`sandbox.testing` ships runners without workers (in-process,
slow, corrupting, failing), so that a test picks how a contributor behaves by the runner it
hands in, and production code keeps no test-only branches.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ._job import JobRequest, Outcome


class JobRunner(Protocol):
    """Runs one job to its end (blocking) and says how it ended.

    ``run`` is called from a worker thread (``trio.to_thread.run_sync``), possibly from
    several at once: an implementation must be thread-safe. A job the runner cannot take
    at all may raise; everything that happens to an admitted job is an :class:`Outcome`.
    """

    def run(self, job: JobRequest) -> Outcome: ...
