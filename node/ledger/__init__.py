"""The daemon's side of the ledger: the service that keeps a replica (and, on a
coordinator, the block producer) on the network, the node's own transaction queue, and
the store's thread. The rules themselves are the pure :mod:`ledger` package.

The service's parts: ``_service`` (the public face, effects carried out), ``_sync``
(announcements taken, blocks fetched), ``_serve`` (answers to peers), ``_submit`` (this
node's transactions to a coordinator), ``_produce`` (a coordinator's blocks), ``_wire``
(protocol ids and the limits on peers' bytes)."""

from ._intents import Intent as Intent
from ._intents import IntentBook as IntentBook
from ._intents import IntentStore as IntentStore
from ._intents import Resolved as Resolved
from ._intents import Submit as Submit
from ._intents import overdue_escrows as overdue_escrows
from ._service import LedgerService as LedgerService
from ._service import ledger_db_path as ledger_db_path
from ._store_thread import StoreThread as StoreThread
from ._txqueue import TxQueue as TxQueue
from ._txrequest import TxRequest as TxRequest
from ._wire import DROPPED_PROTOCOL as DROPPED_PROTOCOL
from ._wire import blocks_topic as blocks_topic
