"""The element types a job may use, by canonical code (numpy's type string, little-endian).

Kept apart from ``_tensors`` so that a worker can use it without importing ``protocol``.
"""

from __future__ import annotations

import numpy as np

# dtypes a job may produce or consume, by their canonical code (little-endian numpy codes).
DTYPE_CODES: dict[str, np.dtype[np.generic]] = {
    code: np.dtype(code)
    for code in (
        "|b1",
        "|i1",
        "|u1",
        "<i2",
        "<u2",
        "<i4",
        "<u4",
        "<i8",
        "<u8",
        "<f2",
        "<f4",
        "<f8",
    )
}


def dtype_code(dtype: np.dtype[np.generic]) -> str:
    """The canonical code of ``dtype`` (``<f4``, ``|u1``, ...); ValueError if not allowed."""
    code = np.dtype(dtype).newbyteorder("<").str
    if code not in DTYPE_CODES:
        raise ValueError(f"dtype {dtype} is not supported (use one of {', '.join(DTYPE_CODES)})")
    return code
