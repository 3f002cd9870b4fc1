"""The report protocol (``/aimx/report/1``): a requester sends a coordinator the signed
Results of a provider it found wrong; the coordinator slashes the provider's stake."""

from __future__ import annotations

import logging
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


class Reports:
    """Serves reports on a coordinator; sends this node's reports to the coordinators."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self._reported: set[tuple[bytes, bytes]] = set()

    async def serve(self, peer: PeerKey, request: bytes) -> bytes:
        """A coordinator slashes a provider whose signed Result a requester found wrong."""
        node = self._node
        try:
            offender, _reason, evidence = protocol.unpack(request)
            if type(offender) is not bytes or len(offender) != 32 or type(evidence) is not list:
                raise protocol.RemoteProtocolError("expected [offender, reason, [results]]")
            evidence = [bytes(e) for e in evidence[:MAX_EVIDENCE]]
            for e in evidence:
                res = protocol.decode(e, node.chain_id, Result).message
                if res.provider != offender:
                    raise protocol.RemoteProtocolError("evidence not signed by the offender")
        except (protocol.ProtocolError, ValueError, TypeError) as exc:
            node.conduct.misbehaved(peer, f"bad report: {exc}")
            raise RequestRejected(f"bad report: {exc}") from None
        account = node.ledger.state.account(offender)
        amount = min(account.stake + account.unbonding_total, node.config.coordinator.slash_amount)
        if amount <= 0:
            return protocol.pack(["nothing staked"])
        slash = ledger.Slash(offender, amount, "failed_verification", tuple(evidence))
        node.submit_tx(slash)
        return protocol.pack(["slashing"])

    def report(self, offender: bytes, evidence: list[bytes]) -> None:
        """Report ``offender`` once per piece of evidence."""
        key = (offender, protocol.content_hash(b"".join(evidence)))
        if key in self._reported or not evidence:
            return
        self._reported.add(key)
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
