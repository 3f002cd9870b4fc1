"""Chaos on a devnet of processes: one fault at a time under a steady job stream, then the
checks that say nothing was lost (issue 15).

``scripts/chaos.py`` (the long run) and ``tests/chaos/`` (the short one in CI) share this
package. :func:`run_fault` (:mod:`._phase`) runs one phase: a :class:`JobStream`
(:mod:`._jobs`) submits jobs to the workspace while one of :data:`FAULTS` happens
(:mod:`._faults`: kill, stop, full disk, partition, move), then, after a settle time,
:func:`check_network` (:mod:`._judge`) snapshots every node's ledger and checks that
ledgers verify, heights and roots agree, nobody is paid twice and every job ended with
its escrow closed. The result is one :class:`PhaseResult` per fault, a row of
:func:`table`.
"""

from ._faults import DISK_FAULTS as DISK_FAULTS
from ._faults import FAULTS as FAULTS
from ._faults import FILLER as FILLER
from ._faults import NETNS_FAULTS as NETNS_FAULTS
from ._faults import ChaosError as ChaosError
from ._faults import ChaosSkip as ChaosSkip
from ._faults import Partition as Partition
from ._faults import by_name as by_name
from ._faults import fill as fill
from ._faults import inject as inject
from ._faults import ledger_tmpfs as ledger_tmpfs
from ._faults import sigkill as sigkill
from ._faults import tmpfs as tmpfs
from ._faults import wait_fault as wait_fault
from ._jobs import JobRun as JobRun
from ._jobs import JobStream as JobStream
from ._jobs import wait_closed as wait_closed
from ._judge import Chain as Chain
from ._judge import PhaseResult as PhaseResult
from ._judge import block_at as block_at
from ._judge import check_network as check_network
from ._judge import judge_jobs as judge_jobs
from ._judge import read_chain as read_chain
from ._judge import snapshot_ledger as snapshot_ledger
from ._judge import table as table
from ._judge import verify_snapshots as verify_snapshots
from ._phase import run_fault as run_fault
