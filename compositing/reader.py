"""Window readers for HLS assets, behind a small Protocol so the engine can run on a fake.

A reader answers two questions about an asset href: its raster header (:meth:`AssetReader.info`) and the
pixels of a window (:meth:`AssetReader.read`, native dtype, no scaling, no masking). Any failure to open or
decode is raised as :class:`AssetReadError` naming the href and the cause, so the engine can skip the
scene and record why.

:class:`RasterioReader` keeps a small process-wide cache of open datasets (opening a remote COG costs a
header request; remote ones have their own bound) and applies two GDAL settings layers: ``open`` options
while opening, ``read`` options while reading blocks. Earthdata credentials are looked up *on the worker*
when an ``http(s)`` href is opened or read (``core.earthdata.gdal_options``), so they never travel in a
task graph or a log.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol, runtime_checkable

import numpy as np

from core.grid import epsg_of


class AssetReadError(RuntimeError):
    """An asset that could not be opened or decoded. ``href`` and ``reason`` say which and why."""

    def __init__(self, href: str, reason: str) -> None:
        super().__init__(f"{href}: {reason}")
        self.href = href
        self.reason = reason


@dataclass(frozen=True)
class RasterInfo:
    """Header of one single-band asset. ``epsg`` is None when the CRS has no EPSG equivalent."""

    epsg: int | None
    transform: tuple[float, float, float, float, float, float]
    width: int
    height: int
    dtype: str
    nodata: float | None


Window = tuple[int, int, int, int]
"""(row_off, col_off, height, width) in the asset's own pixel coordinates."""


@runtime_checkable
class AssetReader(Protocol):
    """What the composite engine needs from a reader (must be picklable for Dask)."""

    def info(self, href: str) -> RasterInfo: ...

    def read(self, href: str, window: Window, out: np.ndarray | None = None) -> np.ndarray:
        """Pixels of ``window``; when ``out`` (right shape and dtype) is given, fill and return it."""
        ...


@lru_cache(maxsize=256)
def _epsg_of_wkt(wkt: str) -> int | None:
    """EPSG of a WKT (cached). HLS's authority-less "UTM Zone N" WKT is recognised from its parameters
    directly; the general path (:func:`core.grid.epsg_of`) scans the PROJ database (~0.8 s)."""
    return _utm_north_epsg(wkt) or epsg_of(wkt)


def _utm_north_epsg(wkt: str) -> int | None:
    """326NN when the WKT is a WGS 84 transverse Mercator with exactly UTM zone NN north parameters."""
    from pyproj import CRS

    crs = CRS.from_wkt(wkt)
    op = crs.coordinate_operation
    if not crs.is_projected or op is None or "transverse mercator" not in op.method_name.lower():
        return None
    ell = crs.ellipsoid
    if ell is None or abs(ell.semi_major_metre - 6378137.0) > 1e-6 or abs(ell.inverse_flattening - 298.257223563) > 1e-6:
        return None
    p = {q.name.lower(): q.value for q in op.params}
    lon0 = p.get("longitude of natural origin")
    if lon0 is None or crs.axis_info[0].unit_name not in ("metre", "meter"):
        return None
    zone = round((lon0 + 183.0) / 6.0)
    expected = {"latitude of natural origin": 0.0, "longitude of natural origin": -183.0 + 6 * zone,
                "scale factor at natural origin": 0.9996, "false easting": 500000.0, "false northing": 0.0}
    if 1 <= zone <= 60 and all(abs(p.get(k, float("nan")) - v) < 1e-9 for k, v in expected.items()):
        return 32600 + zone
    return None


_SCHEMES = ("http://", "https://", "s3://", "file://")
_TRANSIENT = re.compile(
    r"HTTP (?:response code:? ?)?(?:408|429|5\d\d)\b|timed out|timeout|too slow|connection|reset by|recv failure|"
    r"transfer closed|partial file|failure when (?:receiving|sending)|got \d+ bytes, expected|read error|empty reply|ssl|could ?n.t (?:connect|resolve)|"
    r"failed to connect|curl error", re.IGNORECASE)
"""A remote open or read failing with one of these (GDAL/curl messages) is retried: the transport, not the file."""
_DOUBTFUL = re.compile(r"IO error|I/O error|read error|IReadBlock failed|TIFFReadEncoded|TIFFFill|TIFFFetch|"
                       r"not recognized as (?:being in )?a supported file format|not a TIFF|"
                       r"HTTP response code: 40[03]|failure writing output", re.IGNORECASE)
"""Errors a body cut short looks like (GDAL then sees a damaged file): retried at most ``_DOUBTFUL_TRIES`` times,
then reported as a read error of that file (a really damaged file is skipped, not taken for an outage). A 400/403
from a pre-signed URL that expired under GDAL is retried the same way: a new handle resolves a fresh URL."""
_DOUBTFUL_TRIES = 4


