"""Hard limits checked while decoding. Every length a peer controls has one."""

from __future__ import annotations

#: Largest signed control message (adverts, job specs, bids, results, blocks' transactions).
MAX_MESSAGE_BYTES = 1 << 20
#: Largest byte string inside a message (hashes, keys, signatures, small payloads).
MAX_BIN_LEN = 1 << 20
#: Largest text string inside a message.
MAX_STR_LEN = 4096
#: Largest array inside a message.
MAX_ARRAY_LEN = 4096
#: Largest unsigned integer carried (u64).
MAX_UINT = (1 << 64) - 1
#: Longest chain id.
MAX_CHAIN_ID_LEN = 64
