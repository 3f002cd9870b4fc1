"""The daemon: one :class:`Node` per process drives the marketplace machines over the
network, the ledger and the sandbox, and serves the local HTTP API (specs/daemon.md,
specs/api.md). :func:`run_daemon` starts a whole node from a data directory.
"""

from ._api import make_router as make_router
from ._errors import DaemonError as DaemonError
from ._errors import GenesisUnavailable as GenesisUnavailable
from ._errors import JobNotFound as JobNotFound
from ._errors import JobSubmitError as JobSubmitError
from ._errors import RoleMissing as RoleMissing
from ._node import CONTENT_PROTOCOL as CONTENT_PROTOCOL
from ._node import GENESIS_PROTOCOL as GENESIS_PROTOCOL
from ._node import MARKET_PROTOCOL as MARKET_PROTOCOL
from ._node import REPORT_PROTOCOL as REPORT_PROTOCOL
from ._node import JobRecord as JobRecord
from ._node import Node as Node
from ._node import ProviderProfile as ProviderProfile
from ._run import run_daemon as run_daemon
