"""The report protocol (``/aimx/report/1``): a requester sends a coordinator the signed
Results of a provider it found wrong, with the Results of the majority its job paid; the
coordinator slashes the provider's stake.

A report is refused (and counted against the peer) unless it is ``[offender, reason,
[results]]`` with every Result signed and for one job, at least one by the offender, and
the reporting peer owns that job's escrow (the requester who paid). A report comes once
the job's escrow is closed (the requester reports when it attests, specs/daemon.md), and
the coordinator decides it at once, against its own state: an open escrow is answered
``not closed`` (the reporter asks again later), evidence the ledger would refuse
(specs/ledger.md, "slash": a closed escrow that paid the majority and not the offender,
evidence used once) is refused and counted against the reporter, and otherwise the slash
is submitted, once per job and offender. Nothing is held for a report: a coordinator once
held up to 1,024 reports each waiting for its escrow to close, and a requester with 1,024
open escrows of its own kept every honest report answered ``busy`` and dropped (review
round 6, R6-6).

A coordinator has one slash of an offender in flight at a time, its amount reckoned from the
committed state: another report of the same offender is answered ``slash pending`` until
that slash lands or expires, and is then reckoned from what the first left. At most
``MAX_PER_REPORTER`` slashes of one reporter are in flight. Otherwise a requester reporting
its own 1-micro-credit sybils across its own escrows queued hundreds of slashes of which
all but the first per sybil were refused in a block, one a block, each dragging the
coordinator's later transactions out with it: an honest slash queued behind them landed
after the cheat's stake was released (review round 7, R7-1).

The reporting side sends a report again, backing off, while no coordinator has decided it
(``not closed``, ``slash pending``, ``busy``, unreachable), up to ``SEND_ATTEMPTS`` times."""

from __future__ import annotations

import dataclasses
import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

import ledger
import protocol
import scheduler
from protocol import Result

from ..net import NetworkError, PeerKey, RemoteError, RequestRejected

if TYPE_CHECKING:
    from ._node import Node

log = logging.getLogger(__name__)

REPORT_PROTOCOL = "/aimx/report/1"
#: Most signed Results one report carries (a slash's evidence bound).
MAX_EVIDENCE = 4
#: Largest report: its evidence (signed Results, each within a market message's 64 KiB)
#: and a little framing. It was 1 MiB, read whole from anyone (round 40, F1).
MAX_REPORT_REQUEST_BYTES = MAX_EVIDENCE * (64 << 10) + 1024
#: ``(job id, offender)`` pairs remembered as reported (here: sent; on a coordinator:
#: slashed), the oldest forgotten first. A forgotten pair reported again costs one refused
#: transaction at most (the ledger slashes a job's offender once).
REMEMBERED = 4_096
#: Slashes a coordinator has in flight at once (one per offender), and per reporter: past
#: either a report is answered ``busy`` (its reporter asks again later).
MAX_IN_FLIGHT = 1_024
MAX_PER_REPORTER = 16
#: Blocks after its submission past which a slash in flight is taken as lost (its
#: transaction's lifetime, specs/daemon.md, and two more).
FLIGHT_BLOCKS = 32
#: Blocks within which a slash lands when nothing is ahead of it in the coordinator's queue,
#: and slashes the queue lands a block at most (``ledger.MAX_AHEAD``).
LAND_WITHIN_BLOCKS = 4
SLASHES_PER_BLOCK = ledger.MAX_AHEAD


