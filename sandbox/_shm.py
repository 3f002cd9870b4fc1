"""The tensor data path between the daemon and a worker: one shared memory region per worker.

The daemon creates a ``memfd`` for each worker (sealed against shrinking, and against new
seals, so a worker can never make the daemon's mapping fault), maps it, and passes the fd to
the worker at start. A ``run`` request places the inputs in the region and names them by
``[dtype_code, [dims], offset]``; the worker writes its outputs back into the same region
(the inputs are no longer needed by then) and names them by
``[name, dtype_code, [dims], offset, nbytes]``. The pipe carries only these small control
messages. Layout and limits are in specs/sandbox.md, section 9.

Everything the daemon reads from the region is untrusted: it validates each output's
entry against the region and the output limit, and copies the bytes out before looking at
them, so that later writes by the worker change nothing the daemon holds.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import mmap
import os
from collections.abc import Callable, Sequence
from typing import cast

import numpy as np
import numpy.typing as npt

from ._dtypes import DTYPE_CODES, dtype_code

ALIGN = 64  # every tensor starts at a multiple of this offset
SLACK = 1 << 20  # room beyond the output limit for alignment padding
MAX_DIMS = 32
MAX_DIM = 1 << 40
MAX_OUTPUTS = 4096
_PAGE = mmap.PAGESIZE

Array = npt.NDArray[np.generic]
#: An output's name, dtype code, dims and data hash, as the output commitment takes them.
Hashed = tuple[str, str, list[int], bytes]


def aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def region_size(output_bytes: int, input_bytes: int = 0) -> int:
    """The size of a region that holds ``input_bytes`` of laid-out inputs and any outputs
    within ``output_bytes``: page-rounded."""
    need = max(output_bytes + SLACK, input_bytes)
    return -(-need // _PAGE) * _PAGE


def layout(nbytes: Sequence[int]) -> tuple[list[int], int]:
    """Offsets of tensors of ``nbytes`` placed one after another at ``ALIGN`` boundaries,
    and the end of the last one."""
    offsets = []
    pos = 0
    for n in nbytes:
        offsets.append(pos)
        pos = aligned(pos + n)
    return offsets, pos


class MalformedOutputs(ValueError):
    """The worker described its outputs in a way the daemon refuses."""


class HostRegion:
    """The daemon's side: owns the memfd, grows it, writes inputs, copies outputs out."""

    def __init__(self, name: str, size: int) -> None:
        self.fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(self.fd, size)
            # The worker shares the file: it must never shrink it under our mapping (SIGBUS)
            # nor add seals of its own (a grow or write seal would break the next job).
            fcntl.fcntl(self.fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL)
            self.size = size
            self.map = mmap.mmap(self.fd, size)
        except BaseException:
            os.close(self.fd)
            raise

    def close(self) -> None:
        with contextlib.suppress(BufferError, ValueError):
            self.map.close()
        with contextlib.suppress(OSError):
            os.close(self.fd)

    def ensure(self, size: int) -> None:
        """Grow the region (never shrink) to at least ``size`` bytes."""
        if size <= self.size:
            return
        size = -(-size // _PAGE) * _PAGE
        os.ftruncate(self.fd, size)
        with contextlib.suppress(BufferError):
            self.map.close()
        self.map = mmap.mmap(self.fd, size)
        self.size = size

    def place_inputs(self, arrays: Sequence[Array], reserve: int) -> list[list[object]]:
        """Lay the arrays out in the region (growing it to hold them, and at least
        ``reserve`` bytes); their ``[dtype_code, [dims], offset]`` entries, in order.
        :meth:`copy_inputs` puts them there."""
        codes = [dtype_code(a.dtype) for a in arrays]
        offsets, end = layout([a.nbytes for a in arrays])
        self.ensure(max(end, reserve))
        return [
            [code, [int(d) for d in a.shape], off]
            for a, code, off in zip(arrays, codes, offsets, strict=True)
        ]

    def copy_inputs(self, arrays: Sequence[Array], entries: list[list[object]]) -> None:
        """Copy the arrays to the places :meth:`place_inputs` gave them."""
        for a, entry in zip(arrays, entries, strict=True):
            if a.size:
                code, _, off = cast(tuple[str, list[int], int], entry)
                dst = np.frombuffer(self.map, DTYPE_CODES[code], a.size, off).reshape(a.shape)
                np.copyto(dst, a, casting="equiv")
                del dst

    def read_outputs(
        self, entries: object, max_bytes: int, *, digest: Callable[[memoryview], bytes]
    ) -> tuple[dict[str, Array], list[Hashed]]:
        """Validate the worker's output entries and copy each tensor out of the region;
        the copies, and each one's ``(name, dtype_code, dims, digest(bytes))``, taken right
        after its copy while its bytes are in the cache (``digest`` is the commitment's
        data hash: this module leaves hashing to its caller, so that a worker, which
        imports it, does not pay for importing the protocol).

        Each entry is ``[name, dtype_code, [dims], offset, nbytes]``: names unique strings,
        an allowed dtype, at most 32 dims, ``nbytes`` = elements x item size, tensors in
        increasing offset order without overlap, all inside the region, at most
        ``max_bytes`` together; booleans hold only 0 and 1. :class:`MalformedOutputs` else.
        """
        if not isinstance(entries, list) or len(entries) > MAX_OUTPUTS:
            raise MalformedOutputs("outputs must be a list of at most 4096 entries")
        out: dict[str, Array] = {}
        hashed: list[Hashed] = []
        total = 0
        prev_end = 0
        for entry in entries:
            if not isinstance(entry, list) or len(entry) != 5:
                raise MalformedOutputs("an output is [name, dtype, dims, offset, nbytes]")
            name, code, dims, offset, nbytes = entry
            if not isinstance(name, str) or name in out:
                raise MalformedOutputs("output names must be distinct strings")
            if not isinstance(code, str) or code not in DTYPE_CODES:
                raise MalformedOutputs(f"output {name!r}: unsupported dtype {code!r}")
            if not isinstance(dims, list) or len(dims) > MAX_DIMS:
                raise MalformedOutputs(f"output {name!r}: at most {MAX_DIMS} dimensions")
            if not all(type(d) is int and 0 <= d < MAX_DIM for d in dims):
                raise MalformedOutputs(f"output {name!r}: dimensions must be non-negative")
            if type(offset) is not int or type(nbytes) is not int:
                raise MalformedOutputs(f"output {name!r}: offset and size must be integers")
            dtype = DTYPE_CODES[code]
            count = 1
            for d in dims:
                count *= d
            if count * dtype.itemsize != nbytes:
                raise MalformedOutputs(f"output {name!r}: size does not match dtype and dims")
            total += nbytes
            if total > max_bytes:
                raise MalformedOutputs(f"outputs exceed the limit of {max_bytes} bytes")
            if offset < prev_end or offset % ALIGN or offset + nbytes > self.size:
                raise MalformedOutputs(f"output {name!r}: out of place in the shared region")
            prev_end = offset + nbytes
            # The region holds the canonical bytes (little-endian dtypes, C order).
            data = np.frombuffer(self.map, np.uint8, nbytes, offset).copy()
            if code == "|b1" and count and int(data.max()) > 1:
                raise MalformedOutputs(f"output {name!r}: booleans must be 0 or 1")
            hashed.append((name, code, dims, digest(data.data)))
            out[name] = data.view(dtype).reshape(dims)
        return out, hashed


class WorkerRegion:
    """The worker's side: maps the fd it was given, views inputs, writes outputs."""

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.size = size
        self.map = mmap.mmap(fd, size)

    def remap(self, size: int) -> None:
        if size == self.size:
            return
        old = self.map
        self.map = mmap.mmap(self.fd, size)
        self.size = size
        with contextlib.suppress(BufferError):
            old.close()

    def inputs(self, entries: Sequence[object]) -> list[Array]:
        """Zero-copy views of the inputs the daemon placed (ValueError if malformed)."""
        arrays: list[Array] = []
        for entry in entries:
            if not isinstance(entry, list | tuple) or len(entry) != 3:
                raise ValueError("an input is [dtype, dims, offset]")
            code, dims, offset = entry
            dtype = DTYPE_CODES[code]
            shape = tuple(int(d) for d in dims)
            count = math.prod(shape)
            if count:
                arrays.append(np.frombuffer(self.map, dtype, count, int(offset)).reshape(shape))
            else:
                arrays.append(np.empty(shape, dtype))
        return arrays

    def write_outputs(self, outputs: dict[str, Array]) -> list[list[object]]:
        """Copy the outputs (sorted by name) into the region; their entries. ValueError
        when a dtype is not allowed, OverflowError when they do not fit."""
        names = sorted(outputs)
        arrays = [outputs[n] for n in names]
        codes = [dtype_code(a.dtype) for a in arrays]
        offsets, end = layout([a.nbytes for a in arrays])
        if end > self.size:
            raise OverflowError(f"outputs of {end} bytes do not fit the shared region")
        entries: list[list[object]] = []
        for name, a, code, off in zip(names, arrays, codes, offsets, strict=True):
            if a.size:
                dst = np.frombuffer(self.map, DTYPE_CODES[code], a.size, off).reshape(a.shape)
                np.copyto(dst, a, casting="equiv")
                del dst
            entries.append([name, code, [int(d) for d in a.shape], off, int(a.nbytes)])
        return entries
