"""The per-chunk masked-mean kernel: bounded memory, reads only what a clear pixel needs.

For one output window it loops over the scenes, reads the Fmask window, and reads the six band windows
only in the 256-px file blocks where Fmask shows at least one clear pixel. It accumulates an int32 sum
per band and a uint16 count, so memory is set by the window size, never by the number of scenes.

An observation (scene, pixel) is valid when its Fmask is not fill (255), none of the masked conditions is
set, and none of the six band values is the nodata -9999 (HLS nodata swaths are common to all bands; one
count then describes all six means). A scene contributes to a window atomically: if any of its reads
fails, nothing of it is added to that window and the failure is returned.

The mean is returned as int16 HLS units, rounded to the nearest integer (ties to even): at most 0.5 units
(0.00005 reflectance) from the exact mean, and half the bytes of float32 to write, ship and decode.
Scratch arrays (Fmask, clear mask, the six band windows, the sums) are per-thread buffers reused across
scenes and windows, so a thread allocates no array per scene (see :class:`_Buffers`).

Remote scenes (``http(s)``/``s3`` hrefs) are read concurrently instead (:mod:`compositing.fetch`): a
window's scenes are fetched a few at a time on the process's I/O pool, each scene's six band reads at
once, and summed as they arrive. The sums are integers, so the order of the scenes does not change a bit
of the result; a scene still contributes to a window atomically.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Executor, wait
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.bands import FMASK, MODEL_BANDS
from core.constants import HLS_NODATA

from .fetch import SceneFetch, cancel_all, io_pool, is_remote, prefetch_depth
from .fmask import FmaskRule, clear_mask
from .reader import AssetReader, AssetReadError

BANDS = MODEL_BANDS
NODATA = HLS_NODATA
MAX_SCENES = 32_767  # the count is stored in the int16 composite


@dataclass(frozen=True)
class SceneSource:
    """One scene as the kernel sees it: hrefs of the six bands + Fmask, and where the file grid lies.

    ``row_off``/``col_off``: position of the output grid's upper-left pixel in the file's pixels;
    ``height``/``width``: the file's shape (pixels outside it are nodata).
    """

    id: str
    hrefs: dict[str, str]
    row_off: int
    col_off: int
    height: int
    width: int


def _skipped(sc: SceneSource, exc: AssetReadError) -> dict[str, str]:
    """The record of a scene left out of a window: its id, the asset (band) whose read failed, why."""
    asset = next((a for a, v in sc.hrefs.items() if v == exc.href), "?")
    return {"id": sc.id, "asset": asset, "reason": exc.reason}


@dataclass
class ChunkResult:
    """Mean (6 bands, int16 HLS units, -9999 where count < min_observations) + count (int16) for one window."""

    window: tuple[int, int, int, int]
    data: np.ndarray
    used: list[str] = field(default_factory=list)
    failures: list[dict[str, str]] = field(default_factory=list)


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """Index ranges [start, stop) of consecutive True values."""
    out: list[tuple[int, int]] = []
    start = None
    for i, f in enumerate(flags):
        if f and start is None:
            start = i
        elif not f and start is not None:
            out.append((start, i))
            start = None
    if start is not None:
        out.append((start, len(flags)))
    return out


def _band_windows(clear: np.ndarray, r0: int, c0: int, block: int) -> list[tuple[int, int, int, int]]:
    """Sub-windows (relative row, col, h, w) of file-block rows/runs holding at least one clear pixel."""
    h, w = clear.shape
    row_edges = [0, *[b - r0 for b in range((r0 // block + 1) * block, r0 + h, block)], h]
    col_edges = [0, *[b - c0 for b in range((c0 // block + 1) * block, c0 + w, block)], w]
    n_cols = len(col_edges) - 1
    wins = []
    for i in range(len(row_edges) - 1):
        ra, rb = row_edges[i], row_edges[i + 1]
        strip = clear[ra:rb]
        flags = np.array([strip[:, col_edges[j]:col_edges[j + 1]].any() for j in range(n_cols)])
        if flags.all():
            wins.append((ra, 0, rb - ra, w))
            continue
        for a, b in _runs(flags):
            wins.append((ra, col_edges[a], rb - ra, col_edges[b] - col_edges[a]))
    # whole window when every block is needed: one read per band instead of one per block row
    if sum(wh * ww for _, _, wh, ww in wins) == h * w:
        return [(0, 0, h, w)]
    return wins


class _Buffers(threading.local):
    """Per-thread scratch arrays, grown on demand and reused: ``get`` returns a C-contiguous view of the
    requested shape on a flat buffer (valid until the next ``get`` of the same name in this thread)."""

    def __init__(self) -> None:
        self.flat: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        n = math.prod(shape)
        buf = self.flat.get(name)
        if buf is None or buf.size < n or buf.dtype != np.dtype(dtype):
            buf = self.flat[name] = np.empty(n, dtype)
        return buf[:n].reshape(shape)


_BUF = _Buffers()


def _read_scene(reader: AssetReader, sc: SceneSource, fwin: tuple[int, int, int, int], rule: FmaskRule,
                block: int) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int, int, int]]] | None:
    """(clear mask, int16 bands, the sub-windows read) of one scene over a file window, or None when
    nothing is clear.

    Mask and bands are per-thread buffers; only the sub-windows read (blocks with a clear pixel) are
    defined and tested for nodata; outside them the mask is False and the bands are undefined.
    """
    r0, c0, h, w = fwin
    fm = reader.read(sc.hrefs[FMASK], fwin, out=_BUF.get("fmask", (h, w), np.uint8))
    if fm.dtype != np.uint8:
        raise AssetReadError(sc.hrefs[FMASK], f"Fmask must be uint8, got {fm.dtype}")
    clear = clear_mask(fm, rule, out=_BUF.get("clear", (h, w), np.bool_))
    if not clear.any():
        return None
    wins = _band_windows(clear, r0, c0, block)
    whole = wins == [(0, 0, h, w)]
    bands = _BUF.get("bands", (len(BANDS), h, w), np.int16)
    ok = _BUF.get("ok", (h, w), np.bool_)
    for rr, cc, hh, ww in wins:
        sub = (slice(rr, rr + hh), slice(cc, cc + ww))
        for i, b in enumerate(BANDS):
            dst = bands[i][sub]
            arr = reader.read(sc.hrefs[b], (r0 + rr, c0 + cc, hh, ww), out=dst if whole else None)
            if arr.dtype != np.int16:
                raise AssetReadError(sc.hrefs[b], f"band must be int16, got {arr.dtype}")
            if arr is not dst:
                dst[...] = arr
            np.not_equal(dst, NODATA, out=ok[sub])  # one band at nodata invalidates the observation
            np.logical_and(clear[sub], ok[sub], out=clear[sub])
    return clear, bands, wins


def _accumulate(sums: np.ndarray, count: np.ndarray, clear: np.ndarray, bands: np.ndarray,
                wins: list[tuple[int, int, int, int]]) -> None:
    """sums += bands where clear, count += clear, within the sub-windows ``wins`` only (elsewhere clear
    is False): all-cloud blocks cost no arithmetic either. ``bands`` is overwritten.

    Masking is a bitwise AND with 0 / -1 (all bits set), band by band so that the masked band is still
    in cache when it is added to its int32 sum.
    """
    for rr, cc, hh, ww in wins:
        sub = (slice(rr, rr + hh), slice(cc, cc + ww))
        c = clear[sub]
        keep = None
        if not c.all():
            keep = _BUF.get("keep", c.shape, np.int16)
            np.negative(c.view(np.int8), out=keep, casting="safe")
        for i in range(bands.shape[0]):
            b, s = bands[i][sub], sums[i][sub]
            if keep is not None:
                np.bitwise_and(b, keep, out=b)
            np.add(s, b, out=s, casting="safe")
        np.add(count[sub], c, out=count[sub], casting="unsafe")


def _sub_windows(window: tuple[int, int, int, int], sub: int) -> list[tuple[int, int, int, int]]:
    """``window`` cut into pieces of at most ``sub`` x ``sub`` pixels, (row, col, h, w) relative to it."""
    _, _, h, w = window
    return [(r, c, min(sub, h - r), min(sub, w - c)) for r in range(0, h, sub) for c in range(0, w, sub)]


def _window_pass(reader: AssetReader, scenes: list[SceneSource], window: tuple[int, int, int, int],
                 rule: FmaskRule, block: int, sub: int, out: np.ndarray, min_observations: int,
                 used: set[str], fail_fast: bool) -> dict[str, str] | None:
    """Fill ``out`` (7, h, w) with the composite of ``scenes`` over ``window``, piece by piece: all scenes
    of one ``sub`` x ``sub`` piece are summed before the next piece, so its int32 sums stay in the CPU
    cache (half the time of summing 1024 x 1024 windows scene by scene). Returns the first failure
    (``{"id", "asset", "reason"}``) instead of finishing, or None."""
    row, col, h, w = window
    k = (row // max(h, 1) * 7 + col // max(w, 1)) % max(len(scenes), 1)
    order = scenes[k:] + scenes[:k]  # windows start at different scenes: threads rarely share a file
    for pr, pc, ph, pw in _sub_windows(window, sub):
        sums = _BUF.get("sums", (len(BANDS), ph, pw), np.int32)
        sums.fill(0)
        count = np.zeros((ph, pw), dtype=np.uint16)
        for sc in order:
            fr, fc = row + pr + sc.row_off, col + pc + sc.col_off
            r0, c0 = max(fr, 0), max(fc, 0)
            r1, c1 = min(fr + ph, sc.height), min(fc + pw, sc.width)
            if r1 <= r0 or c1 <= c0:
                continue
            try:
                got = _read_scene(reader, sc, (r0, c0, r1 - r0, c1 - c0), rule, block)
            except AssetReadError as exc:
                if fail_fast:
                    raise
                return _skipped(sc, exc)
            used.add(sc.id)
            if got is not None:
                piece = (slice(r0 - fr, r1 - fr), slice(c0 - fc, c1 - fc))
                _accumulate(sums[(slice(None), *piece)], count[piece], *got)
        out[:, pr:pr + ph, pc:pc + pw] = finalize(sums, count, min_observations)
    return None


def _clip_wins(wins: list[tuple[int, int, int, int]], r0: int, c0: int, r1: int, c1: int
               ) -> list[tuple[int, int, int, int]]:
    """``wins`` (row, col, h, w) cut to the rectangle rows r0:r1, cols c0:c1, relative to (r0, c0)."""
    out = []
    for rr, cc, hh, ww in wins:
        a, b = max(rr, r0), min(rr + hh, r1)
        c, d = max(cc, c0), min(cc + ww, c1)
        if a < b and c < d:
            out.append((a - r0, c - c0, b - a, d - c))
    return out


_Plan = tuple[SceneSource, tuple[int, int, int, int], tuple[int, int]]
"""A scene of a window: the scene, its file window (row, col, h, w), where that lies in the output window."""


def _accumulate_batch(sums: np.ndarray, count: np.ndarray, batch: list[tuple[_Plan, Any]],
                      pieces: list[tuple[int, int, int, int]]) -> None:
    """Add fetched scenes (whole-window sums and count) piece by piece, so that a piece's sums stay in
    the CPU cache while the batch's scenes are added to it."""
    for pr, pc, ph, pw in pieces:
        for (_, fwin, (oy, ox)), (clear, bands, wins) in batch:
            fh, fw = fwin[2], fwin[3]
            ia, ib = max(pr, oy), min(pr + ph, oy + fh)
            ja, jb = max(pc, ox), min(pc + pw, ox + fw)
            if ia >= ib or ja >= jb:
                continue
            sub = _clip_wins(wins, ia - oy, ja - ox, ib - oy, jb - ox)
            if not sub:
                continue
            fs = (slice(ia - oy, ib - oy), slice(ja - ox, jb - ox))
            _accumulate(sums[:, ia:ib, ja:jb], count[ia:ib, ja:jb], clear[fs], bands[(slice(None), *fs)], sub)


