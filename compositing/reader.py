"""Window readers for HLS assets, behind a small Protocol so the engine can run on a fake.

A reader answers two questions about an asset href: its raster header (:meth:`AssetReader.info`) and the
pixels of a window (:meth:`AssetReader.read`, native dtype, no scaling, no masking). Any failure to open or
decode is raised as :class:`AssetReadError` naming the href and the cause, so the engine can skip the
scene and record why.

:class:`RasterioReader` keeps a small per-thread cache of open datasets (opening a remote COG costs a
header request) and applies two GDAL settings layers: ``open`` options while opening, ``read`` options
while reading blocks. Earthdata credentials are looked up *on the worker* the first time an ``http(s)``
href is opened (``compositing.earthdata``), so they never travel in a task graph or a log.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .grid import epsg_of


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
    directly; the general path (:func:`compositing.grid.epsg_of`) scans the PROJ database (~0.8 s)."""
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


def _gdal_path(href: str) -> str:
    if href.startswith("s3://"):
        return "/vsis3/" + href[5:]
    return href


_CREDS_LOCK = threading.Lock()
_CREDS_CACHE: dict[str, dict[str, Any]] = {}


def _earthdata_options(for_read: bool) -> dict[str, Any]:
    """GDAL options with this process's Earthdata credentials (looked up once per process)."""
    key = "read" if for_read else "open"
    with _CREDS_LOCK:
        if key not in _CREDS_CACHE:
            from .earthdata import earthdata_credentials, gdal_env_options

            _CREDS_CACHE[key] = gdal_env_options(earthdata_credentials(), for_read=for_read)
        return _CREDS_CACHE[key]


@dataclass(frozen=True)
class RasterioReader:
    """Reads windows with rasterio; ``open_options``/``read_options`` are extra GDAL config options.

    ``max_open`` bounds the open datasets per thread (LRU). Remote hrefs (``http``/``https``/``s3``) get
    the Earthdata GDAL settings of :func:`compositing.earthdata.gdal_env_options` as well.
    """

    open_options: dict[str, Any] = field(default_factory=dict)
    read_options: dict[str, Any] = field(default_factory=dict)
    max_open: int = 256

    def __post_init__(self) -> None:
        object.__setattr__(self, "_local", threading.local())

    def __getstate__(self) -> dict[str, Any]:
        return {"open_options": self.open_options, "read_options": self.read_options,
                "max_open": self.max_open}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            object.__setattr__(self, k, v)
        object.__setattr__(self, "_local", threading.local())

    def _env(self, href: str, for_read: bool) -> dict[str, Any]:
        opts: dict[str, Any] = {}
        if href.startswith(("http://", "https://", "s3://")):
            opts.update(_earthdata_options(for_read))
        opts.update(self.read_options if for_read else self.open_options)
        return opts

    def _dataset(self, href: str) -> Any:
        import rasterio

        cache: OrderedDict[str, Any] | None = getattr(self._local, "cache", None)
        if cache is None:
            cache = OrderedDict()
            self._local.cache = cache
        ds = cache.get(href)
        if ds is not None:
            cache.move_to_end(href)
            return ds
        try:
            with rasterio.Env(**self._env(href, for_read=False)):
                ds = rasterio.open(_gdal_path(href))
        except (rasterio.errors.RasterioError, OSError) as exc:
            raise AssetReadError(href, f"cannot open: {_cause(exc)}") from exc
        cache[href] = ds
        while len(cache) > self.max_open:
            _, old = cache.popitem(last=False)
            old.close()
        return ds

    def info(self, href: str) -> RasterInfo:
        ds = self._dataset(href)
        if ds.count < 1:
            raise AssetReadError(href, "raster has no band")
        return RasterInfo(epsg=_epsg_of_wkt(ds.crs.to_wkt()) if ds.crs else None, transform=tuple(ds.transform)[:6],
                          width=ds.width, height=ds.height, dtype=ds.dtypes[0], nodata=ds.nodata)

    def read(self, href: str, window: Window, out: np.ndarray | None = None) -> np.ndarray:
        import rasterio
        from rasterio.windows import Window as RWindow

        ds = self._dataset(href)
        row, col, h, w = window
        env = self._env(href, for_read=True)
        try:
            if out is not None and (out.shape != (h, w) or out.dtype != np.dtype(ds.dtypes[0])):
                out = None  # let the caller see the file's real dtype
            if not env:  # local file, no options: skip rasterio.Env's ~1 ms of set-up per call
                return ds.read(1, window=RWindow(col, row, w, h), out=out)
            with rasterio.Env(**env):
                return ds.read(1, window=RWindow(col, row, w, h), out=out)
        except (rasterio.errors.RasterioError, OSError) as exc:
            self.forget(href)
            raise AssetReadError(href, f"cannot read window rows {row}:{row + h} cols {col}:{col + w}: "
                                       f"{_cause(exc)}") from exc

    def forget(self, href: str) -> None:
        """Close and drop a cached dataset (after an error, so a retry reopens it)."""
        cache = getattr(self._local, "cache", None)
        if cache is not None and href in cache:
            cache.pop(href).close()

    def close(self) -> None:
        """Close this thread's cached datasets."""
        cache = getattr(self._local, "cache", None)
        while cache:
            cache.popitem()[1].close()


def _cause(exc: BaseException) -> str:
    """The most specific GDAL message behind a rasterio error (rasterio's own is often generic)."""
    msgs = [str(exc)]
    inner = exc.__cause__ or exc.__context__
    while inner is not None and len(msgs) < 4:
        msgs.append(str(inner))
        inner = inner.__cause__ or inner.__context__
    specific = [m for m in msgs if m and "See previous exception" not in m]
    return (specific[-1] if specific else msgs[0]).strip()[:400]
