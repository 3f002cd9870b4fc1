"""The marketplace as state machines: announce, bid, award, execute, verify, settle, retry.

Nothing here does I/O or reads a clock. :class:`Requester` and :class:`Provider` take
events (a message's bytes, a timer, a ledger block, a finished run) with the current time
in milliseconds and return effects (:mod:`scheduler._effects`) for a driver to carry out.
specs/marketplace.md describes every state, transition, timeout and message. The states
are typed: :class:`JobPhase` and :class:`ReplicaState` (requester), :class:`WorkPhase`
(provider); the effects' vocabulary is :class:`TimerKind`, :class:`UserEvent` and
:class:`JobStatus`. Each is a ``StrEnum`` whose values are the spec's strings.
"""

from ._config import Canary as Canary
from ._config import ProviderConfig as ProviderConfig
from ._config import RequesterConfig as RequesterConfig
from ._config import run_key as run_key
from ._effects import AbortJob as AbortJob
from ._effects import Attest as Attest
from ._effects import CancelTimer as CancelTimer
from ._effects import ClaimWithReceipt as ClaimWithReceipt
from ._effects import Deliver as Deliver
from ._effects import Effect as Effect
from ._effects import JobDone as JobDone
from ._effects import JobStatus as JobStatus
from ._effects import LockEscrow as LockEscrow
from ._effects import Misbehaved as Misbehaved
from ._effects import NotifyUser as NotifyUser
from ._effects import Output as Output
from ._effects import Payout as Payout
from ._effects import Publish as Publish
from ._effects import Refund as Refund
from ._effects import ReservePlace as ReservePlace
from ._effects import RunJob as RunJob
from ._effects import Send as Send
from ._effects import SetTimer as SetTimer
from ._effects import Settle as Settle
from ._effects import Slash as Slash
from ._effects import TimerKey as TimerKey
from ._effects import TimerKind as TimerKind
from ._effects import UserEvent as UserEvent
from ._errors import ContentMismatch as ContentMismatch
from ._errors import DecryptionFailed as DecryptionFailed
from ._errors import JobRejected as JobRejected
from ._errors import SchedulerError as SchedulerError
from ._errors import SealError as SealError
from ._errors import UnknownJob as UnknownJob
from ._ledger import EscrowLookup as EscrowLookup
from ._ledger import EscrowView as EscrowView
from ._matching import match as match
from ._pricing import NEWCOMER as NEWCOMER
from ._pricing import Reputation as Reputation
from ._pricing import award_key as award_key
from ._pricing import bid_price as bid_price
from ._pricing import estimate_run_ms as estimate_run_ms
from ._provider import Provider as Provider
from ._provider_work import Work as Work
from ._provider_work import WorkPhase as WorkPhase
from ._reasons import BidOutcome as BidOutcome
from ._reasons import IdleReport as IdleReport
from ._reasons import NoBidReport as NoBidReport
from ._reasons import Seen as Seen
from ._reasons import explain_no_bids as explain_no_bids
from ._reasons import why_no_jobs as why_no_jobs
from ._requester import Requester as Requester
from ._requester_jobs import MAX_DEADLINE_MS as MAX_DEADLINE_MS
from ._requester_jobs import JobPhase as JobPhase
from ._requester_jobs import Replica as Replica
from ._requester_jobs import ReplicaState as ReplicaState
from ._requester_jobs import RequesterJob as RequesterJob
from ._requester_policy import established as established
from ._requester_settle import still_payable as still_payable
from ._sealing import SEAL_OVERHEAD as SEAL_OVERHEAD
from ._sealing import open_sealed as open_sealed
from ._sealing import seal as seal
from ._verification import CommitmentOf as CommitmentOf
from ._verification import Compare as Compare
from ._verification import Verdict as Verdict
from ._verification import VerdictStatus as VerdictStatus
from ._verification import commitments_equal as commitments_equal
from ._verification import judge as judge
from ._verification import slashable_class as slashable_class