def _window_pass_concurrent(reader: AssetReader, scenes: list[SceneSource], window: tuple[int, int, int, int],
                            rule: FmaskRule, block: int, sub: int, out: np.ndarray, min_observations: int,
                            used: set[str], fail_fast: bool, io: Executor, depth: int) -> dict[str, str] | None:
    """:func:`_window_pass` for remote scenes: each scene's whole window is fetched on ``io`` (at most
    ``depth`` scenes in flight, see :class:`compositing.fetch.SceneFetch`), and the scenes are summed
    as they arrive. Same result bit for bit (integer sums); same failure contract."""
    row, col, h, w = window
    plans: deque[_Plan] = deque()
    for sc in scenes:
        fr, fc = row + sc.row_off, col + sc.col_off
        r0, c0 = max(fr, 0), max(fc, 0)
        r1, c1 = min(fr + h, sc.height), min(fc + w, sc.width)
        if r1 > r0 and c1 > c0:
            plans.append((sc, (r0, c0, r1 - r0, c1 - c0), (r0 - fr, c0 - fc)))
    sums = _BUF.get("window_sums", (len(BANDS), h, w), np.int32)
    sums.fill(0)
    count = np.zeros((h, w), dtype=np.uint16)
    pieces = _sub_windows(window, sub)
    pending: list[tuple[_Plan, SceneFetch]] = []
    try:
        while plans or pending:
            while plans and len(pending) < depth:
                plan = plans.popleft()
                pending.append((plan, SceneFetch(reader, plan[0].hrefs, plan[1], rule, block, io, _band_windows)))
            wait([f.future for _, f in pending], return_when=FIRST_COMPLETED)
            ready = [(p, f) for p, f in pending if f.future.done()]
            pending = [(p, f) for p, f in pending if not f.future.done()]
            batch = []
            for plan, f in ready:
                sc = plan[0]
                try:
                    got = f.result()
                except AssetReadError as exc:
                    if fail_fast:
                        raise
                    return _skipped(sc, exc)
                used.add(sc.id)
                if got is not None:
                    batch.append((plan, got))
            _accumulate_batch(sums, count, batch, pieces)
            del batch, ready
    finally:
        cancel_all([f for _, f in pending])
    for pr, pc, ph, pw in pieces:
        out[:, pr:pr + ph, pc:pc + pw] = finalize(sums[:, pr:pr + ph, pc:pc + pw], count[pr:pr + ph, pc:pc + pw],
                                                  min_observations)
    return None


