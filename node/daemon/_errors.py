"""The daemon's errors.

::

    NodeError (node._errors)
    └── DaemonError            the daemon cannot do what was asked
        ├── DataDirInUse       another daemon holds this data directory's lock
        ├── DataDirUnusable    the data directory cannot be created or written
        ├── LedgerUnusable     the stored ledger is corrupt, altered or another chain's
        ├── GenesisUnavailable no genesis document and no coordinator to fetch it from
        ├── JobSubmitError     a job cannot be submitted (bad model, inputs, balance, role)
        ├── JobNotFound        no job with that id on this node
        └── RoleMissing        the node does not hold the role the request needs

Each message says what to do about it; the HTTP API maps them to 4xx answers.
"""

from __future__ import annotations

from .._errors import NodeError


class DaemonError(NodeError):
    """Root of the daemon's own errors."""


class DataDirInUse(DaemonError):
    """Another daemon holds the data directory's lock (``node.lock``)."""


class DataDirUnusable(DaemonError):
    """The data directory cannot be created, or its lock file cannot be written."""


class LedgerUnusable(DaemonError):
    """The stored ledger cannot be opened: not a database, corrupt, altered blocks (the
    start-up check, ``ledger.check_head``) or another chain's. The message names the
    commands that check it and move it aside."""


class GenesisUnavailable(DaemonError):
    """No genesis document: none in the data directory and none from a coordinator."""


class JobSubmitError(DaemonError):
    """A job cannot be submitted as given."""


class JobNotFound(DaemonError):
    """No job with that id on this node."""


class RoleMissing(DaemonError):
    """The node does not hold the role that the request needs."""
