"""The node's errors.

::

    NodeError                  root of everything the daemon and CLI raise on purpose
    ├── ConfigError            bad configuration or data directory
    ├── KeystoreError          missing, unreadable or undecryptable key
    └── ProbeError             a hardware probe that cannot run at all

Each message says what to do about it; the CLI prints it and exits non-zero.
"""

from __future__ import annotations


class NodeError(Exception):
    """Root of every error the node raises on purpose."""


class ConfigError(NodeError):
    """The configuration or data directory is unusable."""


class KeystoreError(NodeError):
    """The node key is missing, unreadable, or the passphrase is wrong."""


class ProbeError(NodeError):
    """A hardware probe could not run at all."""
