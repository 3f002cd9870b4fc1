"""The API's JSON views of the daemon's records (specs/api.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import protocol

from ..net import Network, Reachability

if TYPE_CHECKING:
    from ..daemon import JobRecord


def job_view(record: JobRecord, phase: str) -> dict[str, Any]:
    """A submitted job as ``GET /api/jobs/<id>`` shows it; ``phase`` is the scheduler's."""
    done = record.done
    out: dict[str, Any] = {
        "job_id": record.job_id.hex(),
        "model": record.model_name,
        "phase": phase,
        "status": done.status if done else "pending",
        "done": done is not None,
        "closed": record.closed,
        "reason": done.reason if done else "",
        "redundancy": record.spec.redundancy,
        "max_price": record.spec.max_price,
        "submitted_ms": record.submitted_ms,
        "deadline_ms": record.spec.deadline_ms,
        "events": [{"at_ms": t, "event": e, "detail": d} for t, e, d in record.events[-50:]],
        "paid": [],
        "output_hash": record.output_hash.hex() if record.output_hash else None,
        "output_names": list(record.output_names),
        "no_bids": None,
    }
    if done is not None:
        out["paid"] = [
            {"provider": protocol.peer_id(p.provider), "amount": p.amount} for p in done.paid
        ]
        if done.output is not None:
            out["output_hash"] = done.output.hash.hex()
            out["determinism_class"] = done.output.determinism_class
        if done.no_bids is not None:
            nb = done.no_bids
            out["no_bids"] = {
                "providers_asked": nb.providers_asked,
                "reasons": {r: n for r, n in nb.reasons},
                "primary": nb.primary,
                "lowest_floor": nb.lowest_floor,
                "advice": list(nb.advice),
            }
    return out


def reachability_view(net: Network) -> dict[str, Any]:
    """How others reach the node (specs/api.md, status): ``reachability`` is ``relayed``
    while it holds a relay reservation (``relay``: the first relay's peer id), ``direct``
    when it is public (a coordinator, or ``reachability = "public"``), else ``unknown``;
    ``relayed_peers``: connected peers reached only through a relay."""
    relays = net.relays()
    if relays:
        state = "relayed"
    elif net.reachability() is Reachability.PUBLIC:
        state = "direct"
    else:
        state = "unknown"
    return {
        "reachability": state,
        "relay": protocol.peer_id(relays[0]) if relays else None,
        "relayed_peers": len(net.relayed_peers()),
    }
