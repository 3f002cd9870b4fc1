"""The node's dashboard (specs/dashboard.md): one page served from the package, its static
files, and a stream of snapshots as server-sent events, for the node's owner only.

Access. ``aimx node dashboard`` prints a login link, ``/dashboard/login?token=<api
token>``; it answers with a cookie (HttpOnly, SameSite=Strict, path ``/dashboard``, named
after the port: cookies are per host, not per port) whose value is derived from the token
(an HMAC of it, so the cookie is not the token), and a redirect to the page. Every other
dashboard route needs that cookie; the JSON API under ``/api`` keeps its Bearer token.
The ``Host`` and ``Origin`` rules of ``_auth`` hold for the dashboard too, and the page's
controls (``/dashboard/api/...``: pause, resume, config) are forwarded to the API only
with a JSON body.

Live updates. One :class:`SnapshotHub` per node computes a snapshot at most once per tick
(``TICK_S``) for all listeners, and only while someone listens; at most
``MAX_LISTENERS`` event streams are open at once.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import trio

import ledger
import protocol
import scheduler

from ._activity import Activity, EarningsBook, local_day_start_ms
from ._auth import loopback_host, loopback_origin
from ._hardware import Hardware
from ._http import Handler, HttpError, Request, Response

if TYPE_CHECKING:
    from ..daemon import Node

log = logging.getLogger(__name__)

PREFIX = "/dashboard"
STATIC_DIR = Path(__file__).with_name("static")
#: Seconds between snapshots while someone listens.
TICK_S = 1.0
#: Event streams open at once, at most (a further one is answered 503).
MAX_LISTENERS = 8
#: An unchanged stream sends a comment this often (proxies and browsers keep it open).
KEEPALIVE_S = 15.0
#: The earnings book in the data directory (one JSON object a line).
EARNINGS_FILE = "earnings.jsonl"
#: Ledger transactions of this node's account the page lists.
HISTORY_ROWS = 15
#: Jobs of each kind the page lists.
JOB_ROWS = 20
#: Jobs whose bid counts are remembered (the latest).
MAX_BID_COUNTS = 1_000

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
}
#: What the page's controls may reach of the API (``/dashboard/api/X`` -> ``/api/X``).
FORWARDED = frozenset(
    {
        ("GET", "/api/status"),
        ("POST", "/api/pause"),
        ("POST", "/api/resume"),
        ("GET", "/api/config"),
        ("PUT", "/api/config"),
        ("GET", "/api/provider/why"),
    }
)
_PAGE_HEADERS = {
    "cache-control": "no-store",
    "content-security-policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


def session_value(token: str) -> str:
    """The cookie's value for ``token``: an HMAC of it (URL-safe base64)."""
    mac = hmac.new(token.encode(), b"aimx dashboard session", hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def cookie_name(port: int) -> str:
    return f"aimx_dashboard_{port}"


def login_url(api_url: str, token: str) -> str:
    """The link that logs a browser in to the dashboard of the node at ``api_url``."""
    return f"{api_url.rstrip('/')}{PREFIX}/login?token={quote(token, safe='')}"


def _cookies(header: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in header.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep:
            out.setdefault(name.strip(), value.strip())
    return out


def _page(status: int, title: str, text: str) -> Response:
    body = (
        "<!doctype html><meta charset=utf-8><meta name=viewport "
        'content="width=device-width,initial-scale=1"><title>AIMatrix node</title>'
        f'<body style="font:16px system-ui;margin:2em"><h1>{title}</h1><p>{text}</p>'
    )
    return Response(status, body.encode(), _TYPES[".html"], dict(_PAGE_HEADERS))


def _refused(request: Request) -> Response:
    if request.path in (PREFIX, PREFIX + "/"):
        return _page(
            401,
            "Log in with the node's link",
            "This dashboard opens only from its login link: run <code>aimx node "
            "dashboard</code> (with the node's <code>--data-dir</code>) and open the link "
            "it prints.",
        )
    raise HttpError(
        401, "not logged in to the dashboard: open the link `aimx node dashboard` prints"
    )


class SnapshotHub:
    """One snapshot per tick for every listener, none while nobody listens.

    A listener asks :meth:`next_frame` for the frame after the one it has; the first
    listener to need a new frame computes it, the others get the same bytes."""

    def __init__(
        self,
        compute: Callable[[], Awaitable[bytes]],
        *,
        tick_s: float = TICK_S,
        max_listeners: int = MAX_LISTENERS,
    ) -> None:
        self._compute = compute
        self.tick_s = tick_s
        self.max_listeners = max_listeners
        self.listeners = 0
        #: Snapshots computed, and the CPU time of this thread they took (an upper bound:
        #: other tasks that ran while one waited for the ledger store count too).
        self.computed = 0
        self.cpu_s = 0.0
        self._frame: tuple[int, float, bytes] | None = None  # seq, trio time, data
        self._busy: trio.Event | None = None

    async def next_frame(self, seen: int) -> tuple[int, bytes]:
        """The frame after ``seen`` (``-1``: the current one, computed if stale)."""
        while True:
            frame, now = self._frame, trio.current_time()
            if frame is not None and frame[0] != seen and now - frame[1] < self.tick_s:
                return frame[0], frame[2]
            if frame is not None and frame[0] == seen:
                await trio.sleep_until(frame[1] + self.tick_s)
                if self._frame is not frame:
                    continue
            if self._busy is not None:  # another listener computes it: take that one
                await self._busy.wait()
                continue
            busy = self._busy = trio.Event()
            try:
                cpu = time.thread_time()
                try:
                    data = await self._compute()
                except Exception:  # a bug here must not end the API's server
                    log.exception("the dashboard's snapshot failed")
                    data = b'{"error":"the snapshot failed; see the node\'s log"}'
                self.cpu_s += time.thread_time() - cpu
                seq = frame[0] + 1 if frame is not None else 0
                self._frame = (seq, trio.current_time(), data)
                self.computed += 1
            finally:
                self._busy = None
                busy.set()

    async def stream(self) -> AsyncGenerator[bytes, None]:
        """One listener's event stream (``text/event-stream``): a ``snapshot`` event
        whenever the snapshot changed, a comment every ``KEEPALIVE_S`` otherwise."""
        if self.listeners >= self.max_listeners:
            yield b"event: full\ndata: {}\n\n"
            return
        self.listeners += 1
        try:
            yield b"retry: 2000\n\n"
            seen, last, sent_at = -1, b"", trio.current_time()
            while True:
                seen, data = await self.next_frame(seen)
                now = trio.current_time()
                if data != last:
                    last, sent_at = data, now
                    yield b"event: snapshot\ndata: " + data + b"\n\n"
                elif now - sent_at >= KEEPALIVE_S:
                    sent_at = now
                    yield b": keepalive\n\n"
        finally:
            self.listeners -= 1


def _load_book(path: Path | None) -> EarningsBook:
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


class Dashboard:
    """The dashboard's routes for one node (see the module's text)."""

    def __init__(
        self, node: Node, *, token: str, api: Handler, data_dir: Path | None = None
    ) -> None:
        self.node = node
        self._token = token
        self._session = session_value(token)
        self._api = api
        self._static: dict[str, tuple[bytes, str]] = {}
        self._earnings_path = data_dir / EARNINGS_FILE if data_dir is not None else None
        self.activity = Activity(
            clock=node.now_ms, book=_load_book(self._earnings_path), on_paid=self._keep_paid
        )
        effects = getattr(node, "effects", None)
        if effects is not None:
            effects.observers.append(self.activity.observe)
            effects.observers.append(self._count_bids)
        self.hardware = Hardware()
        self.hub = SnapshotHub(self._snapshot)
        self._history: list[dict[str, Any]] = []
        self._history_key: object = None
        self._decoded: dict[tuple[int, int], dict[str, Any]] = {}
        self._why: tuple[object, dict[str, Any]] = (None, {})
        self._bids: dict[bytes, tuple[int, int]] = {}

    # --- routing -----------------------------------------------------------------------

    def mount(self, api: Handler) -> Handler:
        """``api`` with the dashboard's routes in front of it."""

        async def handler(request: Request) -> Response:
            if request.path == PREFIX or request.path.startswith(PREFIX + "/"):
                return await self.handle(request)
            return await api(request)

        return handler

    async def handle(self, request: Request) -> Response:
        host = request.headers.get("host", "")
        if not loopback_host(host, request.port):
            raise HttpError(421, f"Host {host!r} is not this node")
        origin = request.headers.get("origin")
        if origin is not None and not loopback_origin(origin, request.port):
            raise HttpError(403, f"requests from the origin {origin!r} are refused")
        path = request.path
        if path == PREFIX + "/login":
            if request.method != "GET":
                raise HttpError(405, f"{request.method} is not allowed on {path}")
            return self._login(request)
        given = _cookies(request.headers.get("cookie", "")).get(cookie_name(request.port), "")
        if not hmac.compare_digest(given.encode(), self._session.encode()):
            return _refused(request)
        if path in (PREFIX, PREFIX + "/"):
            if request.method != "GET":
                raise HttpError(405, f"{request.method} is not allowed on {path}")
            body, kind = self._file("index.html")
            return Response(200, body, kind, dict(_PAGE_HEADERS))
        if path.startswith(PREFIX + "/static/") and request.method == "GET":
            body, kind = self._file(path[len(PREFIX + "/static/") :])
            return Response(200, body, kind, {"cache-control": "private, max-age=600"})
        if path == PREFIX + "/events" and request.method == "GET":
            if self.hub.listeners >= self.hub.max_listeners:
                raise HttpError(
                    503, f"{self.hub.max_listeners} dashboards are open already: close one"
                )
            return Response(200, content_type="text/event-stream", stream=self.hub.stream)
        if path == PREFIX + "/snapshot" and request.method == "GET":
            return Response(200, await self._snapshot())
        if path.startswith(PREFIX + "/api/"):
            return await self._forward(request)
        raise HttpError(404, f"no such dashboard page: {path}")

    def _login(self, request: Request) -> Response:
        given = request.query.get("token", [""])[0]
        if not hmac.compare_digest(given.encode(), self._token.encode()):
            return _page(
                401,
                "This login link is not valid",
                "The token in the link is not this node's (a restart with a new data "
                "directory makes a new one): run <code>aimx node dashboard</code> again.",
            )
        cookie = (
            f"{cookie_name(request.port)}={self._session}; Path={PREFIX}; HttpOnly; SameSite=Strict"
        )
        headers = {**_PAGE_HEADERS, "location": PREFIX + "/", "set-cookie": cookie}
        return Response(303, b"", "text/plain", headers)

    def _file(self, name: str) -> tuple[bytes, str]:
        cached = self._static.get(name)
        if cached is not None:
            return cached
        kind = _TYPES.get(os.path.splitext(name)[1])
        path = STATIC_DIR / name
        # only files of the package's static folder, by their plain names
        if kind is None or name.startswith(".") or "/" in name.replace("vendor/", "", 1):
            raise HttpError(404, f"no such file: {name}")
        try:
            if path.resolve().parent not in (STATIC_DIR.resolve(), STATIC_DIR.resolve() / "vendor"):
                raise HttpError(404, f"no such file: {name}")
            data = path.read_bytes()
        except OSError:
            raise HttpError(404, f"no such file: {name}") from None
        self._static[name] = (data, kind)
        return data, kind

    async def _forward(self, request: Request) -> Response:
        path = "/api/" + request.path[len(PREFIX + "/api/") :]
        if (request.method, path) not in FORWARDED:
            raise HttpError(404, f"the dashboard does not reach {request.method} {path}")
        if request.method in ("POST", "PUT"):
            media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
            if media != "application/json":
                raise HttpError(415, "a control's body must be JSON (application/json)")
        return await self._api(dataclasses.replace(request, path=path))

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
        if self._earnings_path is None:
            return
        line = json.dumps({"at_ms": at_ms, "amount": amount, "job": job_id.hex()}) + "\n"
        try:
            fd = os.open(self._earnings_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with open(fd, "a", encoding="utf-8") as f:
                f.write(line)
        except OSError as exc:
            log.warning("cannot write %s: %s", self._earnings_path, exc)

    # --- the snapshot ------------------------------------------------------------------

    async def _snapshot(self) -> bytes:
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
            "dashboard": {
                "listeners": self.hub.listeners,
                "snapshots": self.hub.computed,
                "cpu_ms_per_snapshot": round(1000 * self.hub.cpu_s / max(1, self.hub.computed), 3),
            },
        }
        if node.provider is not None:
            out["provider"] = self._provider_view(now)
        if node.requester is not None:
            out["requester"] = self._requester_view()
        return json.dumps(out, separators=(",", ":"), sort_keys=True).encode()

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
