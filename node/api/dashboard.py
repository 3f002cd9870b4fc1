"""The node's dashboard (specs/dashboard.md): one page served from the package, its static
files, and a stream of snapshots as server-sent events, for the node's owner only.

Access. The dashboard has its own token, :attr:`Dashboard.token`: random at each start of
the daemon, kept in memory only, and good for the dashboard's routes only (never the JSON
API). The owner gets it with the API token (``GET /api/dashboard/token``), and ``aimx
node dashboard`` prints the link ``/dashboard/#token=<it>``: in the URL's fragment, which a
browser sends to no server, in no ``Referer``. The page's script moves it to
``sessionStorage`` (one origin: this host and port), removes it from the address bar, and
sends it as ``Authorization: Bearer`` with every call; the routes that carry the node's
data or change it (``/dashboard/events``, ``/dashboard/snapshot``,
``/dashboard/api/...``) refuse a request without it. No cookie: browsers send a cookie to
every port of a host, so another local user's server on another port would get it. The
page and its static files hold nothing of the node's and are served without the token. A
link of an earlier run, whatever program now holds its port, carries a dead token.

``/dashboard/login`` (the old link, ``?token=<api token>``) logs nobody in: it answers a
page that says to get a fresh link, without reading the token.

The ``Host`` and ``Origin`` rules of ``_auth`` hold for the dashboard too, and the page's
controls (``/dashboard/api/...``: pause, resume, config) are forwarded to the API only
with a JSON body.

Live updates. One :class:`SnapshotHub` per node (:mod:`._snapshot_hub`) computes a
snapshot (:mod:`._dashboard_snapshot`) at most once per tick (``TICK_S``) for all
listeners, and only while someone listens; at most ``MAX_LISTENERS`` event streams are
open at once.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from ._auth import TOKEN_BYTES, bearer, loopback_host, loopback_origin
from ._dashboard_snapshot import SnapshotBuilder
from ._http import Handler, HttpError, Request, Response
from ._snapshot_hub import MAX_LISTENERS as MAX_LISTENERS
from ._snapshot_hub import TICK_S as TICK_S
from ._snapshot_hub import SnapshotHub

if TYPE_CHECKING:
    from ..daemon import Node

PREFIX = "/dashboard"
STATIC_DIR = Path(__file__).with_name("static")
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


def login_url(api_url: str, token: str) -> str:
    """The link that logs a browser in to the dashboard of the node at ``api_url``, with
    the dashboard's ``token`` in its fragment (never sent to a server)."""
    return f"{api_url.rstrip('/')}{PREFIX}/#token={quote(token, safe='')}"


def _page(status: int, title: str, text: str) -> Response:
    body = (
        "<!doctype html><meta charset=utf-8><meta name=viewport "
        'content="width=device-width,initial-scale=1"><title>AIMatrix node</title>'
        f'<body style="font:16px system-ui;margin:2em"><h1>{title}</h1><p>{text}</p>'
    )
    return Response(status, body.encode(), _TYPES[".html"], dict(_PAGE_HEADERS))


class Dashboard:
    """The dashboard's routes for one node (see the module's text)."""

    def __init__(self, node: Node, *, api: Handler, data_dir: Path | None = None) -> None:
        self.node = node
        #: The dashboard's token, new at each start (see the module's text).
        self.token = secrets.token_urlsafe(TOKEN_BYTES)
        self._api = api
        self._static: dict[str, tuple[bytes, str]] = {}
        self.snapshots = SnapshotBuilder(node, api, data_dir)
        self.hub = SnapshotHub(self._snapshot)

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
            return _page(
                410,
                "This login link is no longer used",
                "Links of this form are gone: its token is not read, and nothing is set. Run "
                "<code>aimx node dashboard</code> (with the node's <code>--data-dir</code>) "
                "and open the fresh link it prints.",
            )
        # the page and its files hold nothing of the node's: no token needed
        if path in (PREFIX, PREFIX + "/"):
            if request.method != "GET":
                raise HttpError(405, f"{request.method} is not allowed on {path}")
            body, kind = self._file("index.html")
            return Response(200, body, kind, dict(_PAGE_HEADERS))
        if path.startswith(PREFIX + "/static/") and request.method == "GET":
            body, kind = self._file(path[len(PREFIX + "/static/") :])
            return Response(200, body, kind, {"cache-control": "private, max-age=600"})
        given = bearer(request.headers.get("authorization", ""))
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            raise HttpError(
                401,
                "not logged in to the dashboard: open the link `aimx node dashboard` prints "
                "(it holds this run's dashboard token)",
                {"www-authenticate": "Bearer"},
            )
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

    # --- the snapshot ------------------------------------------------------------------

    async def _snapshot(self) -> bytes:
        out = await self.snapshots.build()
        out["dashboard"] = {
            "listeners": self.hub.listeners,
            "snapshots": self.hub.computed,
            "cpu_ms_per_snapshot": round(1000 * self.hub.cpu_s / max(1, self.hub.computed), 3),
        }
        return json.dumps(out, separators=(",", ":"), sort_keys=True).encode()
