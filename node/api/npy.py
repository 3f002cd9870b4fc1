"""Arrays on the local API: a ``.npy`` file (no pickles) in base64, the one codec that
both the routes and the client use (specs/api.md)."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np


def encode_array(array: np.ndarray[Any, Any]) -> str:
    """``array`` as base64 of its ``.npy`` file (C order)."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return base64.b64encode(buf.getvalue()).decode()


def decode_array(text: str) -> np.ndarray[Any, Any]:
    """The array in ``text`` (base64 of a ``.npy`` file).

    Raises ``ValueError`` when it is not valid base64 or not a ``.npy`` array without
    pickled objects; the caller says which tensor it was and whose fault.
    """
    try:
        return np.asarray(
            np.load(io.BytesIO(base64.b64decode(text, validate=True)), allow_pickle=False)
        )
    except OSError as exc:
        raise ValueError(str(exc)) from None
