"""The daemon: one :class:`Node` per process drives the marketplace machines over the
network, the ledger and the job runner (the sandbox), and serves the local HTTP API
(specs/daemon.md, specs/api.md). :func:`run_daemon` starts a whole node from a data directory.
"""

from ._errors import DaemonError as DaemonError
from ._errors import DataDirInUse as DataDirInUse
from ._errors import DataDirUnusable as DataDirUnusable
from ._errors import GenesisUnavailable as GenesisUnavailable
from ._errors import JobNotFound as JobNotFound
from ._errors import JobSubmitError as JobSubmitError
from ._errors import LedgerUnusable as LedgerUnusable
from ._errors import RoleMissing as RoleMissing
from ._jobs import JobRecord as JobRecord
from ._node import Node as Node
from ._profile import ProviderProfile as ProviderProfile
from ._profile import profile_from_report as profile_from_report
from ._profile import run_classes as run_classes
from ._run import run_daemon as run_daemon
from .content import CONTENT_PROTOCOL as CONTENT_PROTOCOL
from .genesis import GENESIS_PROTOCOL as GENESIS_PROTOCOL
from .market import MARKET_PROTOCOL as MARKET_PROTOCOL
from .reports import REPORT_PROTOCOL as REPORT_PROTOCOL
