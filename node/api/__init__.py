"""The node's local HTTP API (specs/api.md): the server, its routes, and the Python client.

``_http`` is a small HTTP/1.1 server on trio and h11; ``routes`` binds the endpoints to a
daemon :class:`~node.daemon.Node`, behind ``_auth``'s access rules (the owner's token,
loopback ``Host``, no foreign ``Origin``, JSON bodies); ``client`` is what workspaces
and the ``aimx`` CLI use to call them; ``npy`` is the one codec for arrays on the wire and
``views`` the JSON views of the daemon's records.
"""

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
