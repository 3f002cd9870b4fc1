"""A hostile peer: everything a stranger can send a daemon, from a fixed seed.

:class:`HostilePeer` sits on a :class:`node.net.Network` of its own (``MemoryHub.open`` in
tests) and sends *shots*: a request on one of the daemon's protocols, or a message on one
of its topics. A shot's bytes are one of

- random bytes;
- random msgpack (nested arrays, maps, integers at their edges, strings, binaries);
- a validly signed message (signed with the peer's own key, for the right or a wrong
  chain) of every type the daemon takes, with one field pushed to an edge of its range or
  past it: 0, the maximum, one over, negative, far past and far future times, huge lists;
- a replay of a message it saw on a topic (another peer's, signed by that peer), on the
  topic again or inside a request.

Everything is drawn from ``random.Random(seed)``: the same seed sends the same shots (up
to the replays, which depend on what was seen). :meth:`HostilePeer.attack` sends a number
of shots, many at once, to a set of target peers and returns a :class:`HostileReport`.
"""

from __future__ import annotations

import random
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
import nacl.bindings
import nacl.signing
import trio

import ledger
import protocol
from protocol import Bin, ListOf, Message, Nested, Text, UInt
from protocol._examples import example_messages

from ..daemon.content import CONTENT_PROTOCOL
from ..daemon.genesis import GENESIS_PROTOCOL
from ..daemon.market import MARKET_PROTOCOL
from ..daemon.reports import REPORT_PROTOCOL
from ..ledger import blocks_topic
from ..ledger._service import BLOCKS_PROTOCOL, DROPPED_PROTOCOL, TX_PROTOCOL
from ..net import MAX_PUBSUB_BYTES, Network, NetworkError, PeerKey, job_topic

__all__ = ["HostilePeer", "HostileReport", "Shot", "daemon_protocols", "daemon_topics"]

_U64 = (1 << 64) - 1
#: Messages kept for replays.
_KEEP_SEEN = 256
#: Largest list a shot puts in a field (past any ListOf limit, short of a huge frame).
_HUGE_LIST = 2_000


def daemon_protocols() -> tuple[str, ...]:
    """Every request protocol a daemon serves."""
    return (
        MARKET_PROTOCOL,
        CONTENT_PROTOCOL,
        GENESIS_PROTOCOL,
        REPORT_PROTOCOL,
        BLOCKS_PROTOCOL,
        TX_PROTOCOL,
        DROPPED_PROTOCOL,
    )


def daemon_topics(chain_id: str, capability_classes: Sequence[str]) -> tuple[str, ...]:
    """Every topic a daemon listens on: the ledger's blocks and the job classes'."""
    return (blocks_topic(chain_id), *(job_topic(chain_id, c) for c in capability_classes))


@dataclass(frozen=True, slots=True)
class Shot:
    """One thing sent: a request on ``protocol_id`` or a message on ``topic``."""

    kind: str
    data: bytes
    protocol_id: str | None = None
    topic: str | None = None


@dataclass(slots=True)
class HostileReport:
    """What an attack sent and how the targets took it."""

    sent: int = 0
    requests: int = 0
    published: int = 0
    #: Requests answered (with a response or an error answer), and those that failed
    #: otherwise (timeout, refused, unreachable: a ban among them).
    answered: int = 0
    failed: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)


