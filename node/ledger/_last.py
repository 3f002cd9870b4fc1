"""The requests a transaction queue signs last (:class:`HeldLast`): those another party can
make refused in a block, such as a claim of a requester that never paid us, which can have
its escrow closed in the very block the claim lands in. A refused transaction drops the
sender's later ones, so these are held and signed once nothing else waits, and nothing
else is signed while one of them is unresolved (specs/daemon.md, "Transactions"; review
rounds 10 and 11, R10-2, R11-1)."""

from __future__ import annotations

import bisect

import ledger

from ._txrequest import TxRequest

#: Blocks a request held to go last waits for a moment when nothing else waits, before it
#: takes its turn among the others.
LAST_WAIT_BLOCKS = 2
#: Escrow owners remembered for voiding a claim signed last (:meth:`HeldLast.voided`).
MAX_VOIDED = 1_024


class HeldLast:
    """Requests held to go last, in the order they were asked for, each with the height
    it was held at; and the escrow owners one of whose requests signed last was refused
    in a block (the latest ``MAX_VOIDED``): theirs go after the others'."""

    def __init__(self) -> None:
        self._held: list[tuple[int, int, TxRequest]] = []
        self._voided: dict[bytes, None] = {}

    def __bool__(self) -> bool:
        return bool(self._held)

    def hold(self, order: int, height: int, request: TxRequest) -> None:
        bisect.insort(self._held, (order, height, request), key=lambda item: item[0])

    def due(self, idle: bool, height: int) -> bool:
        """Whether they are signed now: when nothing else waits to be signed (``idle``),
        or once the first has waited ``LAST_WAIT_BLOCKS`` (so that steady traffic cannot
        starve them; what comes after waits for them, about a block)."""
        return idle or height - self._held[0][1] >= LAST_WAIT_BLOCKS

    def pop(self, state: ledger.State) -> tuple[int, TxRequest]:
        """The held request to sign next, with its order: the first whose escrow owner has
        not had one refused in a block (a requester voiding claims under us drags only
        its own after that), else the first."""
        index = next(
            (
                i
                for i, (_, _, request) in enumerate(self._held)
                if _owner(request.payload, state) not in self._voided
            ),
            0,
        )
        order, _, request = self._held.pop(index)
        return order, request

    def voided(self, payload: ledger.Payload, state: ledger.State) -> None:
        """A request signed last was refused in a block: remember its escrow's owner."""
        owner = _owner(payload, state)
        if owner is None:
            return
        self._voided.pop(owner, None)
        while len(self._voided) >= MAX_VOIDED:
            del self._voided[next(iter(self._voided))]
        self._voided[owner] = None


def _owner(payload: ledger.Payload, state: ledger.State) -> bytes | None:
    """The owner of the escrow a claim is for (None: not a claim, or no such escrow)."""
    if not isinstance(payload, ledger.Claim):
        return None
    escrow = state.escrow(payload.job_id)
    return escrow.owner if escrow is not None else None
