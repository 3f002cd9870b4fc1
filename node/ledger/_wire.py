"""The ledger's wire: its protocol ids and topic, and the limits on what a peer may send.

Request/response protocols and one topic; canonical msgpack (specs/ledger.md):

- ``/aimx/ledger/blocks/1``: request ``[from_height, limit]``; response
  ``[head_height, [block, ...]]`` (at most ``limit`` ≤ 256 blocks, and their bytes at most
  :data:`MAX_RESPONSE_BLOCK_BYTES`: three of the largest blocks, so any one block fits);
- ``/aimx/ledger/tx/1``: request: a signed transaction; response ``[tx_id]``, or a
  rejection whose text is the ledger's reason (a non-coordinator forwards to a source);
- ``/aimx/ledger/dropped/1`` (coordinator to a transactions' sender): request
  ``[[tx_id, seq, reason], ...]`` (at most 256) for the transactions of that sender the
  mempool admitted that will never be in a block; response empty. Taken only from a
  coordinator of the genesis;
- topic ``aimx/<chain>/ledger/blocks``: ``[height, block]`` for each new block (``block``
  empty when it is larger than a pubsub message; replicas then fetch it).

Who handles each: :mod:`._serve` answers the three requests, :mod:`._sync` takes the
announcements and the block responses, :mod:`._submit` the transaction responses.
"""

from __future__ import annotations

import ledger

from ..net import MAX_FRAME_BYTES

BLOCKS_PROTOCOL = "/aimx/ledger/blocks/1"
TX_PROTOCOL = "/aimx/ledger/tx/1"
DROPPED_PROTOCOL = "/aimx/ledger/dropped/1"
#: How a source's refusal of a transaction begins (specs/ledger.md); any other error answer
#: leaves the transaction's outcome unknown.
REJECTED_PREFIX = "transaction rejected: "
#: Drops told in one notice.
MAX_DROPS_PER_NOTICE = 256
#: Largest ``dropped/1`` request: from a coordinator (256 drops with their reasons); from
#: any other peer (refused by the handler, and counted) the small limit.
MAX_DROPPED_REQUEST_BYTES = 1 << 20
MAX_DROPPED_SMALL_REQUEST_BYTES = 1024
#: Largest ``blocks/1`` request (``[from_height, limit]``: two integers): refused from its
#: length past this, unread (it was 1 MiB, read whole: round 40, F1).
MAX_BLOCKS_REQUEST_BYTES = 64
MAX_BLOCKS_PER_RESPONSE = 256
#: A fetch answer's blocks, in bytes (a server stops adding blocks before passing it).
#: Derived from the ledger's block limit (``ledger.MAX_BLOCK_BYTES``, a consensus rule):
#: any valid block fits an answer alone, with room to spare.
MAX_RESPONSE_BLOCK_BYTES = 3 * ledger.MAX_BLOCK_BYTES
#: A fetch answer's bytes besides its blocks' (the head, the list and byte-string headers:
#: at most 5 bytes a block); what a replica unpacks is at most the two together.
MAX_RESPONSE_FRAMING_BYTES = 4096
MAX_RESPONSE_BYTES = MAX_RESPONSE_BLOCK_BYTES + MAX_RESPONSE_FRAMING_BYTES
assert MAX_RESPONSE_BYTES <= MAX_FRAME_BYTES, "a fetch answer must fit one network frame"
#: Largest height taken from a peer (block heights are unsigned 64-bit, far below this).
MAX_HEIGHT = (1 << 63) - 1
#: Peers whose announcement rate or misbehaviour a service remembers.
MAX_PEERS_TRACKED = 4096


def blocks_topic(chain_id: str) -> str:
    return f"aimx/{chain_id}/ledger/blocks"