def _gdal_path(href: str) -> str:
    """The GDAL path of an asset href; GDAL's own virtual paths (``/vsi...``, ``vrt://``, ``NETCDF:``...)
    and other URL schemes are refused: a STAC href must not choose how (or from where) GDAL reads."""
    if href.startswith("s3://"):
        return "/vsis3/" + href[5:]
    low = href.lower()
    if low.startswith("/vsi") or (":" in href.split("/", 1)[0] and not low.startswith(_SCHEMES)):
        raise AssetReadError(href, "unsupported href: only http(s)://, s3://, file:// URLs and local paths are read")
    return href[len("file://"):] if low.startswith("file://") else href


def _is_remote(href: str) -> bool:
    return href.startswith(("http://", "https://", "s3://", "/vsicurl/"))


class _Handle:
    """An open dataset shared by threads; ``lock`` serialises its use (GDAL handles are not thread-safe)."""

    __slots__ = ("ds", "lock", "closed")

    def __init__(self, ds: Any) -> None:
        self.ds, self.lock, self.closed = ds, threading.Lock(), False

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self.ds.close()


_Key = tuple[str, str, int]
"""(href, open options, slot): a remote href may have several handles (slots), each used by one thread."""


class _HandleCache:
    """Process-wide LRU of open datasets, shared by all threads and readers with the same open options:
    memory does not grow with the number of threads, and Dask tasks in one worker reuse the handles."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: OrderedDict[_Key, _Handle] = OrderedDict()

    def get(self, key: _Key) -> _Handle | None:
        with self.lock:
            h = self.items.get(key)
            if h is not None:
                self.items.move_to_end(key)
            return h

    def put(self, key: _Key, handle: _Handle, max_open: int) -> _Handle:
        with self.lock:
            if key in self.items:  # another thread opened it meanwhile: use theirs
                handle.close()
                return self.items[key]
            self.items[key] = handle
            evicted = [self.items.popitem(last=False)[1] for _ in range(max(0, len(self.items) - max_open))]
        for old in evicted:
            old.close()
        return handle

    def drop(self, key: _Key) -> None:
        with self.lock:
            h = self.items.pop(key, None)
        if h is not None:
            h.close()


_HANDLES = _HandleCache()
_REMOTE_HANDLES = _HandleCache()  # remote datasets: their own, smaller bound (``max_open_remote``)
_OPEN_LOCKS = tuple(threading.Lock() for _ in range(256))  # remote opens, striped by href


@dataclass(frozen=True)
class RasterioReader:
    """Reads windows with rasterio; ``open_options``/``read_options`` are extra GDAL config options.

    ``max_open`` bounds the open local datasets of the process (LRU shared by threads) and
    ``max_open_remote`` the open remote ones (each holds its header, tile index and GDAL state).
    A local file has one handle, its reads serialised; a remote href gets up to ``handles_per_remote``
    handles, so that concurrent reads of one file (an I/O pool reading several windows or block runs of
    it) each wait for the network on their own handle. Another handle of an open URL costs no request
    (GDAL's ``/vsicurl/`` cache holds its header) and ~10 ms.
    Remote hrefs (``http``/``https``/``s3``) get the GDAL settings of :func:`core.earthdata.gdal_options`
    (no per-file VSI cache; Earthdata credentials, cookie jar, only for Earthdata hosts), looked up on the
    worker at each open and read, so they never travel in a task graph or a log.
    """

    open_options: dict[str, Any] = field(default_factory=dict)
    read_options: dict[str, Any] = field(default_factory=dict)
    max_open: int = 512
    max_open_remote: int = 384
    handles_per_remote: int = 4

    def _env(self, href: str, for_read: bool) -> dict[str, Any]:
        opts: dict[str, Any] = {}
        if _is_remote(href):
            from core.earthdata import gdal_options

            opts.update(gdal_options(href, for_read=for_read))
        opts.update(self.read_options if for_read else self.open_options)
        return opts

    def _cache(self, href: str) -> tuple[_HandleCache, int]:
        return (_REMOTE_HANDLES, self.max_open_remote) if _is_remote(href) else (_HANDLES, self.max_open)

    def _key(self, href: str, slot: int = 0) -> _Key:
        return (href, repr(sorted(self.open_options.items())), slot)

    def _slots(self, href: str) -> int:
        return max(1, self.handles_per_remote) if _is_remote(href) else 1

    def _handle(self, href: str, slot: int = 0) -> _Handle:
        key = self._key(href, slot)
        cache, bound = self._cache(href)
        h = cache.get(key)
        if h is not None and not h.closed:
            return h
        if not _is_remote(href):
            return cache.put(key, self._open(href), bound)
        with _OPEN_LOCKS[hash(href) % len(_OPEN_LOCKS)]:  # one open of a remote href at a time
            h = cache.get(key)
            if h is not None and not h.closed:
                return h
            try:
                handle = self._open(href)
            except AssetReadError:
                # GDAL caches a failed open's answer ("does not exist") for the URL: other threads opening
                # another handle of it must not find that, so it goes before the next open may start
                from core.reads import clear_gdal_cache

                clear_gdal_cache(_gdal_path(href))
                raise
        return cache.put(key, handle, bound)

    def _open(self, href: str) -> _Handle:
        import rasterio

        try:
            with rasterio.Env(**self._env(href, for_read=False)):
                return _Handle(rasterio.open(_gdal_path(href)))
        except (rasterio.errors.RasterioError, OSError) as exc:
            raise AssetReadError(href, f"cannot open: {_cause(exc)}") from exc

    def _locked_handle(self, href: str) -> _Handle:
        """A handle of ``href`` whose lock the caller now holds (and must release): the first idle slot,
        else a new slot while fewer than :meth:`_slots` are open, else the first slot (waiting for it)."""
        n = self._slots(href)
        if n > 1:
            cache, _ = self._cache(href)
            for slot in range(n):
                h = cache.get(self._key(href, slot))
                if h is None:
                    h = self._handle(href, slot)
                if h.lock.acquire(blocking=False):
                    return h
        h = self._handle(href)
        h.lock.acquire()
        return h

    def info(self, href: str) -> RasterInfo:
        return self._retrying(href, self._info)

    def read(self, href: str, window: Window, out: np.ndarray | None = None) -> np.ndarray:
        """Pixels of ``window`` (see :class:`AssetReader`); a remote read failing for a transient reason is
        retried (:mod:`core.reads`), an endpoint failing for a whole budget raises ``EndpointDownError``."""
        return self._retrying(href, lambda h: self._read(h, window, out))

    def _retrying(self, href: str, fn: Any) -> Any:
        if not _is_remote(href):
            return fn(href)
        from core.earthdata_http import host_of
        from core.reads import Transient, clear_gdal_cache, with_retries

        doubtful = [0]

        def attempt(_: int) -> Any:
            try:
                return fn(href)
            except AssetReadError as exc:
                if _TRANSIENT.search(exc.reason):
                    raise Transient(exc.reason) from None
                if _DOUBTFUL.search(exc.reason) and doubtful[0] < _DOUBTFUL_TRIES:
                    doubtful[0] += 1
                    raise Transient(exc.reason) from None
                raise

        def reset() -> None:  # a new handle, and nothing of the failed answer left in GDAL's cache
            self.forget(href)
            clear_gdal_cache(_gdal_path(href))

        return with_retries(attempt, url=href, host=host_of(href), on_retry=reset)

    def _info(self, href: str) -> RasterInfo:
        h = self._handle(href)
        with h.lock:
            ds = h.ds
            if ds.count < 1:
                raise AssetReadError(href, "raster has no band")
            return RasterInfo(epsg=_epsg_of_wkt(ds.crs.to_wkt()) if ds.crs else None,
                              transform=tuple(ds.transform)[:6], width=ds.width, height=ds.height,
                              dtype=ds.dtypes[0], nodata=ds.nodata)

    def _read(self, href: str, window: Window, out: np.ndarray | None) -> np.ndarray:
        import rasterio
        from rasterio.windows import Window as RWindow

        row, col, h, w = window
        env = self._env(href, for_read=True)
        for _ in range(3):  # a handle closed by another thread's eviction is reopened
            handle = self._locked_handle(href)
            try:
                if handle.closed:
                    continue
                ds = handle.ds
                if out is not None and (out.shape != (h, w) or out.dtype != np.dtype(ds.dtypes[0])):
                    out = None  # let the caller see the file's real dtype
                # rasterio reshapes the array it is given to (1, h, w) and leaves it so when the read fails:
                # give it a view of ``out`` so that the caller's array keeps its shape for a retry
                tgt = None if out is None else out.view()
                try:
                    if not env:  # local file, no options: skip rasterio.Env's ~1 ms of set-up per call
                        arr = ds.read(1, window=RWindow(col, row, w, h), out=tgt)
                    else:
                        with rasterio.Env(**env):
                            arr = ds.read(1, window=RWindow(col, row, w, h), out=tgt)
                    return arr if out is None else out
                except (rasterio.errors.RasterioError, OSError) as exc:
                    err = exc
            finally:
                handle.lock.release()
            self.forget(href)
            raise AssetReadError(href, f"cannot read window rows {row}:{row + h} cols {col}:{col + w}: "
                                       f"{_cause(err)}") from err
        raise AssetReadError(href, "dataset handle kept being evicted (raise max_open)")

    def forget(self, href: str) -> None:
        """Close and drop the cached datasets of ``href`` (after an error, so a retry reopens it)."""
        cache = self._cache(href)[0]
        for slot in range(self._slots(href)):
            cache.drop(self._key(href, slot))


def _cause(exc: BaseException) -> str:
    """The most specific GDAL message behind a rasterio error (rasterio's own is often generic)."""
    msgs = [str(exc)]
    inner = exc.__cause__ or exc.__context__
    while inner is not None and len(msgs) < 4:
        msgs.append(str(inner))
        inner = inner.__cause__ or inner.__context__
    specific = [m for m in msgs if m and "See previous exception" not in m]
    return (specific[-1] if specific else msgs[0]).strip()[:400]
