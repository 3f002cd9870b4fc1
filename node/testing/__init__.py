"""Testing tools that ship with the node (as ``trio.testing`` ships with trio).

- :class:`HostilePeer`: an in-memory (or any :class:`node.net.Network`) peer that speaks
  every protocol and topic a daemon serves and sends, from a fixed seed, random bytes,
  random msgpack and validly signed messages with each field pushed to its edges.
"""

from .hostile import HostilePeer as HostilePeer
from .hostile import HostileReport as HostileReport
from .hostile import Shot as Shot
from .hostile import daemon_protocols as daemon_protocols
from .hostile import daemon_topics as daemon_topics