def composite_window(reader: AssetReader, scenes: list[SceneSource], window: tuple[int, int, int, int],
                     rule: FmaskRule, min_observations: int = 1, fail_fast: bool = False,
                     block: int = 256, sub: int = 512, io: Executor | None = None,
                     prefetch: int | None = None) -> ChunkResult:
    """Masked mean of ``scenes`` over ``window`` = (row, col, height, width) of the output grid.

    A scene whose read fails is left out of the whole window (the window is recomputed without it), and
    its failure is recorded; with ``fail_fast`` the :class:`AssetReadError` propagates. With ``io`` (an
    executor: the remote I/O pool) the scenes are read concurrently, ``prefetch`` scenes at a time
    (default :func:`compositing.fetch.prefetch_depth`): the same result, fewer waits on the network.
    """
    if len(scenes) > MAX_SCENES:
        raise ValueError(f"at most {MAX_SCENES} scenes per tile, got {len(scenes)}")
    _, _, h, w = window
    out = np.empty((len(BANDS) + 1, h, w), dtype=np.int16)
    failures: list[dict[str, str]] = []
    depth = max(1, prefetch or prefetch_depth()) if io is not None else 0
    while True:
        bad = {f["id"] for f in failures}
        active = [s for s in scenes if s.id not in bad]
        used: set[str] = set()
        if io is not None:
            failed = _window_pass_concurrent(reader, active, window, rule, block, sub, out, min_observations, used,
                                             fail_fast, io, depth)
        else:
            failed = _window_pass(reader, active, window, rule, block, sub, out, min_observations, used, fail_fast)
        if failed is None:
            break
        failures.append(failed)
    return ChunkResult(window=window, data=out, used=[s.id for s in active if s.id in used], failures=failures)


