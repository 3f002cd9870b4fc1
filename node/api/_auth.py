"""Who may use a node's local API: its owner only (specs/api.md, "Access").

The rules, in the order they are checked, on the request's head alone: before any route
runs and before any byte of the body is read (the server reads a body only once the request
reaches its route, ``_http``); a refused request is answered and its connection closed,
its body unread.

1. ``Host`` names loopback (``127.0.0.1``, ``localhost``, ``[::1]``), with the server's
   own port or none; else 421. A page that rebinds its DNS name to 127.0.0.1 sends its own
   name, so it reads nothing.
2. ``Origin``, when present, is a loopback origin on the server's port; else 403. A
   browser sends it with every cross-site POST and every script's request.
3. ``Authorization: Bearer <token>`` carries the token of ``api.token`` in the data
   directory (compared in constant time); else 401. A web page cannot read the file.
4. A POST's body is ``application/json``; else 415. A browser sends a cross-site request
   without a preflight only with a form or ``text/plain`` type.

The token is 32 random bytes, URL-safe base64 (43 characters), written 0600 and
atomically at daemon start; a valid one left by an earlier start is kept (see
:func:`load_or_create_token`).
"""

from __future__ import annotations

import contextlib
import hmac
import os
import secrets
import stat
from pathlib import Path

from ._http import Handler, HttpError, Request, Response

TOKEN_FILE = "api.token"
TOKEN_BYTES = 32
#: Length of ``secrets.token_urlsafe(TOKEN_BYTES)``.
TOKEN_CHARS = 43
_URLSAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


def token_path(data_dir: Path) -> Path:
    return data_dir / TOKEN_FILE


def _well_formed(text: str) -> bool:
    return len(text) == TOKEN_CHARS and set(text) <= _URLSAFE


def _kept_token(path: Path) -> str | None:
    """The token at ``path`` if it is a regular file of ours, private, and well formed."""
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
            return None
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text if _well_formed(text) else None


def load_or_create_token(data_dir: Path) -> str:
    """The daemon's API token: the one in ``api.token`` if it is a regular file owned by
    this user, readable by nobody else, and well formed; else a new one, written 0600 and
    atomically (a client never reads half a token)."""
    path = token_path(data_dir)
    kept = _kept_token(path)
    if kept is not None:
        return kept
    token = secrets.token_urlsafe(TOKEN_BYTES)
    tmp = data_dir / f".{TOKEN_FILE}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(token + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return token


def read_token(data_dir: Path) -> str | None:
    """A client's side: the token in ``data_dir``, or None when there is none, or it is
    not a regular file of this user's (root reads any): a link another user planted
    pointed the client at the real token while its ``node.json`` named that user's port
    (review round 73, F2)."""
    path = token_path(data_dir)
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or (st.st_uid != os.geteuid() and os.geteuid() != 0):
            return None
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text if _well_formed(text) else None


def _split_host(value: str) -> tuple[str, str | None]:
    """``name[:port]`` (``[v6]:port`` for IPv6) into the name, lower case, and the port."""
    value = value.strip().lower()
    if value.startswith("["):
        name, sep, rest = value.partition("]")
        if not sep:
            return value, None
        name += "]"
        if not rest:
            return name, None
        return name, rest[1:] if rest.startswith(":") else "?"
    name, sep, port = value.rpartition(":")
    return (name, port) if sep else (value, None)


def loopback_host(host: str, port: int) -> bool:
    """Whether a ``Host`` header names this loopback server: a loopback name, with
    ``port`` or no port."""
    name, given = _split_host(host)
    return name in LOOPBACK_NAMES and (given is None or given == str(port))


def loopback_origin(origin: str, port: int) -> bool:
    """Whether an ``Origin`` header is a page of this server itself."""
    return origin.strip().lower() in {f"http://{name}:{port}" for name in LOOPBACK_NAMES}


def bearer(value: str) -> str:
    """The credentials of an ``Authorization: Bearer ...`` header's value; else ``""``."""
    scheme, _, credentials = value.strip().partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else ""


def check_access(request: Request, token: str) -> None:
    """Raise the :class:`HttpError` that refuses ``request``, if any (the module's rules)."""
    host = request.headers.get("host", "")
    if not loopback_host(host, request.port):
        raise HttpError(
            421,
            f"Host {host!r} is not this node: the API answers only to "
            f"127.0.0.1, localhost or [::1] on port {request.port}",
        )
    origin = request.headers.get("origin")
    if origin is not None and not loopback_origin(origin, request.port):
        raise HttpError(403, f"requests from the origin {origin!r} are refused")
    given = bearer(request.headers.get("authorization", ""))
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise HttpError(
            401,
            "missing or wrong API token: send 'Authorization: Bearer <token>' with the token "
            f"in the node's data directory ({TOKEN_FILE})",
            {"www-authenticate": "Bearer"},
        )
    if request.method == "POST":
        media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media != "application/json":
            raise HttpError(415, "a POST body must be JSON with content-type application/json")


def owner_only(handler: Handler, token: str) -> Handler:
    """``handler`` behind :func:`check_access`, which sees the request's head only: its body
    is read after, when the request reaches its route (``Router``)."""
    if not _well_formed(token):
        raise ValueError("the API token must be 43 URL-safe base64 characters")

    async def checked(request: Request) -> Response:
        check_access(request, token)
        return await handler(request)

    return checked
