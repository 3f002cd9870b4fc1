"""The node's local HTTP API (specs/api.md): the server, its routes, and the Python client.

``_http`` is a small HTTP/1.1 server on trio and h11; ``routes`` binds the endpoints to a
daemon :class:`~node.daemon.Node`, behind ``_auth``'s access rules (the owner's token,
loopback ``Host``, no foreign ``Origin``, JSON bodies); ``client`` is what workspaces
and the ``aimx`` CLI use to call them; ``npy`` is the one codec for arrays on the wire and
``views`` the JSON views of the daemon's records.

The package imports its parts on first use (PEP 562): a CLI command that only needs the
:class:`Client` does not load the server and its routes.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._auth import TOKEN_FILE as TOKEN_FILE
    from ._auth import load_or_create_token as load_or_create_token
    from ._auth import owner_only as owner_only
    from ._auth import read_token as read_token
    from ._http import HttpError as HttpError
    from ._http import Request as Request
    from ._http import Response as Response
    from ._http import Router as Router
    from ._http import serve_http as serve_http
    from .client import ApiError as ApiError
    from .client import Client as Client
    from .routes import make_router as make_router

_EXPORTS = {
    "TOKEN_FILE": "_auth",
    "load_or_create_token": "_auth",
    "owner_only": "_auth",
    "read_token": "_auth",
    "HttpError": "_http",
    "Request": "_http",
    "Response": "_http",
    "Router": "_http",
    "serve_http": "_http",
    "ApiError": "client",
    "Client": "client",
    "make_router": "routes",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'node.api' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
