"""The ledger: transactions, blocks, the pure apply function, ordering, replication, store.

Rules and state are pure (no I/O, no clock): :func:`apply_block` turns a state and a signed
block into a new state or a :class:`BlockRejected`. :class:`Mempool`, :class:`Producer` and
:class:`Replica` are sans-I/O state machines; :class:`LedgerStore` persists to SQLite.
See specs/ledger.md.
"""

from . import tx as tx
from ._apply import Produced as Produced
from ._apply import apply_block as apply_block
from ._apply import decode_block as decode_block
from ._apply import produce_block as produce_block
from ._block import MAX_BLOCK_BYTES as MAX_BLOCK_BYTES
from ._block import MAX_TX_BYTES as MAX_TX_BYTES
from ._block import Block as Block
from ._block import EquivocationProof as EquivocationProof
from ._budget import MAX_BLOCK_SIGNATURE_CHECKS as MAX_BLOCK_SIGNATURE_CHECKS
from ._budget import signature_checks as signature_checks
from ._draft import Draft as Draft
from ._effects import Commit as Commit
from ._effects import Effect as Effect
from ._effects import FetchBlocks as FetchBlocks
from ._effects import PeerMisbehaved as PeerMisbehaved
from ._effects import ProofFound as ProofFound
from ._effects import SetTimer as SetTimer
from ._effects import TxDropped as TxDropped
from ._errors import BadEvidence as BadEvidence
from ._errors import BlockRejected as BlockRejected
from ._errors import ChainVerificationError as ChainVerificationError
from ._errors import EscrowError as EscrowError
from ._errors import ExpiredTransaction as ExpiredTransaction
from ._errors import FeeTooLow as FeeTooLow
from ._errors import GenesisError as GenesisError
from ._errors import InsufficientFunds as InsufficientFunds
from ._errors import LedgerError as LedgerError
from ._errors import MalformedTransaction as MalformedTransaction
from ._errors import MempoolRejected as MempoolRejected
from ._errors import NotAuthorized as NotAuthorized
from ._errors import SequenceError as SequenceError
from ._errors import SequenceGap as SequenceGap
from ._errors import StoreError as StoreError
from ._errors import TransactionRejected as TransactionRejected
from ._evidence import check_slash_evidence as check_slash_evidence
from ._genesis import MAX_SUPPLY as MAX_SUPPLY
from ._genesis import Allocation as Allocation
from ._genesis import Genesis as Genesis
from ._genesis import make_genesis as make_genesis
from ._mempool import DROPPED_BEHIND as DROPPED_BEHIND
from ._mempool import MAX_AHEAD as MAX_AHEAD
from ._mempool import MAX_EXPIRY_AHEAD as MAX_EXPIRY_AHEAD
from ._mempool import Mempool as Mempool
from ._ordering import Producer as Producer
from ._payloads import KIND_OF as KIND_OF
from ._payloads import KINDS as KINDS
from ._payloads import Attest as Attest
from ._payloads import Claim as Claim
from ._payloads import Lock as Lock
from ._payloads import Mint as Mint
from ._payloads import Payload as Payload
from ._payloads import Payout as Payout
from ._payloads import Refund as Refund
from ._payloads import Settle as Settle
from ._payloads import Slash as Slash
from ._payloads import Stake as Stake
from ._payloads import Transfer as Transfer
from ._payloads import Unstake as Unstake
from ._replica import Replica as Replica
from ._rules import VerifiedTx as VerifiedTx
from ._rules import apply_tx as apply_tx
from ._rules import decode_payload as decode_payload
from ._rules import verify_tx as verify_tx
from ._state import REP_UNIT as REP_UNIT
from ._state import Account as Account
from ._state import Escrow as Escrow
from ._state import EscrowStatus as EscrowStatus
from ._state import ProviderRecord as ProviderRecord
from ._state import State as State
from ._state import check_invariants as check_invariants
from ._state import compute_root as compute_root
from ._store import HEAD_SIGNED_BLOCKS as HEAD_SIGNED_BLOCKS
from ._store import HistoryEntry as HistoryEntry
from ._store import LedgerStore as LedgerStore
from ._store import VerifyReport as VerifyReport
from ._store import check_head as check_head
from ._store import replay as replay
from ._store import verify_chain as verify_chain
