"""What the dashboard shows of a node: one snapshot, as JSON (specs/dashboard.md).

:class:`SnapshotBuilder` reads the node (its status through the API's own
``/api/status``, its machines, its ledger) and keeps what the machines forget: the
contributor's :class:`Activity` (fed by the effect runner's observers), the earnings book
in ``earnings.jsonl`` (so that the totals survive a restart), the bids each job of ours
received, and the node's latest ledger transactions (read again only when its account
changed). :func:`node_state` is the one word the page's header shows, and why.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ledger
import protocol
import scheduler

from ._activity import Activity, EarningsBook, local_day_start_ms
from ._hardware import Hardware
from ._http import Handler, Request

if TYPE_CHECKING:
    from ..daemon import Node

log = logging.getLogger(__name__)

#: The earnings book in the data directory (one JSON object a line).
EARNINGS_FILE = "earnings.jsonl"
#: Payments appended to the earnings file before it is written again as the book's
#: buckets (so it holds at most this many lines more than the book has buckets).
COMPACT_EARNINGS_EVERY = 10_000
#: Ledger transactions of this node's account the page lists.
HISTORY_ROWS = 15
#: Jobs of each kind the page lists.
JOB_ROWS = 20
#: Jobs whose bid counts are remembered (the latest).
MAX_BID_COUNTS = 1_000


def write_earnings(path: Path, book: EarningsBook) -> None:
    """Write ``book``'s buckets to ``path`` in place of its lines (one a payment), through
    a file renamed over it: the file stays as bounded as the book."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "w", encoding="utf-8") as f:
        for at_ms, amount in book.entries:
            f.write(json.dumps({"at_ms": at_ms, "amount": amount}) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_earnings(path: Path | None) -> EarningsBook:
    """The earnings book kept in ``path`` (empty without one)."""
    entries: list[tuple[int, int]] = []
    if path is not None:
        with contextlib.suppress(FileNotFoundError), open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    item = json.loads(line)
                    entries.append((int(item["at_ms"]), int(item["amount"])))
                except (ValueError, KeyError, TypeError):
                    continue  # a torn last line after a crash
    return EarningsBook(entries)


def node_state(status: dict[str, Any]) -> dict[str, Any]:
    """What the node is doing, in one word and why: the availability the API reports
    when it has one, else the node's fault, connections and running work."""
    avail = status.get("availability")
    if isinstance(avail, dict) and avail.get("state"):
        return {"state": avail["state"], "reason": avail.get("reason")}
    if status.get("fault"):
        return {"state": "paused", "reason": status["fault"]}
    if not status.get("connected_peers"):
        return {"state": "offline", "reason": "no peer connected"}
    provider = status.get("provider")
    if provider is not None:
        state = "working" if provider.get("active") else "idle"
        return {"state": state, "reason": None}
    return {"state": "idle", "reason": None}


class SnapshotBuilder:
    """The snapshots of ``node``, its status read through ``api``; the earnings book is
    kept in ``data_dir`` (none without one)."""

    def __init__(self, node: Node, api: Handler, data_dir: Path | None = None) -> None:
        self.node = node
        self._api = api
        self._earnings_path = data_dir / EARNINGS_FILE if data_dir is not None else None
        self.activity = Activity(
            clock=node.now_ms, book=load_earnings(self._earnings_path), on_paid=self._keep_paid
        )
        self._appended = COMPACT_EARNINGS_EVERY  # rewrite what was kept at the first payment
        effects = getattr(node, "effects", None)
        if effects is not None:
            effects.observers.append(self.activity.observe)
            effects.observers.append(self._count_bids)
        self.hardware = Hardware()
        self._history: list[dict[str, Any]] = []
        self._history_key: object = None
        self._decoded: dict[tuple[int, int], dict[str, Any]] = {}
        self._why: tuple[object, dict[str, Any]] = (None, {})
        self._bids: dict[bytes, tuple[int, int]] = {}

    def _count_bids(self, machine: str, effect: scheduler.Effect) -> None:
        """The bids and refusals a job of ours received, seen at each of its events (the
        requester machine forgets a job once it closed)."""
        requester = self.node.requester
        if machine != "requester" or requester is None:
            return
        if not isinstance(effect, scheduler.NotifyUser):
            return
        job = requester.jobs.get(effect.job_id)
        if job is None:
            return
        seen = self._bids.pop(effect.job_id, (0, 0))
        self._bids[effect.job_id] = (max(seen[0], len(job.bids)), max(seen[1], len(job.nobids)))
        while len(self._bids) > MAX_BID_COUNTS:
            del self._bids[next(iter(self._bids))]

    def _keep_paid(self, at_ms: int, amount: int, job_id: bytes) -> None:
        """Append the payment to the earnings file; every ``COMPACT_EARNINGS_EVERY`` lines,
        write the file again as the book's buckets."""
        path = self._earnings_path
        if path is None:
            return
        try:
            if self._appended >= COMPACT_EARNINGS_EVERY:
                write_earnings(path, self.activity.book)  # the book has this payment
                self._appended = 0
                return
            line = json.dumps({"at_ms": at_ms, "amount": amount, "job": job_id.hex()}) + "\n"
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with open(fd, "a", encoding="utf-8") as f:
                f.write(line)
            self._appended += 1
        except OSError as exc:
            log.warning("cannot write %s: %s", path, exc)

    # --- the snapshot ------------------------------------------------------------------

    async def build(self) -> dict[str, Any]:
        """The snapshot of the node now (the dashboard adds its own figures)."""
        node = self.node
        now = node.now_ms()
        answer = await self._api(Request("GET", "/api/status", {}, {}, b""))
        status: dict[str, Any] = json.loads(answer.body)
        addresses: list[str] = status.get("addresses", [])
        out: dict[str, Any] = {
            "now_ms": now,
            "status": status,
            "state": node_state(status),
            "peers": {
                "connected": status.get("connected_peers", 0),
                # the status's own word (direct, relayed, unknown) when it has one
                "reachability": status.get("reachability", node.net.reachability().value),
                "relayed": status.get("relay") is not None
                or any("/p2p-circuit" in a for a in addresses),
                "relay": status.get("relay"),
            },
            "hardware": {**self.hardware.sample(), "profile": self._profile()},
            "ledger": {"history": await self._ledger_history()},
        }
        if node.provider is not None:
            out["provider"] = self._provider_view(now)
        if node.requester is not None:
            out["requester"] = self._requester_view()
        return out

    def _profile(self) -> dict[str, Any] | None:
        p = self.node.profile
        if p is None:
            return None
        return {
            "cpu_cores": p.cpu_cores,
            "memory_mb": p.memory_mb,
            "bench_score": p.bench_score,
            "execution_providers": list(p.execution_providers),
            "determinism_class": p.determinism_class,
            "gpus": [g.name for g in p.gpus],
        }

    def _provider_view(self, now: int) -> dict[str, Any]:
        provider = self.node.provider
        assert provider is not None
        activity = self.activity
        for job_id in activity.running:
            work = provider.work.get(job_id)
            if work is not None:
                activity.set_estimate(job_id, work.bid.message.est_finish_ms)
        history = provider.history
        key = (len(history), history[-1] if history else None, now // 10_000)
        if self._why[0] != key:
            report = provider.why_no_jobs(now)
            self._why = (
                key,
                {
                    "announcements": report.announcements,
                    "outcomes": dict(report.outcomes),
                    "hints": list(report.hints),
                },
            )
        config = provider.config
        return {
            "running": [e.view(now) for e in activity.running.values()],
            "recent": [e.view(now) for e in list(activity.recent)[:JOB_ROWS]],
            "earnings": {
                **activity.book.summary(now, local_day_start_ms(now)),
                "since_start": self.node.earned,
            },
            "why": self._why[1],
            "bidding": provider.bidding,
            "draining": provider.draining,
            "price_floor": config.price_floor,
            "max_concurrency": config.max_concurrency,
            "classes": list(config.capability_classes),
        }

    def _requester_view(self) -> dict[str, Any]:
        node = self.node
        requester = node.requester
        assert requester is not None
        spend = 0
        for record in node.jobs.values():
            if record.done is not None:
                spend += sum(p.amount for p in record.done.paid)
        rows = []
        for record in list(node.jobs.values())[-JOB_ROWS:][::-1]:
            job = requester.jobs.get(record.job_id)
            bids, nobids = self._bids.get(record.job_id, (0, 0))
            if job is not None:
                bids, nobids = max(bids, len(job.bids)), max(nobids, len(job.nobids))
            done = record.done
            rows.append(
                {
                    "job_id": record.job_id.hex(),
                    "model": record.model_name,
                    "status": done.status if done else "pending",
                    "phase": job.phase if job is not None else "closed",
                    "submitted_ms": record.submitted_ms,
                    "ended_ms": record.events[-1][0] if done and record.events else None,
                    "paid": sum(p.amount for p in done.paid) if done else 0,
                    "reason": done.reason if done else "",
                    "bids": bids,
                    "no_bids": nobids,
                }
            )
        return {"jobs": rows, "spend": spend, "count": len(node.jobs)}

    async def _ledger_history(self) -> list[dict[str, Any]]:
        """This node's latest transactions, read again only when its account changed."""
        node = self.node
        store = getattr(node, "ledger_store", None)
        if store is None:
            return []
        account = node.ledger.state.account(node.me)
        if account == self._history_key:
            return self._history
        me, chain_id = node.me, node.chain_id
        entries = await store.call(lambda s: s.history(me, HISTORY_ROWS))
        rows = []
        for e in entries:
            key = (e.height, e.index)
            row = self._decoded.get(key)
            if row is None:
                row = self._decoded[key] = _describe(e.height, e.index, e.raw, chain_id, me)
            rows.append(row)
        keep = {(r["height"], r["index"]) for r in rows}
        self._decoded = {k: v for k, v in self._decoded.items() if k in keep}
        self._history, self._history_key = rows, account
        return rows


def _describe(height: int, index: int, raw: bytes, chain_id: str, me: bytes) -> dict[str, Any]:
    """A transaction of the node's history: its kind, who sent it and what it moved."""
    try:
        vtx = ledger.verify_tx(raw, chain_id)
    except Exception:  # stored blocks were checked; a row the page cannot read is shown so
        return {"height": height, "index": index, "kind": "?", "detail": "unreadable"}
    t, p = vtx.tx, vtx.payload
    details: list[str] = []
    amount = getattr(p, "amount", None)
    if isinstance(amount, int):
        details.append(f"amount {amount}")
    to = getattr(p, "to", None)
    if isinstance(to, bytes):
        details.append("to " + ("this node" if to == me else protocol.peer_id(to)[:12] + "…"))
    payouts = getattr(p, "payouts", None)
    if payouts:
        mine = sum(x.amount for x in payouts if x.provider == me)
        details.append(f"{len(payouts)} payouts" + (f", {mine} to this node" if mine else ""))
    job_id = getattr(p, "job_id", None)
    if isinstance(job_id, bytes):
        details.append(f"job {job_id.hex()[:12]}")
    return {
        "height": height,
        "index": index,
        "kind": t.kind,
        "from": "this node" if t.sender == me else protocol.peer_id(t.sender)[:12] + "…",
        "fee": t.fee,
        "detail": ", ".join(details),
    }
