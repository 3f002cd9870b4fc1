"""The node's errors.

::

    NodeError                  root of everything the daemon and CLI raise on purpose
    ├── ConfigError            bad configuration or data directory (node/config.py)
    ├── KeystoreError          missing, unreadable or undecryptable key
    │   └── KeyNotFoundError, KeyExistsError, CorruptKeyFileError, InsecureKeyFileError,
    │       PassphraseRequiredError, WrongPassphraseError (node/keystore/_errors.py)
    ├── NetworkError           the network layer (node/net/_errors.py has its subtree)
    ├── LedgerServiceError     the ledger driver (node/ledger/)
    ├── DaemonError            the daemon (node/daemon/_errors.py)
    ├── NodeNotRunning         no daemon for this data directory (node/_runinfo.py)
    ├── ApiError               a node's HTTP API refused or was unreachable (node/api/client.py)
    └── SandboxCliError, LedgerCommandError, JobCommandError, FaucetCommandError,
        NodeCommandError, DevnetError: CLI commands

Each message says what to do about it; the CLI prints it and exits non-zero.
"""

from __future__ import annotations


class NodeError(Exception):
    """Root of every error the node raises on purpose."""


class ConfigError(NodeError):
    """The configuration or data directory is unusable."""


class KeystoreError(NodeError):
    """The node key is missing, unreadable, or the passphrase is wrong."""