def finalize(sums: np.ndarray, count: np.ndarray, min_observations: int) -> np.ndarray:
    """(7, h, w) int16: per-band mean rounded to the nearest integer, ties to even (-9999 where
    count < min_observations), and the count.

    The quotient is computed in float64, whose error (< 1e-11 for |sum| < 2**31) can never move it across
    a half-integer (at least 1 / (2 * count) > 1e-5 away unless exactly on it): the rounding is exact.
    """
    out = np.empty((sums.shape[0] + 1, *count.shape), dtype=np.int16)
    bad = count < max(min_observations, 1)
    safe = np.maximum(count, 1)
    q = _BUF.get("quotient", count.shape, np.float64)
    for i in range(sums.shape[0]):
        np.divide(sums[i], safe, out=q)
        np.rint(q, out=q)
        np.copyto(out[i], q, casting="unsafe")
        np.copyto(out[i], NODATA, where=bad)
    out[-1] = count
    return out


def chunk_task(reader: AssetReader, scenes: list[SceneSource], window: tuple[int, int, int, int],
               rule: FmaskRule, min_observations: int, fail_fast: bool, gdal_cache_mb: int) -> ChunkResult:
    """Dask/thread task wrapper: bounds GDAL's block cache (and malloc arenas, see
    :func:`compositing.runner.limit_malloc_arenas`), then runs :func:`composite_window`, on the process's
    remote I/O pool (:func:`compositing.fetch.io_pool`) when any scene is read over the network."""
    import rasterio

    from .runner import limit_malloc_arenas

    limit_malloc_arenas()
    # In bytes: rasterio 1.4 / GDAL 3.10 read a small GDAL_CACHEMAX (e.g. 64) as a cache of almost nothing
    # (every block decoded again for each row read: measured 14 s instead of 0.05 s for a 3-band preview),
    # and the setting outlives the Env in other threads of the process.
    env: dict[str, Any] = {"GDAL_CACHEMAX": gdal_cache_mb * 1024 * 1024} if gdal_cache_mb else {}
    with rasterio.Env(**env):
        remote = any(is_remote(href) for sc in scenes for href in sc.hrefs.values())
        return composite_window(reader, scenes, window, rule, min_observations, fail_fast,
                                io=io_pool() if remote else None)
