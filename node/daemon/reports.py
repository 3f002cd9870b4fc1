"""The report protocol (``/aimx/report/1``): a requester sends a coordinator the signed
Results of a provider it found wrong, with the Results of the majority its job paid; the
coordinator slashes the provider's stake.

A report is refused (and counted against the peer) unless it is ``[offender, reason,
[results]]`` with every Result signed and for one job, at least one by the offender, and
the reporting peer owns that job's escrow (the requester who paid). The ledger checks the
rest when the slash is applied (specs/ledger.md, "slash"): a closed escrow that paid the
majority and not the offender, and evidence used once. The coordinator waits (a few blocks)
for the job's escrow to close before it submits the slash, and submits one per job and
offender. What a reporter can make a coordinator hold is bounded: at most ``MAX_PENDING``
reports wait at once (more are answered ``busy``), and the pairs remembered are capped."""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import TYPE_CHECKING

import ledger
import protocol
from protocol import Result

from ..net import NetworkError, PeerKey, RequestRejected

if TYPE_CHECKING:
    from ._node import Node

log = logging.getLogger(__name__)

REPORT_PROTOCOL = "/aimx/report/1"
#: Most signed Results one report carries (a slash's evidence bound).
MAX_EVIDENCE = 4
#: Blocks a coordinator waits for a reported job's escrow to close before giving up.
CLOSE_WAIT_BLOCKS = 30
#: Reports a coordinator holds at once, each waiting for its escrow to close; past it a
#: report is answered ``busy`` (nothing is lost: the ledger's evidence stays valid).
MAX_PENDING = 1_024
#: ``(job id, offender)`` pairs remembered as reported (here: sent; on a coordinator:
#: slashed or being slashed), the oldest forgotten first. A forgotten pair reported again
#: costs one refused transaction at most (the ledger slashes a job's offender once).
REMEMBERED = 4_096


class Reports:
    """Serves reports on a coordinator; sends this node's reports to the coordinators."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self._reported: OrderedDict[tuple[bytes, bytes], None] = OrderedDict()
        #: ``(job id, offender)`` slashes this coordinator has submitted or is waiting for.
        self._slashing: OrderedDict[tuple[bytes, bytes], None] = OrderedDict()
        self._pending = 0

    async def serve(self, peer: PeerKey, request: bytes) -> bytes:
        """A coordinator slashes a provider whose signed Result a requester found wrong."""
        node = self._node
        try:
            offender, _reason, evidence = protocol.unpack(request)
            if type(offender) is not bytes or len(offender) != 32 or type(evidence) is not list:
                raise protocol.RemoteProtocolError("expected [offender, reason, [results]]")
            evidence = evidence[:MAX_EVIDENCE]
            if any(type(e) is not bytes for e in evidence):
                raise protocol.RemoteProtocolError("evidence items are signed Results' bytes")
            results = [protocol.decode(e, node.chain_id, Result).message for e in evidence]
            jobs = {r.job_id for r in results}
            if len(jobs) != 1 or not any(r.provider == offender for r in results):
                raise protocol.RemoteProtocolError(
                    "evidence must be Results of one job, one of them the offender's"
                )
            (job_id,) = jobs
            escrow = node.ledger.state.escrow(job_id)
            if escrow is None or escrow.owner != peer:
                raise protocol.RemoteProtocolError("only the job's paying requester may report")
        except (protocol.ProtocolError, ValueError, TypeError) as exc:
            node.conduct.misbehaved(peer, f"bad report: {exc}")
            raise RequestRejected(f"bad report: {exc}") from None
        if (job_id, offender) in self._slashing or offender in escrow.slashed:
            return protocol.pack(["already reported"])
        if self._pending >= MAX_PENDING:
            return protocol.pack(["busy"])
        _remember(self._slashing, (job_id, offender))
        self._pending += 1
        node.spawn(self._slash_when_closed, job_id, offender, tuple(evidence))
        return protocol.pack(["slashing"])

    async def _slash_when_closed(
        self, job_id: bytes, offender: bytes, evidence: tuple[bytes, ...]
    ) -> None:
        """Submit the slash once the job's escrow is closed (its settlement names the
        majority the ledger checks the evidence against)."""
        node = self._node
        try:
            height = node.ledger.state.height
            for _ in range(CLOSE_WAIT_BLOCKS):
                escrow = node.ledger.state.escrow(job_id)
                if escrow is not None and not escrow.is_open:
                    break
                height += 1
                await node.ledger.wait_height(height)
            else:
                self._slashing.pop((job_id, offender), None)  # a later report may retry
                return
            state = node.ledger.state
            account = state.account(offender)
            stake = account.stake + account.unbonding_total
            amount = min(stake, node.config.coordinator.slash_amount)
            if amount <= 0:
                return
            slash = ledger.Slash(offender, amount, "failed_verification", evidence)
            try:  # a refused slash would cost this coordinator a sequence gap to fill
                ledger.check_slash_evidence(state, slash)
            except ledger.LedgerError as exc:
                log.info("report of %s not slashed: %s", protocol.peer_id(offender), exc)
                return
            node.submit_tx(slash)
        finally:
            self._pending -= 1

    def report(self, offender: bytes, evidence: list[bytes]) -> None:
        """Report ``offender`` once per piece of evidence."""
        key = (offender, protocol.content_hash(b"".join(evidence)))
        if key in self._reported or not evidence:
            return
        _remember(self._reported, key)
        self._node.spawn(self._send, offender, evidence[:MAX_EVIDENCE])

    async def _send(self, offender: bytes, evidence: list[bytes]) -> None:
        node = self._node
        data = protocol.pack([offender, "failed_verification", evidence])
        if "coordinator" in node.roles:
            await self.serve(node.me, data)
            return
        for coordinator in node.genesis.coordinators:
            try:
                await node.net.request(coordinator, REPORT_PROTOCOL, data, timeout=10)
                return
            except NetworkError as exc:
                log.info("report to %s failed: %s", protocol.peer_id(coordinator), exc)


def _remember(seen: OrderedDict[tuple[bytes, bytes], None], key: tuple[bytes, bytes]) -> None:
    seen[key] = None
    while len(seen) > REMEMBERED:
        seen.popitem(last=False)
