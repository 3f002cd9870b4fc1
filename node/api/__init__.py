"""The node's local HTTP API (specs/api.md): the server, its routes, and the Python client.

``_http`` is a small HTTP/1.1 server on trio and h11; ``routes`` binds the endpoints to a
daemon :class:`~node.daemon.Node`; ``client`` is what workspaces and the ``aimx`` CLI use
to call them; ``npy`` is the one codec for arrays on the wire and ``views`` the JSON views
of the daemon's records.
"""

from ._http import HttpError as HttpError
from ._http import Request as Request
from ._http import Response as Response
from ._http import Router as Router
from ._http import serve_http as serve_http
from .client import ApiError as ApiError
from .client import Client as Client
from .routes import make_router as make_router
