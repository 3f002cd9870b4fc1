"""The market protocol (``/aimx/market/2``) and the job topics: where job announcements,
bids, awards, heartbeats, results and receipts from peers enter the daemon.

A market request is ``[message, sealed]``: one signed marketplace message and, with a
Result, its output sealed to the requester. The messages for the sender that the machines
produce while handling it go back in the response (``[message, ...]``), one round trip
less; everything else goes out as requests of its own. specs/daemon.md has the rules.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import protocol
import scheduler
from protocol import Award, JobSpec, Result

from ..net import (
    MAX_FRAME_BYTES,
    NetworkError,
    PeerKey,
    PeerUnreachable,
    RequestRejected,
    job_topic,
)
from ._effects import Machine

if TYPE_CHECKING:
    from ._node import Node

log = logging.getLogger(__name__)

MARKET_PROTOCOL = "/aimx/market/2"
#: At most this many messages answer one market request, of at most this many bytes in all.
MAX_REPLIES = 16
MAX_REPLY_BYTES = 1 << 20
#: Largest market request (the limit ``/aimx/market/2`` is mounted with): a Result with
#: its sealed output, as large as the network's hard frame limit allows.
MAX_MARKET_REQUEST_BYTES = MAX_FRAME_BYTES
#: Largest output (the outputs' encoded bytes, specs/daemon.md "Content") the market
#: delivers: what fits in one market request with the Result, the frame's headers and the
#: two seals' overhead (a signed Result is a few KiB at most). A provider whose run gives
#: more sends a failed Result (``output_limit``) instead, so that the requester learns at
#: once; a larger one could never reach it.
MAX_MARKET_OUTPUT_BYTES = MAX_MARKET_REQUEST_BYTES - (64 << 10)
#: Largest signed message a market request or answer carries. The largest there is a
#: JobSpec with 64 inputs (under 16 KiB; a Result is a few KiB): a frame's message over
#: this is refused before it is decoded, so a frame's cost to decode is that of 64 KiB.
MAX_MARKET_MESSAGE_BYTES = 64 << 10

#: Largest market request from a peer holding no award of ours (every node but a
#: requester's providers): a signed message, no output, and the frame's headers.
MAX_MARKET_SMALL_REQUEST_BYTES = MAX_MARKET_MESSAGE_BYTES + 1024

#: Requests of our own in flight, in two budgets, so that one cannot starve the other:
#: *answers* to announcements (Bid, NoBid), which any peer's announcement causes to a key
#: it names, and messages about *work in hand* (an Award, a Heartbeat, a Result, a
#: Receipt, an Unseal), which only a party to a job of ours causes. Unbounded, one peer's
#: announcements from fresh keys kept thousands of answers in flight, each (over libp2p) a
#: DHT lookup and two relay streams at the coordinators (review round 63, G1); in one
#: shared budget, eight silent keys named by announcements filled it, and the
#: contributor dropped the Heartbeats and Results of the work it ran (round 65, H1).
#: Past a bound the message is dropped (each is best effort: a requester announces
#: again, a provider resends its Result).
MAX_ANSWERS = 512
#: A provider answers a batch of one requester's announcements with up to its open-bid
#: capacity of Bids at once (4 by default, ``max_concurrency × overbook``): at 4, a
#: batch of 12 lost 8 of them (round 66, I3).
MAX_ANSWERS_PER_PEER = 16
MAX_WORK_SENDS = 256
MAX_WORK_SENDS_PER_PEER = 64
#: A provider's resends of a Result and its sealed bytes (no Receipt came yet), in a budget
#: of their own: a requester that never receipts had them hold every place of the work
#: budget, and the Heartbeats of honest work were dropped (review round 71, F1). An
#: honest resend is rare (the first send was lost).
MAX_RESENDS = 32
MAX_RESENDS_PER_PEER = 4
#: Answers to peers we are not connected to (each a DHT lookup and relay dials), in all
#: and to one peer; a NoBid never dials.
MAX_DIALING_ANSWERS = 16
MAX_DIALING_ANSWERS_PER_PEER = 8
#: An answer to a peer we are connected to is waited for this long (a Bid later than
#: its bid window is worth nothing); one that dials, and a message about work in hand,
#: this long (a lookup and a dial may take 5 s each: at 3 s, an honest requester slow
#: to reach got none of our Bids, round 66, I2).
ANSWER_TIMEOUT_S = 3.0
WORK_TIMEOUT_S = 10.0
#: A peer that an answer of ours could not reach (unreachable: not a timeout, which a
#: slow dial gives too) gets no answer that would dial it for this long (the most
#: remembered: ``MAX_UNREACHABLE``).
UNREACHABLE_MS = 60_000
MAX_UNREACHABLE = 4096


@dataclasses.dataclass
class _Slots:
    """Requests in flight, in all and by peer, under a bound of each."""

    total: int
    per_peer: int
    count: int = 0
    by_peer: dict[PeerKey, int] = dataclasses.field(default_factory=dict)

    def take(self, peer: PeerKey) -> bool:
        held = self.by_peer.get(peer, 0)
        if self.count >= self.total or held >= self.per_peer:
            return False
        self.count += 1
        self.by_peer[peer] = held + 1
        return True

    def give(self, peer: PeerKey) -> None:
        self.count -= 1
        left = self.by_peer.get(peer, 0) - 1
        if left > 0:
            self.by_peer[peer] = left
        else:
            self.by_peer.pop(peer, None)


_PROVIDER_TAGS = frozenset({JobSpec.TAG, Award.TAG, protocol.Receipt.TAG})
_REQUESTER_TAGS = frozenset(
    {protocol.Bid.TAG, protocol.NoBid.TAG, protocol.Heartbeat.TAG, Result.TAG, protocol.Unseal.TAG}
)


def split_frame(request: bytes) -> tuple[bytes, bytes]:
    """A market request's ``[message, sealed]``, checked canonical: a sealed output may be
    over the 1 MiB a byte string of a signed message holds, so up to the market's limit.

    Read by hand from the two byte strings' headers, never by a general decoder: a frame
    of 4 MiB of nested arrays costs nothing but the look at its first bytes, and the
    message is refused over ``MAX_MARKET_MESSAGE_BYTES`` before it is decoded."""
    if len(request) > MAX_MARKET_REQUEST_BYTES:
        raise protocol.RemoteProtocolError(
            f"market request of {len(request)} bytes is over {MAX_MARKET_REQUEST_BYTES}"
        )
    if request[:1] != b"\x92":
        raise protocol.RemoteProtocolError("expected [message, sealed]")
    start, end = _bin_at(request, 1, MAX_MARKET_MESSAGE_BYTES, "message")
    sealed_start, sealed_end = _bin_at(request, end, MAX_MARKET_REQUEST_BYTES, "sealed")
    if sealed_end != len(request):
        raise protocol.RemoteProtocolError("trailing bytes after [message, sealed]")
    return request[start:end], request[sealed_start:sealed_end]


def split_replies(data: bytes) -> list[bytes]:
    """A market answer's ``[message, ...]``: at most ``MAX_REPLIES`` byte strings of at
    most ``MAX_MARKET_MESSAGE_BYTES`` each, read by hand as :func:`split_frame` is."""
    if len(data) > MAX_REPLY_BYTES:
        raise protocol.RemoteProtocolError(
            f"replies of {len(data)} bytes are over {MAX_REPLY_BYTES}"
        )
    head = data[:1]
    if b"\x90" <= head <= b"\x9f":
        count, at = head[0] & 0x0F, 1
    elif head == b"\xdc" and len(data) >= 3 and int.from_bytes(data[1:3], "big") >= 16:
        count, at = int.from_bytes(data[1:3], "big"), 3  # array 16 only where fixarray cannot
    else:
        raise protocol.RemoteProtocolError("replies are a canonical array of signed messages")
    if count > MAX_REPLIES:
        raise protocol.RemoteProtocolError(f"expected at most {MAX_REPLIES} replies")
    out: list[bytes] = []
    for _ in range(count):
        start, at = _bin_at(data, at, MAX_MARKET_MESSAGE_BYTES, "reply")
        out.append(data[start:at])
    if at != len(data):
        raise protocol.RemoteProtocolError("trailing bytes after the replies")
    return out


# A canonical byte string's header: its first byte, the bytes of its length, and the
# least length for which that form is the shortest (msgpack's bin 8, bin 16, bin 32).
_BIN_HEADERS = {0xC4: (1, 0), 0xC5: (2, 1 << 8), 0xC6: (4, 1 << 16)}


def _bin_at(data: bytes, at: int, limit: int, what: str) -> tuple[int, int]:
    """Where the bytes of the canonical byte string whose header is at ``data[at]`` start
    and end; refused over ``limit`` bytes, before anything is copied."""
    form = _BIN_HEADERS.get(data[at]) if at < len(data) else None
    if form is None:
        raise protocol.RemoteProtocolError(f"expected the {what} as a byte string")
    width, least = form
    start = at + 1 + width
    size = int.from_bytes(data[at + 1 : start], "big")
    if start > len(data) or start + size > len(data):
        raise protocol.RemoteProtocolError(f"the {what} is cut short")
    if size < least:
        raise protocol.RemoteProtocolError(f"the {what}'s length is not in its shortest form")
    if size > limit:
        raise protocol.RemoteProtocolError(f"the {what} of {size} bytes is over {limit}")
    return start, start + size


class Market:
    """Serves the market protocol and the job topics; sends the machines' messages."""

    def __init__(self, node: Node) -> None:
        self._node = node
        #: While a market request is handled: its sender, and the messages for it that the
        #: machines produce meanwhile, which go back in the response.
        self._replying: tuple[PeerKey, list[bytes]] | None = None
        #: Requests of our own in flight: answers to announcements (those dialing a peer
        #: we were not connected to apart too) and messages about work in hand.
        self._answers = _Slots(MAX_ANSWERS, MAX_ANSWERS_PER_PEER)
        self._dialing = _Slots(MAX_DIALING_ANSWERS, MAX_DIALING_ANSWERS_PER_PEER)
        self._work = _Slots(MAX_WORK_SENDS, MAX_WORK_SENDS_PER_PEER)
        self._resends = _Slots(MAX_RESENDS, MAX_RESENDS_PER_PEER)
        #: Peers an answer of ours could not reach, until when no answer dials them.
        self._unreachable: dict[PeerKey, int] = {}

    # --- bytes from peers ----------------------------------------------------------------

    async def serve(self, peer: PeerKey, request: bytes) -> bytes:
        """Take one market message; answer with the messages for ``peer`` it caused
        (``[message, ...]``), or nothing."""
        try:
            raw, sealed = split_frame(request)
        except protocol.ProtocolError as exc:
            self._node.conduct.misbehaved(peer, f"malformed market frame: {exc}")
            raise RequestRejected(f"malformed market frame: {exc}") from None
        replies: list[bytes] = []
        self._replying = (peer, replies)
        try:
            self._dispatch(peer, raw, sealed)
        finally:
            self._replying = None
        # Replies are short signed messages, so the bounds the sender accepts are not
        # expected to bind; whatever would exceed them goes as requests of its own.
        kept, size = 0, 0
        for raw_reply in replies:
            size += len(raw_reply) + 16
            if kept == MAX_REPLIES or size > MAX_REPLY_BYTES:
                break
            kept += 1
        for extra in replies[kept:]:  # answers or not, they are about work with ``peer``
            self._spawn_send(peer, extra, b"", answer=False, dial=True)
        del replies[kept:]
        return protocol.pack(replies) if replies else b""

    async def listen_jobs(self, inbox: Any) -> None:
        """Job announcements on a capability class's topic."""
        node = self._node
        async with inbox:
            async for msg in inbox:
                provider = node.provider
                if provider is not None:
                    node.metrics.messages.labels("announce").inc()
                    # the chain's head as our ledger last heard it (we may be catching up)
                    provider.note_head(node.ledger.replica.best_source_head())
                    call = functools.partial(provider.receive, msg.data, node.now_ms())
                    self.feed("provider", msg.sender, call)

    def _take_replies(self, peer: PeerKey, data: bytes) -> None:
        """The messages a peer answered a market request with, taken as if it had sent
        each on its own (messages of ours they cause go out as requests of their own)."""
        try:
            value = split_replies(data)
        except protocol.ProtocolError as exc:
            self._node.conduct.misbehaved(peer, f"malformed market replies: {exc}")
            return
        for raw in value:
            with contextlib.suppress(RequestRejected):
                self._dispatch(peer, raw, b"")

    def _dispatch(self, peer: PeerKey, raw: bytes, sealed: bytes) -> None:
        """Hand a market message to the machine that takes it (RequestRejected if none)."""
        node = self._node
        try:
            inner = protocol.unpack(raw, max_bytes=MAX_MARKET_MESSAGE_BYTES, check_types=False)
            # a tag is text: anything else (a list, unhashable) is no message we take
            tag = inner[0] if type(inner) is list and inner and type(inner[0]) is str else None
        except protocol.ProtocolError as exc:
            node.conduct.misbehaved(peer, f"malformed market frame: {exc}")
            raise RequestRejected(f"malformed market frame: {exc}") from None
        now = node.now_ms()
        provider, requester = node.provider, node.requester
        if tag in _PROVIDER_TAGS and provider is not None:
            node.metrics.messages.labels(str(tag)).inc()
            provider.note_head(node.ledger.replica.best_source_head())
            self.feed("provider", peer, lambda: provider.receive(raw, now))
        elif tag in _REQUESTER_TAGS and requester is not None:
            node.metrics.messages.labels(str(tag)).inc()
            output = self._open_output(requester, raw, sealed) if tag == Result.TAG else None
            self.feed("requester", peer, lambda: requester.receive(raw, now, output=output))
        else:
            if tag not in _PROVIDER_TAGS and tag not in _REQUESTER_TAGS:
                node.conduct.misbehaved(peer, f"message {tag!r} this node does not take")
            # A market message for a role this node does not have is refused, not counted:
            # a node restarted without the contributor role keeps its advert on the DHT for
            # up to an hour, and an honest requester announcing to it was banned (review
            # round 78, R78-1); a requester's providers, the same with its Heartbeats.
            raise RequestRejected(f"this node does not take {tag!r} messages")

    def feed(
        self, machine: Machine, peer: PeerKey | None, call: Callable[[], list[scheduler.Effect]]
    ) -> None:
        """Hand a peer's message to a machine and carry out the effects. The machines
        refuse bad input with a ``Misbehaved`` effect, counted against ``peer`` (the
        transport's sender); an exception they raise anyway is a bug of ours that peer data
        found: logged as a driver error and counted against the peer, never raised into the
        node's nursery."""
        try:
            effects = call()
        except Exception as exc:  # the trust boundary: peer data must not end the node
            log.exception("the %s machine failed on a message from a peer", machine)
            self._node.conduct.misbehaved(peer, f"its message made the {machine} fail: {exc!r}")
            return
        if peer is not None:
            # Misbehaviour is the sending peer's, whoever signed the message: a peer that
            # forwards another's signed Award or Receipt (or republishes its JobSpec) is
            # counted itself, and can never get the signer banned.
            effects = [
                dataclasses.replace(e, peer=peer) if isinstance(e, scheduler.Misbehaved) else e
                for e in effects
            ]
        self._node.effects.execute(machine, effects)

    def _open_output(
        self, requester: scheduler.Requester, raw: bytes, sealed: bytes
    ) -> bytes | None:
        """The output bytes sent with a Result: ``None`` when none came (the result's
        commitment goes first) or the requester would not take them (a job or replica
        not awaiting them: not worth a decryption), ``b""`` when they cannot be opened
        (which the requester counts as bytes that do not match the result)."""
        if not sealed:
            return None
        try:
            result: Result = protocol.decode(raw, self._node.chain_id, Result).message
            if not requester.expects_output(result.job_id, result.provider, result.replica):
                return None
            return scheduler.open_sealed(self._node.key, sealed, result.output_hash)
        except (protocol.ProtocolError, scheduler.SchedulerError, ValueError):
            return b""

    # --- messages to peers ---------------------------------------------------------------

    def may_send_large(self, peer: PeerKey) -> bool:
        """Whether ``peer`` may send a market request over
        ``MAX_MARKET_SMALL_REQUEST_BYTES``: a provider holding an award of a job of ours
        that is open (its Result with the output). Any other peer's was up to 4 MiB held
        whole before a look at it (4 keys took a contributor to 1.2 GB: round 40, F1)."""
        requester = self._node.requester
        return requester is not None and requester.awarded_to(peer)

    @property
    def sending(self) -> int:
        """Requests of our own in flight (a stopping node waits, bounded, for them)."""
        return self._answers.count + self._work.count + self._resends.count

    def send(self, peer: PeerKey, raw: bytes, *, answer: bool = False, dial: bool = True) -> None:
        """Send a signed message: in the response to ``peer``'s request being handled, if
        any, else as a request of its own within its budget (``MAX_ANSWERS``): ``answer``,
        a Bid or NoBid answering an announcement; ``dial`` False, only to a peer we are
        connected to (a NoBid is worth no lookup)."""
        if self._replying is not None and self._replying[0] == peer:
            self._replying[1].append(raw)
        else:
            self._spawn_send(peer, raw, b"", answer=answer, dial=dial)

    def deliver(self, peer: PeerKey, result: bytes, output: bytes, *, resend: bool = False) -> None:
        """Send a Result with its output sealed to the requester (``resend``: again, within
        the resends' own budget)."""
        if resend and not self._resends.take(peer):
            self._node.metrics.sends_dropped.inc()
            return
        sealed = scheduler.seal(peer, output) if output else b""
        self._spawn_send(peer, result, sealed, answer=False, dial=True, resend=resend)

    def _spawn_send(
        self,
        peer: PeerKey,
        raw: bytes,
        sealed: bytes,
        *,
        answer: bool,
        dial: bool,
        resend: bool = False,
    ) -> None:
        node = self._node
        dialing = False
        if answer and peer != node.me and peer not in node.net.connected_peers():
            until = self._unreachable.get(peer)
            if until is not None and until <= node.now_ms():
                del self._unreachable[peer]
                until = None
            if not dial or until is not None or not self._dialing.take(peer):
                node.metrics.sends_dropped.inc()
                return
            dialing = True
        slots = self._answers if answer else self._resends if resend else self._work
        if not resend and not slots.take(peer):  # (a resend's place is taken: ``deliver``)
            if dialing:
                self._dialing.give(peer)
            node.metrics.sends_dropped.inc()
            return
        node.spawn(self._send, peer, raw, sealed, slots, dialing)

    def _failed(self, peer: PeerKey, exc: NetworkError, *, mark: bool) -> None:
        """A send that did not go through. A peer an answer that dialed it could not
        reach gets no answer of ours that would dial it for ``UNREACHABLE_MS`` (logged
        once then)."""
        node = self._node
        if not mark or not isinstance(exc, PeerUnreachable) or peer in node.net.connected_peers():
            log.info("send to %s failed: %s", protocol.peer_id(peer), exc)
            return
        if peer not in self._unreachable:
            log.info(
                "send to %s failed: %s (no sends to it for a while)", protocol.peer_id(peer), exc
            )
        self._unreachable.pop(peer, None)
        self._unreachable[peer] = node.now_ms() + UNREACHABLE_MS
        while len(self._unreachable) > MAX_UNREACHABLE:
            del self._unreachable[next(iter(self._unreachable))]

    async def publish(self, capability_class: str, raw: bytes) -> None:
        """Announce on a capability class's topic (and to ourselves, when we serve it)."""
        node = self._node
        try:
            await node.net.publish(job_topic(node.chain_id, capability_class), raw)
        except NetworkError as exc:
            node.metrics.sends_failed.inc()
            log.info("publishing on %s failed: %s", capability_class, exc)
        provider = node.provider
        if provider is not None and capability_class in provider.config.capability_classes:
            now = node.now_ms()
            self.feed("provider", node.me, lambda: provider.receive(raw, now))

    async def _send(
        self, peer: PeerKey, raw: bytes, sealed: bytes, slots: _Slots, dialing: bool
    ) -> None:
        node = self._node
        request = protocol.pack([raw, sealed])
        answer = slots is self._answers
        try:
            if peer == node.me:  # a node may be both requester and provider of one job
                replies = await self.serve(node.me, request)
            else:
                try:
                    replies = await node.net.request(
                        peer,
                        MARKET_PROTOCOL,
                        request,
                        timeout=ANSWER_TIMEOUT_S if answer and not dialing else WORK_TIMEOUT_S,
                        max_response_bytes=MAX_REPLY_BYTES,  # no valid answer is larger
                    )
                except NetworkError as exc:
                    node.metrics.sends_failed.inc()
                    self._failed(peer, exc, mark=dialing)
                    return
        finally:
            slots.give(peer)
            if dialing:
                self._dialing.give(peer)
        if replies:
            self._take_replies(peer, replies)
