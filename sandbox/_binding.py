"""Warm ONNX jobs with onnxruntime's IOBinding: inputs read, and outputs written, in place.

A warm worker's first job of an input layout runs the plain way (``session.run``, then the
outputs are copied into the shared region). That run shows the outputs' names, dtypes and
shapes; later jobs with the same layout bind the inputs where the daemon put them and the
outputs to their places right after the inputs, so onnxruntime writes the results where
the daemon reads them: no output copy in the worker and none of ``run``'s per-call
conversions.

If a binding's shapes turn out wrong (an output whose shape depends on the data),
onnxruntime refuses to run; if an output was not written in place (a graph input that is
also an output), the run is checked and found out. Either way the worker runs the job the
plain way, and stops binding.
Nothing here is trusted by the daemon, which validates the output entries as always.
"""

from __future__ import annotations

import ctypes
import math
import mmap
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._dtypes import DTYPE_CODES, dtype_code
from ._shm import WorkerRegion, aligned, layout

#: (input names, ((dtype code, dims, offset), ...)). The worker drops its binding when the
#: region is remapped, so a key never outlives the mapping its offsets are into.
LayoutKey = tuple[tuple[str, ...], tuple[tuple[str, tuple[int, ...], int], ...]]
#: (name, dtype code, shape) of each output of a plain run.
OutputSpecs = list[tuple[str, str, tuple[int, ...]]]
#: Written at the start of each bound output before a run (any 8 bytes would do).
_MARK = b"aimx\xa5\x5a\xc3\x3c"


def layout_key(names: Sequence[str], entries: Sequence[Any]) -> LayoutKey:
    """The key of a request's input layout (TypeError/ValueError if entries are malformed)."""
    return (
        tuple(str(n) for n in names),
        tuple((str(e[0]), tuple(int(d) for d in e[1]), int(e[2])) for e in entries),
    )


def output_specs(outputs: dict[str, np.ndarray]) -> OutputSpecs:
    return [(n, dtype_code(a.dtype), tuple(int(d) for d in a.shape)) for n, a in outputs.items()]


@dataclass(frozen=True, slots=True)
class Binding:
    """One input layout bound to its outputs' places in the region; ``wire`` is the output
    entries a run sends, as ``WorkerRegion.write_outputs`` would."""

    key: LayoutKey
    io: Any
    wire: list[list[object]]
    addresses: list[int]
    #: Region offsets of the outputs long enough to carry the mark.
    marked: list[int]
    map: mmap.mmap
    #: Holds the region's mapping open while the binding's raw addresses are in use.
    anchor: ctypes.c_char

    def arm(self) -> None:
        """Mark the first bytes of each output before a run (see :meth:`in_place`)."""
        for start in self.marked:
            self.map[start : start + len(_MARK)] = _MARK

    def in_place(self) -> bool:
        """Whether the last run wrote every output where it was bound. onnxruntime does,
        except when an output is a graph input itself: then it hands back the input.

        A run that overwrote every output's mark (:meth:`arm`) wrote in place: no bound
        buffer is written unless it is the output. Otherwise (an output that happens to
        start with the mark, or is shorter) the outputs' addresses are asked for: the
        slower check, so the marks come first."""
        if len(self.marked) == len(self.addresses) and all(
            self.map[start : start + len(_MARK)] != _MARK for start in self.marked
        ):
            return True
        return [v.data_ptr() for v in self.io.get_outputs()] == self.addresses


def bind(
    session: Any,
    region: WorkerRegion,
    key: LayoutKey,
    specs: OutputSpecs,
    max_output_bytes: int,
) -> Binding | None:
    """A binding for ``key`` with outputs as ``specs``, or None when they do not fit the
    region after the inputs or exceed ``max_output_bytes``."""
    names, entries = key
    if len(names) != len(entries):
        return None
    input_end = max(
        (off + math.prod(dims) * DTYPE_CODES[code].itemsize for code, dims, off in entries),
        default=0,
    )
    specs = sorted(specs)
    sizes = [math.prod(shape) * DTYPE_CODES[code].itemsize for _, code, shape in specs]
    if sum(sizes) > max_output_bytes:
        return None
    start = aligned(input_end)
    offsets, end = layout(sizes)
    if start + end > region.size:
        return None
    anchor = ctypes.c_char.from_buffer(region.map)
    base = ctypes.addressof(anchor)
    io = session.io_binding()
    for name, (code, dims, off) in zip(names, entries, strict=True):
        io.bind_input(name, "cpu", 0, DTYPE_CODES[code], list(dims), base + off)
    wire: list[list[object]] = []
    addresses: list[int] = []
    for (name, code, shape), off, size in zip(specs, offsets, sizes, strict=True):
        addresses.append(base + start + off)
        io.bind_output(name, "cpu", 0, DTYPE_CODES[code], list(shape), addresses[-1])
        wire.append([name, code, list(shape), start + off, size])
    marked = [start + off for off, size in zip(offsets, sizes, strict=True) if size >= len(_MARK)]
    return Binding(key, io, wire, addresses, marked, region.map, anchor)
