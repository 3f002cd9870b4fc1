"""The network's errors.

::

    NetworkError               root of everything node.net raises on purpose
    ├── NetworkClosed          the network was used after it was closed
    ├── NetworkTimeout         a request, dial or lookup did not finish in time
    ├── AnswerLost             a request went out, its answer did not come back whole
    ├── PeerUnreachable        no connection to the peer could be made or kept
    │   ├── PeerBanned         the peer is banned here for misbehaving (not dialled)
    │   └── PeerBusy           the peer ran none of the request: all its slots were held
    ├── MessageTooLarge        a frame is over the size limit (ours or the peer's)
    ├── RemoteError            the peer answered with an error
    │   └── ProtocolNotSupported   the peer has no handler for that protocol id
    ├── RequestRejected        raised by a request handler to answer with an error
    └── RecordError            a capability record is unusable (wrong signer, expired, ...)

``NetworkError`` is a :class:`node.NodeError`, so the CLI prints these as one-line messages.
"""

from __future__ import annotations

from .._errors import NodeError


class NetworkError(NodeError):
    """Root of every error the network raises on purpose."""


class NetworkClosed(NetworkError):
    """The network was used after it was closed: open a new one."""


class NetworkTimeout(NetworkError):
    """A request, dial or lookup did not finish in time: the peer may be slow or gone."""


class AnswerLost(NetworkError):
    """The request went out and the stream ended before its answer came back whole: the
    peer may have run it. Send it again only if running it twice is harmless."""


class PeerUnreachable(NetworkError):
    """No connection to the peer: check its address, that it is running, and the network."""


class PeerBanned(PeerUnreachable):
    """The peer misbehaved and is banned for a while: it is neither dialled nor served."""


class PeerBusy(PeerUnreachable):
    """The peer ran none of the request, answering each try that every slot it serves
    streams with was held: it is overloaded. Try again later, or another peer."""


class MessageTooLarge(NetworkError):
    """A frame is over the size limit: send less, or split it."""


class RemoteError(NetworkError):
    """The peer answered the request with an error; the message is the peer's."""


class ProtocolNotSupported(RemoteError):
    """The peer has no handler for the protocol id: it may run another version."""


class RequestRejected(NetworkError):
    """Raise this from a request handler to answer the requester with an error message.

    The requester gets a :class:`RemoteError` carrying the same text. Any other exception
    from a handler is answered with a generic error, logged and counted.
    """


class RecordError(NetworkError):
    """A capability record is unusable: not signed by this node, wrong chain, or expired."""