def _landing_within(in_flight: int) -> int:
    """Blocks within which a slash reported now lands, with ``in_flight`` slashes ahead of
    it: twice the blocks the queue needs for them (it carries other transactions too), at
    most ``FLIGHT_BLOCKS`` (past which its place is freed anyway)."""
    return min(FLIGHT_BLOCKS, LAND_WITHIN_BLOCKS + 2 * -(-in_flight // SLASHES_PER_BLOCK))


#: A slash smaller than ``slash_amount // MIN_SLASH_PART`` (10,000 micro-credits by
#: default) is not made: it takes a place in flight for next to nothing.
MIN_SLASH_PART = 100
#: Answers that decide a report: it is not sent again.
NOT_SLASHABLE = "not slashable: outputs of a TorchScript or GPU run"
DECIDED = frozenset(
    {
        "slashing",
        "already reported",
        "nothing staked",
        "too late: the escrow leaves the ledger",
        NOT_SLASHABLE,
    }
)
#: Times the reporting side sends one report, and its first and longest wait between them.
SEND_ATTEMPTS = 8
SEND_RETRY_S = (2.0, 60.0)


@dataclass(frozen=True, slots=True)
class _Flight:
    job_id: bytes
    reporter: PeerKey
    until: int


class Reports:
    """Serves reports on a coordinator; sends this node's reports to the coordinators."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self._reported: OrderedDict[tuple[bytes, bytes], None] = OrderedDict()
        #: Per offender, the one slash of it this coordinator has submitted and not yet seen
        #: land or expire (review round 7, R7-1).
        self._in_flight: dict[bytes, _Flight] = {}

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
        if not all(scheduler.slashable_class(r.determinism_class) for r in results):
            # runs not proven to agree: no slash on them (review rounds 76 and 77); asked
            # after the reporter's check, so a stranger's report is still counted
            return protocol.pack([NOT_SLASHABLE])
        if offender in escrow.slashed:
            return protocol.pack(["already reported"])
        if escrow.is_open:
            return protocol.pack(["not closed"])
        state = node.ledger.state
        self._sweep(state)
        flight = self._in_flight.get(offender)
        if flight is not None:
            # one slash of an offender at a time: the next is reckoned from the stake the
            # first leaves (the reporter asks again); the same job's is on its way
            return protocol.pack(["slashing" if flight.job_id == job_id else "slash pending"])
        if (
            len(self._in_flight) >= MAX_IN_FLIGHT
            or sum(f.reporter == peer for f in self._in_flight.values()) >= MAX_PER_REPORTER
        ):
            return protocol.pack(["busy"])
        if escrow.prune_height <= state.height + FLIGHT_BLOCKS:
            # its evidence would be refused once the escrow leaves the state
            return protocol.pack(["too late: the escrow leaves the ledger"])
        # what the offender will still hold when the slash lands, however long it waits
        # in flight: not what is released before then. Counted to 4 blocks whatever the
        # queue, offenders holding the floor in unbonding released while their slash waited
        # behind 1,024 made slashes that took nothing and freed their places (round 10,
        # R10-1); counted to 32 whatever the queue, a cheat that unstaked at its award
        # escaped a report 70 blocks later (R10-5)
        reach = state.height + _landing_within(len(self._in_flight))
        held = ledger.holding(state.account(offender), reach)
        amount = min(held, node.config.coordinator.slash_amount)
        if amount <= 0:
            return protocol.pack(["nothing staked"])
        if amount < max(1, node.config.coordinator.slash_amount // MIN_SLASH_PART):
            # a key staked 1 micro-credit is a newcomer's whatever it did; slashes of such
            # keys filled every place in flight and kept real cheats' reports out (R9-4)
            return protocol.pack(["nothing staked"])
        # the witnesses of our choice, reckoned as the offender is (round 29, K1, K2)
        evidence = ledger.strongest_witnesses(
            state, escrow, offender, evidence, results, released_after=reach
        )
        slash = ledger.Slash(offender, amount, "failed_verification", tuple(evidence))
        try:  # a refused slash would cost this coordinator a sequence gap to fill
            # the witnesses reckoned as the offender is: their unbonding released before
            # the slash can land made it a no-op holding the offender's place in flight,
            # and honest reports of it were answered "slash pending" (round 28, J1)
            bond = ledger.check_slash_evidence(state, slash, released_after=reach)
        except ledger.LedgerError as exc:
            if peer != node.me:
                node.conduct.misbehaved(peer, f"report the ledger refuses: {exc}")
            raise RequestRejected(f"report refused: {exc}") from None
        if bond is not None and bond < amount:
            # The ledger takes no more than each witness holds (round 26, H1), and a
            # majority holding a little framed a veteran bonded at exactly the probation
            # stake out of it for that little (round 27, I1): the witnesses must hold
            # the witness floor; the slash takes what they hold (a slash_amount above
            # the witnesses' stake dropped every honest slash: round 28, J2).
            floor = min(amount, node.config.coordinator.witness_floor)
            if bond < floor:
                return protocol.pack(["nothing staked"])
            slash = dataclasses.replace(slash, amount=bond)
        self._in_flight[offender] = _Flight(job_id, peer, state.height + FLIGHT_BLOCKS)
        node.submit_tx(slash)
        return protocol.pack(["slashing"])

    def _sweep(self, state: ledger.State) -> None:
        """Forget the slashes in flight that landed (the escrow shows the offender
        slashed) or whose transaction can no longer land (past ``until``). An escrow that
        left the state proves nothing: its slash stays in flight until ``until``, so that
        slashes refused in a block cannot free their places at once (R8-1)."""
        for offender, flight in list(self._in_flight.items()):
            escrow = state.escrow(flight.job_id)
            landed = escrow is not None and offender in escrow.slashed
            if landed or state.height > flight.until:
                del self._in_flight[offender]

    def report(self, offender: bytes, evidence: list[bytes]) -> None:
        """Report ``offender`` once per piece of evidence."""
        key = (offender, protocol.content_hash(b"".join(evidence)))
        if key in self._reported or not evidence:
            return
        _remember(self._reported, key)
        self._node.spawn(self._send, offender, evidence[:MAX_EVIDENCE])

    async def _send(self, offender: bytes, evidence: list[bytes]) -> None:
        """Send the report until a coordinator decides it (``DECIDED``) or refuses it."""
        data = protocol.pack([offender, "failed_verification", evidence])
        wait, longest = SEND_RETRY_S
        for _ in range(SEND_ATTEMPTS):
            answer = await self._send_once(data)
            if answer is None or answer in DECIDED:
                return
            log.info(
                "report of %s: %s; sent again in %g s", protocol.peer_id(offender), answer, wait
            )
            await trio.sleep(wait)
            wait = min(longest, 2 * wait)
        log.warning("report of %s not decided by any coordinator", protocol.peer_id(offender))

    async def _send_once(self, data: bytes) -> str | None:
        """The first coordinator's answer; ``None`` if one refused the report (the end of
        it); ``"unreachable"`` if none answered."""
        node = self._node
        if "coordinator" in node.roles:
            try:
                return _answer(await self.serve(node.me, data))
            except RequestRejected as exc:
                log.info("own report refused: %s", exc)
                return None
        for coordinator in node.genesis.coordinators:
            try:
                response = await node.net.request(coordinator, REPORT_PROTOCOL, data, timeout=10)
            except RemoteError as exc:
                log.info("report refused by %s: %s", protocol.peer_id(coordinator), exc)
                return None
            except NetworkError as exc:
                log.info("report to %s failed: %s", protocol.peer_id(coordinator), exc)
                continue
            return _answer(response)
        return "unreachable"


def _answer(response: bytes) -> str:
    """A coordinator's answer's text (anything unexpected reads as undecided)."""
    try:
        value = protocol.unpack(response)
    except protocol.ProtocolError:
        return "unreadable answer"
    if type(value) is list and len(value) == 1 and type(value[0]) is str:
        return value[0][:100]
    return "unreadable answer"


def _remember(seen: OrderedDict[tuple[bytes, bytes], None], key: tuple[bytes, bytes]) -> None:
    seen[key] = None
    while len(seen) > REMEMBERED:
        seen.popitem(last=False)
