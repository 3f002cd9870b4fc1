"""The wire format of AIMatrix Node: canonical encoding, signed envelopes, messages.

Nothing in this package does I/O. See specs/wire.md and specs/messages.md.
"""

from ._canonical import pack as pack
from ._canonical import unpack as unpack
from ._classes import CapabilityClassError as CapabilityClassError
from ._classes import capability_class as capability_class
from ._classes import job_class as job_class
from ._classes import provider_classes as provider_classes
from ._envelope import Signed as Signed
from ._envelope import decode as decode
from ._envelope import decode_unsigned as decode_unsigned
from ._envelope import encode_unsigned as encode_unsigned
from ._envelope import sign as sign
from ._envelope import signing_bytes as signing_bytes
from ._errors import LocalProtocolError as LocalProtocolError
from ._errors import ProtocolError as ProtocolError
from ._errors import RemoteProtocolError as RemoteProtocolError
from ._hashing import HASH_SIZE as HASH_SIZE
from ._hashing import content_hash as content_hash
from ._identity import peer_id as peer_id
from ._identity import public_key_of as public_key_of
from ._limits import MAX_MESSAGE_BYTES as MAX_MESSAGE_BYTES
from ._messages import ALL_MESSAGES as ALL_MESSAGES
from ._messages import NOBID_REASONS as NOBID_REASONS
from ._messages import OUTCOMES as OUTCOMES
from ._messages import RUNTIMES as RUNTIMES
from ._messages import Advert as Advert
from ._messages import Award as Award
from ._messages import Bid as Bid
from ._messages import GpuInfo as GpuInfo
from ._messages import Heartbeat as Heartbeat
from ._messages import InputRef as InputRef
from ._messages import JobSpec as JobSpec
from ._messages import Message as Message
from ._messages import NoBid as NoBid
from ._messages import NoBidReason as NoBidReason
from ._messages import Outcome as Outcome
from ._messages import Receipt as Receipt
from ._messages import Requirements as Requirements
from ._messages import Result as Result
from ._messages import Transaction as Transaction
from ._messages import Unseal as Unseal
from ._messages import Usage as Usage
from ._messages import VerificationPolicy as VerificationPolicy
from ._schema import Bin as Bin
from ._schema import ListOf as ListOf
from ._schema import Nested as Nested
from ._schema import Record as Record
from ._schema import Text as Text
from ._schema import UInt as UInt
from ._sealing import SEAL_OVERHEAD as SEAL_OVERHEAD
from ._sealing import key_hash as key_hash
from ._sealing import output_key as output_key
from ._sealing import seal_output as seal_output
from ._sealing import unseal_output as unseal_output
