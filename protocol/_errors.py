"""The protocol's errors.

::

    ProtocolError                  something about a message is invalid
    ├── LocalProtocolError         we tried to build or send an invalid message (our bug)
    │   └── CapabilityClassError   a runtime or execution provider has no capability class
    └── RemoteProtocolError        a peer sent bytes that are not a valid message

Whose fault it is decides what the caller does: a local error is a bug to fix, a remote
error is counted against the peer and never stops the node.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Root of every error raised by :mod:`protocol`."""


class LocalProtocolError(ProtocolError):
    """We built or tried to send something that is not a valid message."""


class RemoteProtocolError(ProtocolError):
    """A peer sent bytes that do not decode to a valid, correctly signed message."""