class HostilePeer:
    """A peer that sends hostile shots (see the module's docstring).

    ``now_ms`` is the clock the edge times are drawn around (the daemons' clock).
    """

    def __init__(
        self,
        net: Network,
        key: nacl.signing.SigningKey,
        chain_id: str,
        *,
        seed: int,
        capability_classes: Sequence[str] = (),
        now_ms: Callable[[], int] | None = None,
    ) -> None:
        self.net = net
        self.key = key
        self.me = bytes(key.verify_key)
        self.chain_id = chain_id
        self.rng = random.Random(seed)
        self.protocols = daemon_protocols()
        self.topics = daemon_topics(chain_id, capability_classes)
        self._now_ms = now_ms or (lambda: int(trio.current_time() * 1000))
        self.seen: deque[tuple[str, bytes]] = deque(maxlen=_KEEP_SEEN)
        self._templates = [*example_messages(), _example_block(self.me)]

    # --- watching ------------------------------------------------------------------------

    async def watch(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the last messages of every topic, for replays (run it in a nursery)."""
        async with trio.open_nursery() as nursery:
            for topic in self.topics:
                nursery.start_soon(self._watch, topic)
            task_status.started()

    async def _watch(self, topic: str) -> None:
        async with self.net.subscribe(topic) as inbox:
            async for msg in inbox:
                self.seen.append((topic, msg.data))

    # --- attacking -----------------------------------------------------------------------

    async def attack(
        self,
        targets: Sequence[PeerKey],
        count: int,
        *,
        concurrency: int = 32,
        timeout: float = 2.0,
        report: HostileReport | None = None,
    ) -> HostileReport:
        """Send ``count`` shots, requests to targets drawn in turn, ``concurrency`` at once.
        Counts go to ``report`` if given (so that they survive a cancelled attack)."""
        report = HostileReport() if report is None else report
        limit = trio.Semaphore(concurrency)
        shots = self.shots()
        async with trio.open_nursery() as nursery:
            for i in range(count):
                shot = next(shots)
                report.sent += 1
                report.by_kind[shot.kind] += 1
                if shot.topic is not None:
                    report.published += 1
                    try:
                        await self.net.publish(shot.topic, shot.data)
                    except NetworkError:
                        report.failed += 1
                    continue
                assert shot.protocol_id is not None
                report.requests += 1
                await limit.acquire()
                target = targets[i % len(targets)]
                nursery.start_soon(self._request, target, shot, timeout, limit, report)
        return report

    async def _request(
        self,
        target: PeerKey,
        shot: Shot,
        timeout: float,
        limit: trio.Semaphore,
        report: HostileReport,
    ) -> None:
        try:
            assert shot.protocol_id is not None
            await self.net.request(target, shot.protocol_id, shot.data, timeout=timeout)
            report.answered += 1
        except NetworkError as exc:
            if type(exc).__name__ in ("RemoteError", "ProtocolNotSupported", "MessageTooLarge"):
                report.answered += 1
            else:
                report.failed += 1
        finally:
            limit.release()

    # --- what is sent --------------------------------------------------------------------

    def shots(self) -> Iterator[Shot]:
        """An endless stream of shots, drawn from the seed."""
        makers: list[Callable[[], Shot]] = [
            self._random_bytes,
            self._random_msgpack,
            self._signed,
            self._signed,
            self._signed,
            self._framed,
            self._replay,
        ]
        while True:
            yield self.rng.choice(makers)()

    def _where(self, data: bytes, kind: str, *, topic_share: float = 0.3) -> Shot:
        if self.topics and self.rng.random() < topic_share and len(data) <= MAX_PUBSUB_BYTES:
            return Shot(kind, data, topic=self.rng.choice(self.topics))
        return Shot(kind, data, protocol_id=self.rng.choice(self.protocols))

    def _random_bytes(self) -> Shot:
        size = self.rng.choice((0, 1, 2, 8, 33, 200, 4096))
        return self._where(self.rng.randbytes(size), "random_bytes")

    def _random_msgpack(self) -> Shot:
        return self._where(_pack(self._value(3)), "random_msgpack")

    def _value(self, depth: int) -> Any:
        rng = self.rng
        pick = rng.randrange(9 if depth > 0 else 6)
        if pick == 0:
            return rng.choice((0, 1, -1, 255, 256, _U64, -(1 << 63), (1 << 63) - 1, (1 << 32)))
        if pick == 1:
            return rng.randbytes(rng.choice((0, 1, 32, 64, 300)))
        if pick == 2:
            return rng.choice(("", "x", "aimx/jobspec/1", "\u0000", "é" * 50, self.chain_id))
        if pick == 3:
            return rng.choice((None, True, False, 1.5))
        if pick == 4:
            return self._now_ms() + rng.choice((-(10**12), -1, 0, 1, 10**12))
        if pick == 5:
            return self.me
        if pick == 6:
            return [self._value(depth - 1) for _ in range(rng.choice((0, 1, 2, 3, 5)))]
        if pick == 7:
            return {str(i): self._value(depth - 1) for i in range(rng.choice((0, 1, 2)))}
        return [rng.randrange(1 << 16), self._value(depth - 1)]

    def _signed(self) -> Shot:
        raw = self.signed_message()
        return self._framed_raw(raw, "signed")

    def signed_message(self) -> bytes:
        """A signed message of a random type, signed by this peer (for its chain, mostly),
        with one field at an edge of its range or past it."""
        rng = self.rng
        template: Message = rng.choice(self._templates)
        wire = _with_signer(template, self.me)
        specs = type(template).specs()
        if rng.random() < 0.9:
            index = rng.randrange(len(specs))
            name, spec = specs[index]
            wire[index] = self._edge(name, spec, wire[index])
        chain = self.chain_id if rng.random() < 0.9 else rng.choice(("", "aimx-other", "x" * 65))
        return _sign_raw(template.TAG, chain, wire, self.key)

    def _edge(self, name: str, spec: Any, value: Any) -> Any:
        rng = self.rng
        now = self._now_ms()
        if isinstance(spec, UInt):
            edges: list[Any] = [0, 1, spec.max, spec.max + 1, -1, _U64, spec.min, spec.min - 1]
            if name.endswith("_ms"):
                edges += [now, now - 10**12, now + 10**12, now + 86_400_000 * 30]
            # msgpack carries -2^63 .. 2^64-1
            return rng.choice([e for e in edges if -(1 << 63) <= e <= _U64])
        if isinstance(spec, Bin):
            size = spec.size or spec.max or 32
            return rng.choice(
                (b"", bytes(size), rng.randbytes(size), b"\xff" * min(size + 1, 1 << 17))
            )
        if isinstance(spec, Text):
            texts = ["", "x" * spec.max, "x" * (spec.max + 1), "\u0000", *spec.choices]
            return rng.choice(texts)
        if isinstance(spec, ListOf):
            item = value[0] if isinstance(value, list) and value else self._value(1)
            return rng.choice(([], [item] * spec.max, [item] * min(spec.max + 1, _HUGE_LIST)))
        if isinstance(spec, Nested):
            return rng.choice((value, [], self._value(2)))
        return self._value(2)

    def _framed(self) -> Shot:
        """Random or signed contents inside a well-formed frame of one of the protocols."""
        raw = self.signed_message() if self.rng.random() < 0.5 else self.rng.randbytes(40)
        return self._framed_raw(raw, "framed")

    def _framed_raw(self, raw: bytes, kind: str) -> Shot:
        rng = self.rng
        pick = rng.randrange(8)
        if pick == 0:
            sealed = rng.choice((b"", rng.randbytes(80)))
            return Shot(kind, _pack([raw, sealed]), protocol_id=MARKET_PROTOCOL)
        if pick == 1 and self.topics:
            topic = rng.choice(self.topics)
            if topic.endswith("/ledger/blocks"):
                height = rng.choice((0, 1, 2, 10**6, _U64, -1))
                return Shot(kind, _pack([height, raw]), topic=topic)
            return Shot(kind, raw, topic=topic)
        if pick == 2:
            return Shot(kind, raw, protocol_id=TX_PROTOCOL)
        if pick == 3:
            offender = rng.choice((self.me, bytes(32), rng.randbytes(32)))
            return Shot(
                kind,
                _pack([offender, "wrong", [raw] * rng.choice((1, 4, 50))]),
                protocol_id=REPORT_PROTOCOL,
            )
        if pick == 4:
            start, limit = rng.choice((0, 1, _U64, -1)), rng.choice((0, 1, 256, 10**9))
            return Shot(kind, _pack([start, limit]), protocol_id=BLOCKS_PROTOCOL)
        if pick == 5:
            drops = [[rng.randbytes(32), rng.choice((0, _U64)), "x"]] * rng.choice((1, 256, 257))
            return Shot(kind, _pack(drops), protocol_id=DROPPED_PROTOCOL)
        if pick == 6:
            return Shot(
                kind, _pack([rng.randbytes(32), rng.randbytes(32)]), protocol_id=CONTENT_PROTOCOL
            )
        return Shot(kind, _pack([raw, b""]), protocol_id=MARKET_PROTOCOL)

    def _replay(self) -> Shot:
        """A message seen on a topic: on the topic again, or inside a market request."""
        if not self.seen:
            return self._signed()
        topic, data = self.rng.choice(self.seen)
        if self.rng.random() < 0.5:
            return Shot("replay", data, topic=topic)
        inner = data
        if topic.endswith("/ledger/blocks"):
            try:
                value = protocol.unpack(data, max_bytes=MAX_PUBSUB_BYTES)
                inner = value[1] if type(value) is list and len(value) == 2 else data
            except protocol.ProtocolError:
                inner = data
        return self._framed_raw(inner if type(inner) is bytes else data, "replay")


def _pack(value: Any) -> bytes:
    return bytes(msgpack.packb(value, use_bin_type=True))


def _with_signer(message: Message, signer: bytes) -> list[Any]:
    """``message``'s wire value with its signer field set to ``signer``."""
    wire = message.wire()
    name = message.SIGNER_FIELD
    if name is not None:
        index = [n for n, _ in type(message).specs()].index(name)
        wire[index] = signer
    return wire


def _sign_raw(tag: str, chain_id: str, wire: list[Any], key: nacl.signing.SigningKey) -> bytes:
    """A signed envelope over any wire value (valid or not), as ``protocol.sign`` lays it
    out: ``[tag, chain, message, signer, signature]``."""
    signer = bytes(key.verify_key)
    body = _pack([tag, chain_id, wire])
    signature = nacl.bindings.crypto_sign(body, bytes(key) + signer)[:64]
    return b"\x95" + body[1:] + _pack(signer) + _pack(signature)


def _example_block(producer: bytes) -> Message:
    return ledger.Block(
        height=1, prev_hash=bytes(32), producer=producer, state_root=bytes(32), txs=()
    )
