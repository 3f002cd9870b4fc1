"""The node's network: one small interface (:class:`Network`), two implementations.

- :mod:`node.net.memory`: :class:`MemoryHub` / :class:`MemoryNetwork`, in memory, driven by
  trio's clock, with latency, loss and partitions (tests and the simulator);
- :mod:`node.net.libp2p_host`: py-libp2p 0.8.1 underneath (TCP, Noise, Yamux, Kademlia,
  GossipSub, circuit relay v2), opened with ``open_libp2p_network``.

See specs/network.md for protocol ids, topics, record formats, capability classes, limits.
"""

from ._errors import AnswerLost as AnswerLost
from ._errors import MessageTooLarge as MessageTooLarge
from ._errors import NetworkClosed as NetworkClosed
from ._errors import NetworkError as NetworkError
from ._errors import NetworkTimeout as NetworkTimeout
from ._errors import PeerBanned as PeerBanned
from ._errors import PeerBusy as PeerBusy
from ._errors import PeerUnreachable as PeerUnreachable
from ._errors import ProtocolNotSupported as ProtocolNotSupported
from ._errors import RecordError as RecordError
from ._errors import RemoteError as RemoteError
from ._errors import RequestRejected as RequestRejected
from ._inbox import Inbox as Inbox
from ._interface import Network as Network
from ._interface import NetworkCounters as NetworkCounters
from ._interface import PeerEvent as PeerEvent
from ._interface import PeerKey as PeerKey
from ._interface import PubsubMessage as PubsubMessage
from ._interface import Reachability as Reachability
from ._interface import RenewRecord as RenewRecord
from ._interface import RequestHandler as RequestHandler
from ._limits import DEFAULT_MAX_REQUEST_BYTES as DEFAULT_MAX_REQUEST_BYTES
from ._limits import DEFAULT_REQUEST_TIMEOUT as DEFAULT_REQUEST_TIMEOUT
from ._limits import DEFAULT_SMALL_REQUEST_BYTES as DEFAULT_SMALL_REQUEST_BYTES
from ._limits import MAX_BANS as MAX_BANS
from ._limits import MAX_FRAME_BYTES as MAX_FRAME_BYTES
from ._limits import MAX_INBOUND_PER_PEER as MAX_INBOUND_PER_PEER
from ._limits import MAX_PUBSUB_BYTES as MAX_PUBSUB_BYTES
from ._topics import job_topic as job_topic
from .memory import MemoryHub as MemoryHub
from .memory import MemoryNetwork as MemoryNetwork
