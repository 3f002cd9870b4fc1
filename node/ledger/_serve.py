"""The ledger's answers to peers: the handlers of its three request protocols (block
fetches, transactions, a coordinator's notices of dropped transactions).

Every request's bytes are checked here before anything else sees them; a malformed one
is refused and counts against the peer.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

import ledger
import protocol

from ..net import PeerKey, RequestRejected
from ._errors import LedgerServiceError
from ._wire import (
    MAX_BLOCKS_PER_RESPONSE,
    MAX_DROPS_PER_NOTICE,
    MAX_HEIGHT,
    MAX_PEERS_TRACKED,
    MAX_RESPONSE_BLOCK_BYTES,
    REJECTED_PREFIX,
)

if TYPE_CHECKING:
    from ._service import LedgerService

log = logging.getLogger(__name__)

#: Signature checks of carried messages a forwarding node spends on one peer's
#: transactions: a bucket of ``FORWARD_CHECKS_BURST``, refilled at ``FORWARD_CHECKS_PER_S``.
FORWARD_CHECKS_BURST = 1024
FORWARD_CHECKS_PER_S = 256.0

#: Block requests served to one peer at once (each may read up to
#: ``MAX_RESPONSE_BLOCK_BYTES``); more are refused.
MAX_BLOCK_REQUESTS_PER_PEER = 4
#: Block reads on the store's thread at once, from all peers: the store's one thread takes its
#: calls in order, and a node's commits (a coordinator's own blocks) waited behind up to 256
#: answers of 2.8 MiB, new keys each getting a fresh allowance (review round 74, R74-B).
MAX_BLOCK_READS = 8
#: Block answer bytes one peer is sent: a bucket of this many, refilled at this rate a
#: second. A peer past it waits (at most ``ANSWER_PAUSE_S`` an answer) before its answer:
#: a 5-byte request had 256 blocks sent, and 2,000 requests on one stream were answered in
#: 1.6 s (round 40, F3). A replica catching up is paced, not refused.
ANSWER_BYTES_BURST = 32 << 20
ANSWER_BYTES_PER_S = 8 << 20
ANSWER_PAUSE_S = 2.0
#: Largest ``tx/1`` request (the limit the protocol is mounted with): the largest
#: transaction a block may hold, and a little room, so that the network refuses a bigger
#: one from its length alone, before any byte of it is read or decoded.
MAX_TX_REQUEST_BYTES = ledger.MAX_TX_BYTES + 1024


class Server:
    """The handlers of ``/aimx/ledger/blocks/1``, ``tx/1`` and ``dropped/1``."""

    def __init__(self, service: LedgerService) -> None:
        self._service = service
        #: Block requests being answered, by peer.
        self._serving: dict[PeerKey, int] = {}
        #: The signed messages forwarded transactions carried that verified (each checked
        #: once, however often a peer sends them again).
        self._messages = ledger.VerifiedMessages()
        #: Per peer: (checks left, at seconds) of its bucket of carried-message checks.
        self._budgets: dict[PeerKey, tuple[float, float]] = {}
        #: Per peer: (bytes left, at seconds) of its bucket of block answer bytes.
        self._answers: dict[PeerKey, tuple[float, float]] = {}
        #: Block reads on the store's thread at once, from all peers (``MAX_BLOCK_READS``).
        self._reads = trio.Semaphore(MAX_BLOCK_READS)

    async def serve_blocks(self, peer: PeerKey, request: bytes) -> bytes:
        try:
            value = protocol.unpack(request)
            if type(value) is not list or len(value) != 2:
                raise protocol.RemoteProtocolError("expected [from_height, limit]")
            start, limit = value
            if (
                type(start) is not int
                or type(limit) is not int
                or not 1 <= start <= MAX_HEIGHT
                or limit < 1
            ):
                raise protocol.RemoteProtocolError("expected [from_height >= 1, limit >= 1]")
        except protocol.ProtocolError as exc:
            self._service.misbehaved(peer, f"bad block request: {exc}")
            raise RequestRejected(f"bad block request: {exc}") from None
        limit = min(limit, MAX_BLOCKS_PER_RESPONSE)
        if self._serving.get(peer, 0) >= MAX_BLOCK_REQUESTS_PER_PEER:
            raise RequestRejected(
                f"at most {MAX_BLOCK_REQUESTS_PER_PEER} block requests at once from one peer"
            )
        self._serving[peer] = self._serving.get(peer, 0) + 1
        try:
            await trio.sleep(self._answer_pause(peer, trio.current_time()))
            response = await self._blocks_response(start, limit)
            self._answered(peer, len(response), trio.current_time())
            return response
        finally:
            left = self._serving.pop(peer) - 1
            if left:
                self._serving[peer] = left

    async def serve_tx(self, peer: PeerKey, request: bytes) -> bytes:
        """Admit (a coordinator) or forward (any other node) a peer's transaction.

        Its envelope, signature and payload shape, and the signed messages it carries (a
        settle's Bids, ...: :func:`ledger.check_embedded`) are checked here first on
        either path: a malformed one counts against the peer that sent it. A forwarding
        node only sends on what it checked, so a coordinator that counts a malformed
        transaction against its sender never blames an honest forwarder; the first hop
        blames the source.

        A forwarding node first applies the coordinator's cheap refusal of a settle (the
        sender's open escrow of the job) to its own replica's state, before the settle's
        Bids: a settle of no escrow cost a forwarder 65 signature checks per replay, its
        Bids cycled past the memory of verified messages (round 7, R7-4). Its state may
        lag the coordinator's, so that refusal is not final: the answer lacks the
        rejection prefix (the sender's outcome stays unknown; it sends it again later or
        elsewhere), and it counts nothing against the peer."""
        service = self._service
        if service.producer is None:
            try:
                chain = service.genesis.chain_id
                vtx = ledger.verify_tx(request, chain)
                if isinstance(vtx.payload, ledger.Settle):
                    self._settle_precheck(vtx.payload, vtx.sender)
                self._spend(peer, _carried(vtx.payload))
                ledger.check_embedded(vtx, chain, self._messages)
                return protocol.pack([await service.submit(request, wait=False)])
            except ledger.MalformedTransaction as exc:  # checked here, never sent on
                service.misbehaved(peer, f"sent a malformed transaction: {exc}")
                raise RequestRejected(f"{REJECTED_PREFIX}{exc}") from None
            except ledger.LedgerError as exc:
                raise RequestRejected(f"{REJECTED_PREFIX}{exc}") from None
            except LedgerServiceError as exc:
                raise RequestRejected(str(exc)) from None
        try:
            tx_id = service.producer.submit(request).id
        except ledger.MalformedTransaction as exc:
            service.misbehaved(peer, f"sent a malformed transaction: {exc}")
            raise RequestRejected(f"{REJECTED_PREFIX}{exc}") from None
        except ledger.LedgerError as exc:
            raise RequestRejected(f"{REJECTED_PREFIX}{exc}") from None
        except Exception as exc:  # a bug of ours that the peer's bytes found
            log.exception("the mempool failed on a transaction")
            service.misbehaved(peer, f"its transaction made the mempool fail: {exc!r}")
            raise RequestRejected(f"{REJECTED_PREFIX}the mempool failed on it") from None
        return protocol.pack([tx_id])

    def _answer_pause(self, peer: PeerKey, now: float) -> float:
        """How long ``peer``'s next block answer waits: until its bucket is out of debt,
        at most ``ANSWER_PAUSE_S``."""
        left, at = self._answers.get(peer, (float(ANSWER_BYTES_BURST), now))
        left = min(float(ANSWER_BYTES_BURST), left + (now - at) * ANSWER_BYTES_PER_S)
        return 0.0 if left >= 0 else min(ANSWER_PAUSE_S, -left / ANSWER_BYTES_PER_S)

    def _answered(self, peer: PeerKey, size: int, now: float) -> None:
        left, at = self._answers.get(peer, (float(ANSWER_BYTES_BURST), now))
        left = min(float(ANSWER_BYTES_BURST), left + (now - at) * ANSWER_BYTES_PER_S)
        if peer not in self._answers and len(self._answers) >= MAX_PEERS_TRACKED:
            # the longest untouched goes, not all: clearing them cleared every debt
            # (round 41, F3)
            del self._answers[next(iter(self._answers))]
        self._answers.pop(peer, None)  # re-entered: the order is that of last use
        # a debt of at most one burst: what it paces is at most ANSWER_PAUSE_S an answer
        self._answers[peer] = (max(-float(ANSWER_BYTES_BURST), left - size), now)

    def _spend(self, peer: PeerKey, checks: int) -> None:
        """Take ``checks`` from ``peer``'s bucket of carried-message checks, or refuse, not
        finally (no rejection prefix, nothing counted: a peer relaying others' settles is
        no offender). Without it, settles of one open escrow of the sender's, signed once
        and replayed in a cycle past the memory of verified messages, cost a forwarder 65
        checks each for nothing (round 8, R8-3)."""
        if checks == 0:
            return
        now = trio.current_time()
        left, at = self._budgets.get(peer, (float(FORWARD_CHECKS_BURST), now))
        left = min(float(FORWARD_CHECKS_BURST), left + (now - at) * FORWARD_CHECKS_PER_S)
        if peer not in self._budgets and len(self._budgets) >= MAX_PEERS_TRACKED:
            self._budgets.clear()
        if left < checks:
            self._budgets[peer] = (left, now)
            raise RequestRejected(
                f"not forwarded: this node checks at most {FORWARD_CHECKS_PER_S:g} signed "
                "messages a second carried by one peer's transactions; send it again later, "
                "or to a coordinator"
            )
        self._budgets[peer] = (left - checks, now)

    def _settle_precheck(self, p: ledger.Settle, sender: bytes) -> None:
        """Refuse, not finally (:class:`RequestRejected` without the rejection prefix), a
        settle whose sender holds no open escrow of the job in this node's replica."""
        try:
            ledger.check_settle_escrow(p, sender, self._service.state)
        except ledger.MempoolRejected as exc:
            raise RequestRejected(
                f"not forwarded: by this node's copy of the chain, {exc}; if the escrow was "
                "locked since, send it again once this node has that block, or to a "
                "coordinator"
            ) from None

    async def serve_dropped(self, peer: PeerKey, request: bytes) -> bytes:
        service = self._service
        if peer not in service.genesis.coordinators:
            service.misbehaved(peer, "reported a dropped transaction but is no coordinator")
            raise RequestRejected("only a coordinator reports dropped transactions")
        try:
            drops = protocol.unpack(request)
            if type(drops) is not list or not 0 < len(drops) <= MAX_DROPS_PER_NOTICE:
                raise protocol.RemoteProtocolError(
                    f"expected a list of 1 to {MAX_DROPS_PER_NOTICE} drops"
                )
            for drop in drops:
                if (
                    type(drop) is not list
                    or len(drop) != 3
                    or type(drop[0]) is not bytes
                    or len(drop[0]) != protocol.HASH_SIZE
                    or type(drop[1]) is not int
                    or drop[1] < 0
                    or type(drop[2]) is not str
                ):
                    raise protocol.RemoteProtocolError("a drop is [tx_id, seq, reason]")
        except (protocol.ProtocolError, ValueError) as exc:
            service.misbehaved(peer, f"bad dropped-transaction notice: {exc}")
            raise RequestRejected(f"bad dropped-transaction notice: {exc}") from None
        for tx_id, seq, reason in drops:
            service.notify_dropped(tx_id, seq, reason[:1000])
        return b""

    async def _blocks_response(self, start: int, limit: int) -> bytes:
        service = self._service
        head = service.state.height
        if service.store is not None:
            async with self._reads:
                blocks = await service.store.call(
                    lambda s: s.blocks_from(start, limit, MAX_RESPONSE_BLOCK_BYTES + 1)
                )
        else:
            blocks = [
                service.replica.recent[h]
                for h in range(start, min(head, start + limit - 1) + 1)
                if h in service.replica.recent
            ]
        out: list[bytes] = []
        size = 0
        for raw in blocks:
            size += len(raw)
            if out and size > MAX_RESPONSE_BLOCK_BYTES:
                break
            out.append(raw)
        return protocol.pack([head, out])


def _carried(payload: ledger.Payload) -> int:
    """The signed messages a transaction carries, each a signature check to forward it."""
    if isinstance(payload, ledger.Settle):
        return len(payload.payouts)
    if isinstance(payload, ledger.Claim):
        return 2
    if isinstance(payload, ledger.Lock):
        return 1
    if isinstance(payload, ledger.Slash):
        return len(payload.evidence)
    return 0
