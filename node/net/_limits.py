"""Sizes, timeouts and name rules shared by every network implementation (specs/network.md)."""

from __future__ import annotations

import re

from ._errors import NetworkError

#: Hard cap on any request or response frame, whatever a handler or caller asks for.
MAX_FRAME_BYTES = 4 << 20
#: Default limit on a request a handler accepts (a signed message plus a little framing).
DEFAULT_MAX_REQUEST_BYTES = (1 << 20) + 1024
#: Default limit, for a protocol that takes large requests only from some peers, on a
#: request from the others (a signed message and a little framing).
DEFAULT_SMALL_REQUEST_BYTES = (64 << 10) + 1024
#: Large requests (past a gated protocol's small limit) one peer may have read or handled
#: at once; another is answered "send it again" unread.
MAX_LARGE_REQUESTS_PER_PEER = 4
#: Default limit on a response a requester accepts.
DEFAULT_MAX_RESPONSE_BYTES = MAX_FRAME_BYTES
#: Largest pubsub payload.
MAX_PUBSUB_BYTES = 256 << 10
#: Topics one peer's subscriptions are kept for (py-libp2p's default is 100; a contributor
#: follows a topic per capability class it serves, a few dozen at most, and the ledger's).
MAX_SUBSCRIPTIONS_PER_PEER = 128
#: Default time for a whole request (dial, send, handler, response), seconds.
DEFAULT_REQUEST_TIMEOUT = 10.0
#: Default time for a provider lookup, seconds.
DEFAULT_FIND_TIMEOUT = 5.0
#: The share of a provider lookup's time its network part may take: the rest is for
#: fetching the records of the providers found, those known locally included.
LOOKUP_SHARE = 0.6
#: Default number of messages a subscription or event stream buffers before dropping.
DEFAULT_QUEUE_SIZE = 1024
#: Most providers ``find_providers`` returns by default.
DEFAULT_FIND_LIMIT = 20
#: A record is re-advertised (or renewed) this long before it expires, ms.
REFRESH_MARGIN_MS = 60_000
#: Requests (streams, on libp2p) one peer may have open to us at once; more are refused.
MAX_INBOUND_PER_PEER = 64
#: Streams a peer may have opened on one connection and not yet ended, counted from the SYN
#: (before negotiation); more are reset at once (go-yamux's ``MaxIncomingStreams``).
MAX_INBOUND_STREAMS = 256
#: Streams our peers opened and that are naming their protocol, from one host (all its
#: connections) and from all hosts; past the second the oldest of the largest host is reset.
MAX_NEGOTIATING_PER_HOST = 256
MAX_NEGOTIATING = 2048
#: A connection's fully closed streams keep their unread data for a reader still to come
#: (a response read after our FIN) up to these bounds, newest first; a reset stream keeps
#: none (round 46, Y1).
MAX_CLOSED_UNREAD_BYTES = 1 << 20
MAX_CLOSED_UNREAD_STREAMS = 32
#: The bytes a node may hold unread, all its connections together (stream buffers, and
#: DATA frames and pubsub RPCs being read); past it what holds the most is dropped until it
#: holds at most the target (round 47, Y3; round 48, L1; round 50, O1; round 52).
#: Recounted after every UNREAD_CHECK_BYTES received, or UNREAD_CHECK_PER_STREAM for each
#: stream the node holds if more (a count's cost grows with the streams: about 11 MiB
#: between counts with every connection's streams open).
MAX_UNREAD_BYTES = 64 << 20
UNREAD_TARGET_BYTES = 48 << 20
UNREAD_CHECK_BYTES = 1 << 20
UNREAD_CHECK_PER_STREAM = 64
#: What the shed takes first is what stalled: a holder whose bytes, at the pace they came
#: lately (each byte weighed down by half every UNREAD_PACE_HALF_LIFE_S), would have taken
#: longer than UNREAD_STALLED_S to come (a frame kept a byte short, a buffer left unread);
#: then what still moves, the slowest first. A peer holding bytes must send as fast as an
#: honest transfer to be shed after it (round 54, F1).
UNREAD_PACE_HALF_LIFE_S = 1.0
UNREAD_STALLED_S = 10.0
#: A stream the peer opened has this long to name a protocol we serve, seconds.
INBOUND_NEGOTIATION_TIMEOUT_S = 5
#: Connections a node holds at once, and of them the inbound ones (py-libp2p counts both
#: against one limit, 300 by default, which also sized its inbound slots: 300 inbound
#: connections left a node unable to dial out, round 38, H1).
MAX_CONNECTIONS = 600
MAX_INBOUND_CONNECTIONS = 300
#: Outbound connections kept past the node's own peers (bootstrap peers, relays holding
#: our reservation, GossipSub mesh peers, peers with a request of ours under way); past
#: it the least recently used are closed, none younger than the grace. Lookups dial the
#: peers that answers name and kept them all, so strangers' keys could fill the 600 and
#: refuse the node its own dials (round 39, F2).
MAX_OUTBOUND_CONNECTIONS = 128
OUTBOUND_GRACE_S = 2.0
#: Sockets in handshake (accepted, the muxer not yet started) from one host (an IP address,
#: an IPv6 /56), and from all hosts; past the first a socket is closed, past the second it
#: takes the place of the oldest of the host holding the most.
MAX_HANDSHAKES_PER_HOST = 16
MAX_HANDSHAKES = 64
#: Newcomers let in past full inbound slots at once, each to take a connection once its
#: handshake is done, and from one host (8 idle sockets from one address held all 8
#: places for 5 s: round 38, M3); a full table gives a newcomer the place of the oldest of
#: the host holding the most, its socket closed (4 addresses held all 8: round 39, F1).
MAX_NEWCOMERS = 8
MAX_NEWCOMERS_PER_HOST = 2
#: The longest an inbound handshake (security and muxer negotiation) may take, seconds.
INBOUND_UPGRADE_TIMEOUT_S = 5
#: Peers banned at once; a new ban past this drops the ban that ends first.
MAX_BANS = 4096

_PROTOCOL_RE = re.compile(r"/[A-Za-z0-9_.\-/]{1,127}")
_TOPIC_RE = re.compile(r"[A-Za-z0-9_.\-/:]{1,128}")


def check_protocol_id(protocol_id: str) -> str:
    """A protocol id is ``/`` then 1..127 of ``[A-Za-z0-9_.-/]``, e.g. ``/aimx/bid/1``."""
    if not isinstance(protocol_id, str) or not _PROTOCOL_RE.fullmatch(protocol_id):
        raise NetworkError(
            f"invalid protocol id {protocol_id!r}: use '/' and 1..127 of [A-Za-z0-9_.-/]"
        )
    return protocol_id


def is_topic(topic: str) -> bool:
    """Whether ``topic`` has a topic's form (see :func:`check_topic`)."""
    return isinstance(topic, str) and _TOPIC_RE.fullmatch(topic) is not None


def check_topic(topic: str) -> str:
    """A topic is 1..128 of ``[A-Za-z0-9_.-/:]``."""
    if not isinstance(topic, str) or not _TOPIC_RE.fullmatch(topic):
        raise NetworkError(f"invalid topic {topic!r}: use 1..128 of [A-Za-z0-9_.-/:]")
    return topic


def check_frame_limit(limit: int) -> int:
    if not 0 < limit <= MAX_FRAME_BYTES:
        raise NetworkError(f"a frame limit must be in 1..{MAX_FRAME_BYTES} bytes, not {limit}")
    return limit
