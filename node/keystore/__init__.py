"""The node's identity: an Ed25519 key in the data directory, optionally passphrase-encrypted.

The file format is specified in specs/identity.md. The daemon calls
:func:`load_or_create_identity`; the ``aimx keys`` commands use the rest.
"""

from .._errors import KeystoreError as KeystoreError
from ._errors import CorruptKeyFileError as CorruptKeyFileError
from ._errors import InsecureKeyFileError as InsecureKeyFileError
from ._errors import KeyExistsError as KeyExistsError
from ._errors import KeyNotFoundError as KeyNotFoundError
from ._errors import PassphraseRequiredError as PassphraseRequiredError
from ._errors import WrongPassphraseError as WrongPassphraseError
from ._format import KdfParams as KdfParams
from ._format import KeyFileHeader as KeyFileHeader
from ._format import decode_key_file as decode_key_file
from ._format import decode_key_file_header as decode_key_file_header
from ._format import encode_encrypted_key_file as encode_encrypted_key_file
from ._format import encode_plain_key_file as encode_plain_key_file
from ._store import KeyInfo as KeyInfo
from ._store import NodeIdentity as NodeIdentity
from ._store import create_identity as create_identity
from ._store import key_path as key_path
from ._store import load_identity as load_identity
from ._store import load_or_create_identity as load_or_create_identity
from ._store import read_key_info as read_key_info
