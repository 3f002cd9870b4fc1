"""Replication: a replica fetches blocks from its height on and re-validates each.

Events: ``on_blocks(peer, blocks)`` (a batch a peer sent, in height order, or one
announced block), ``on_head(peer, height)`` (a source says it has blocks up to ``height``)
and ``tick(now_ms)``. Effects: :class:`FetchBlocks`, :class:`Commit` (persist the new
state), :class:`ProofFound` and :class:`PeerMisbehaved`.

A bad block (forged signature, not a coordinator, wrong link, invalid transaction, wrong
state root) is rejected whole, the state stays as it was and the sender is reported. A
second validly signed block at a height we already hold is an equivocation: the proof
(both blocks) is kept, and our chain stays on the block we applied first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from ._apply import apply_block, decode_block
from ._block import EquivocationProof
from ._effects import Commit, Effect, FetchBlocks, PeerMisbehaved, ProofFound, SetTimer
from ._errors import BlockRejected
from ._state import State

#: Most peers whose reported head a replica remembers (sources are always kept).
MAX_HEADS_KEPT = 4096
#: Equivocation proofs kept (one a height): the first ones prove the fault.
MAX_PROOFS = 64


class Replica:
    """Keeps a state in step with the chain served by peers."""

    def __init__(
        self,
        state: State,
        *,
        batch: int = 64,
        sync_interval_ms: int = 1000,
        recent: dict[int, bytes] | None = None,
        keep_recent: int = 4096,
    ) -> None:
        self.state = state
        self.batch = batch
        self.sync_interval_ms = sync_interval_ms
        self.keep_recent = keep_recent
        #: Raw blocks we applied, by height (recent ones), to build equivocation proofs.
        self.recent: OrderedDict[int, bytes] = OrderedDict(sorted((recent or {}).items()))
        self.proofs: list[EquivocationProof] = []
        self.sources: list[bytes] = []
        self._next_source = 0
        self._next_sync_ms: int | None = None
        #: Our height at the last poll: a replica that advanced since needs no poll.
        self._height_at_poll: int | None = None
        self._best_seen: dict[bytes, int] = {}

    def add_source(self, peer: bytes) -> None:
        if peer not in self.sources:
            self.sources.append(peer)

    def remove_source(self, peer: bytes) -> None:
        if peer in self.sources:
            self.sources.remove(peer)

    def note_head(self, peer: bytes, height: int) -> None:
        """Record that ``peer`` says it holds blocks up to ``height``. At most
        ``MAX_HEADS_KEPT`` peers are remembered: past that the heads of peers that are not
        sources are forgotten (keys are free; a source's head is what expiries count on)."""
        if peer not in self._best_seen and len(self._best_seen) >= MAX_HEADS_KEPT:
            self._best_seen = {p: h for p, h in self._best_seen.items() if p in self.sources}
        self._best_seen[peer] = max(height, self._best_seen.get(peer, 0))

    def head_of(self, peer: bytes) -> int:
        """The highest head ``peer`` said or showed it holds, 0 if none (or forgotten): an
        answer of its below this is a lie (round 29, F1)."""
        return self._best_seen.get(peer, 0)

    def best_source_head(self) -> int:
        """The highest head one of our sources (the coordinators) said it holds, 0 if none:
        what a transaction's expiry counts from while this replica catches up."""
        return max((self._best_seen.get(p, 0) for p in self.sources), default=0)

    def adopt(self, raw: bytes, state: State) -> None:
        """Take a block this node produced itself (already applied) as the new head."""
        self.state = state
        self._remember(state.height, raw)

    def on_head(self, peer: bytes, height: int) -> list[Effect]:
        """A bare head counts only from a source. It proves nothing and costs nothing: from
        fresh keys it started fetches that held every fetch slot (round 29, F1). Only a
        producer (a genesis coordinator, so a source) announces a bare head, so honest
        sync loses nothing; a non-source still starts a fetch by showing a signed block
        above ours (:meth:`on_blocks`)."""
        if peer not in self.sources:
            return []
        self.note_head(peer, height)
        if height > self.state.height:
            return [FetchBlocks(peer, self.state.height + 1, self.batch)]
        return []

    def tick(self, now_ms: int) -> list[Effect]:
        """Poll a source for new blocks every ``sync_interval_ms`` (round robin), unless
        our height went up since the last round: announced blocks keep the replica at the
        head, and a gap in them starts a fetch by itself (:meth:`on_blocks`). A replica
        that made no progress for a whole interval (announcements lost, a store fault that
        took it back) polls at once, so a stall is noticed within two intervals at most."""
        if self._next_sync_ms is not None and now_ms < self._next_sync_ms:
            return [SetTimer(self._next_sync_ms)]
        self._next_sync_ms = now_ms + self.sync_interval_ms
        advanced = self._height_at_poll is not None and self.state.height > self._height_at_poll
        self._height_at_poll = self.state.height
        effects: list[Effect] = []
        if self.sources and not advanced:
            peer = self.sources[self._next_source % len(self.sources)]
            self._next_source += 1
            effects.append(FetchBlocks(peer, self.state.height + 1, self.batch))
        effects.append(SetTimer(self._next_sync_ms))
        return effects

    def on_blocks(self, peer: bytes, blocks: Sequence[bytes]) -> list[Effect]:
        """Validate and apply blocks from ``peer``; stops at the first bad one."""
        effects: list[Effect] = []
        genesis = self.state.genesis
        for raw in blocks:
            try:
                signed = decode_block(raw, genesis)
            except BlockRejected as exc:
                effects.append(PeerMisbehaved(peer, str(exc)))
                break
            height = signed.message.height
            if height <= self.state.height:
                ours = self.recent.get(height)
                if ours is not None and ours != raw and self._new_proof_height(height):
                    proof = EquivocationProof(height, ours, raw)
                    self.proofs.append(proof)
                    effects.append(ProofFound(proof))
                continue
            if height > self.state.height + 1:
                # the peer showed it holds this height: an answer below it is a lie (round
                # 29, F1); the block says its height, whatever the announcement claimed
                self.note_head(peer, height)
                effects.append(FetchBlocks(peer, self.state.height + 1, self.batch))
                break
            try:
                new = apply_block(self.state, signed)
            except BlockRejected as exc:
                effects.append(PeerMisbehaved(peer, str(exc)))
                break
            self.state = new
            self._remember(height, raw)
            effects.append(Commit(signed, new))
        else:
            if (blocks and len(blocks) >= self.batch) or self._best_seen.get(
                peer, 0
            ) > self.state.height:
                effects.append(FetchBlocks(peer, self.state.height + 1, self.batch))
        return effects

    def _new_proof_height(self, height: int) -> bool:
        """Whether a proof at ``height`` is worth keeping: one a height is all the evidence
        there is, and at most ``MAX_PROOFS`` in all (a coordinator signing many versions
        of its blocks gave any peer that replayed them a new proof, of up to 2 MB, kept in
        memory and on disk, each: review round 74, R74-C)."""
        return len(self.proofs) < MAX_PROOFS and all(p.height != height for p in self.proofs)

    def _remember(self, height: int, raw: bytes) -> None:
        self.recent[height] = raw
        while len(self.recent) > self.keep_recent:
            self.recent.popitem(last=False)
