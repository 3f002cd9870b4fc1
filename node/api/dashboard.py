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

Live updates. One :class:`SnapshotHub` per node (:mod:`._snapshot_hub`) computes a
snapshot (:mod:`._dashboard_snapshot`) at most once per tick (``TICK_S``) for all
listeners, and only while someone listens; at most ``MAX_LISTENERS`` event streams are
open at once.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from ._auth import loopback_host, loopback_origin
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

    # --- the snapshot ------------------------------------------------------------------

    async def _snapshot(self) -> bytes:
        out = await self.snapshots.build()
        out["dashboard"] = {
            "listeners": self.hub.listeners,
            "snapshots": self.hub.computed,
            "cpu_ms_per_snapshot": round(1000 * self.hub.cpu_s / max(1, self.hub.computed), 3),
        }
        return json.dumps(out, separators=(",", ":"), sort_keys=True).encode()
