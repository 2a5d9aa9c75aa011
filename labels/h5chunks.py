"""The stored chunks of 1-D HDF5 datasets: where their bytes lie, and decoding them outside h5py.

h5py inflates chunks under one lock for every file; :func:`decode_whole` / :func:`decode_at` inflate the
chunks a remote source already holds (deflate and shuffle) with zlib, which releases the GIL, so granules
read in threads decode at once. Anything else (other filters, a chunk not stored or not held, a corrupt
stream) is left to h5py, which reads it and reports what is wrong.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import h5py
import numpy as np


def chunk_byte_ranges(ds: h5py.Dataset, runs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """(file offset, length) of the stored bytes holding index ranges ``runs`` of a 1-D dataset.

    Chunked: every chunk a run touches; contiguous: the runs' own bytes. Empty when unknown.
    """
    if ds.chunks is None:
        off = ds.id.get_offset()
        item = ds.dtype.itemsize
        return [] if off is None else [(off + a * item, (b - a) * item) for a, b in runs]
    c = ds.chunks[0]
    out = []
    for k in sorted({k for a, b in runs for k in range(a // c, (b - 1) // c + 1)}):
        info = ds.id.get_chunk_info_by_coord((k * c,))
        if info.byte_offset is not None:
            out.append((int(info.byte_offset), int(info.size)))
    return out


Prefetched = Callable[[int, int], "memoryview | None"]
"""Stored bytes ``(offset, length)`` a remote source already holds (None: not held)."""


def _inflate_plan(ds: h5py.Dataset) -> list[int] | None:
    """The filter ids of a 1-D chunked numeric dataset whose chunks :func:`_inflate_chunk` can decode
    (deflate and shuffle only), else None."""
    if ds.ndim != 1 or ds.chunks is None or ds.dtype.kind not in "iuf":
        return None
    dcpl = ds.id.get_create_plist()
    filters = [dcpl.get_filter(i)[0] for i in range(dcpl.get_nfilters())]
    if any(f not in (h5py.h5z.FILTER_DEFLATE, h5py.h5z.FILTER_SHUFFLE) for f in filters):
        return None
    return filters


def _inflate_chunk(ds: h5py.Dataset, k: int, filters: list[int], stored: Prefetched) -> np.ndarray | None:
    """Chunk ``k`` of ``ds`` (its first ``min(chunk, n - k * chunk)`` values) decoded from the stored bytes
    the source holds, or None (not stored, not held, or not decodable here)."""
    n, c, item = ds.shape[0], ds.chunks[0], ds.dtype.itemsize
    info = ds.id.get_chunk_info_by_coord((k * c,))
    data = None if info.byte_offset is None else stored(int(info.byte_offset), int(info.size))
    if data is None:
        return None
    buf: Any = data
    try:
        for i in reversed(range(len(filters))):  # undo the pipeline last filter first
            if info.filter_mask & (1 << i):
                continue  # this filter was skipped for this chunk
            if filters[i] == h5py.h5z.FILTER_DEFLATE:
                buf = zlib.decompress(buf)
            else:
                buf = np.frombuffer(buf, np.uint8).reshape(item, -1).T.tobytes()
    except (zlib.error, ValueError):
        return None  # h5py reads it and reports what is wrong
    if len(buf) != c * item:
        return None
    return np.frombuffer(buf, dtype=ds.dtype, count=min(c, n - k * c))


def decode_whole(ds: h5py.Dataset, stored: Prefetched) -> np.ndarray | None:
    """A whole 1-D chunked dataset decoded here from its stored chunks, outside h5py, or None when it cannot
    be (other filters than deflate and shuffle, a chunk not stored or not held, a non-numeric type).

    h5py inflates chunks under one lock for every file; zlib here releases the GIL, so granules read in
    threads decode their lat/lon at once. The result is the array ``ds[()]`` gives, bit for bit."""
    filters = _inflate_plan(ds)
    if filters is None:
        return None
    n, c = ds.shape[0], ds.chunks[0]
    out = np.empty(n, dtype=ds.dtype)
    for k in range(-(-n // c)):
        chunk = _inflate_chunk(ds, k, filters, stored)
        if chunk is None:
            return None
        out[k * c:k * c + chunk.size] = chunk
    return out


def decode_at(ds: h5py.Dataset, idx: np.ndarray, stored: Prefetched) -> np.ndarray | None:
    """``ds[idx]`` for sorted indices ``idx`` of a 1-D chunked dataset, decoded here from the stored chunks
    that hold them (only those), or None when it cannot be (as :func:`decode_whole`)."""
    filters = _inflate_plan(ds)
    if filters is None:
        return None
    c = ds.chunks[0]
    out = np.empty(idx.size, dtype=ds.dtype)
    for k in np.unique(idx // c):
        chunk = _inflate_chunk(ds, int(k), filters, stored)
        if chunk is None:
            return None
        lo, hi = np.searchsorted(idx, (k * c, (k + 1) * c))
        out[lo:hi] = chunk[idx[lo:hi] - k * c]
    return out
