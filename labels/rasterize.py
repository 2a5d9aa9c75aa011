"""Rasterize GEDI shots onto a composite's grid: per-pixel mean AGBD and shot count.

A shot belongs to the pixel that contains its footprint centre (``lon_lowestmode``/``lat_lowestmode``
projected to the grid CRS); pixel edges are half-open: ``col = floor((x - x0) / a)``,
``row = floor((y - y0) / e)``. Sums are accumulated in float64 by ``np.bincount`` (weights are float64
there), the mean is stored as float32.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compositing.grid import Grid
from compositing.io_utils import atomic_path


@dataclass(frozen=True)
class LabelRaster:
    """``agbd``: float32 mean Mg/ha, ``nodata`` where ``count == 0``; ``count``: shots per pixel (int32)."""

    agbd: np.ndarray
    count: np.ndarray
    nodata: float

    @property
    def n_labelled(self) -> int:
        return int((self.count > 0).sum())

    @property
    def all_nodata(self) -> bool:
        return self.n_labelled == 0


def project_lonlat(lon: np.ndarray, lat: np.ndarray, crs: str) -> tuple[np.ndarray, np.ndarray]:
    """Lon/lat degrees (EPSG:4326) to x/y metres in ``crs`` (always_xy)."""
    from pyproj import Transformer

    t = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    x, y = t.transform(np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64))
    return np.asarray(x), np.asarray(y)


_STEP = 1 << 16  # points per block: the temporaries stay in the CPU cache


def _inside_index(x: np.ndarray, y: np.ndarray, grid: Grid) -> tuple[np.ndarray, np.ndarray | None]:
    """(flat index of the points inside the grid, inside mask or None when all are inside).

    Fractional pixel coordinates ``(x - x0) / a``, ``(y - y0) / e`` (float64) are checked against
    ``[0, width)`` / ``[0, height)`` before truncation, so truncation equals ``floor``; NaN and inf fail.
    Computed in blocks of ``_STEP`` points to keep the temporaries in cache.
    """
    a, _, c, _, e, f = grid.transform
    n = x.shape[0]
    flat = np.empty(n, dtype=np.int64)
    inside = np.empty(n, dtype=bool)
    tc, tr = np.empty(min(n, _STEP)), np.empty(min(n, _STEP))
    tmp = np.empty(min(n, _STEP), dtype=bool)
    for s in range(0, n, _STEP):
        m = min(_STEP, n - s)
        bc, br, bt, ok = tc[:m], tr[:m], tmp[:m], inside[s:s + m]
        np.subtract(x[s:s + m], c, out=bc)
        bc /= a
        np.subtract(y[s:s + m], f, out=br)
        br /= e
        np.greater_equal(bc, 0, out=ok)
        ok &= np.less(bc, grid.width, out=bt)
        ok &= np.greater_equal(br, 0, out=bt)
        ok &= np.less(br, grid.height, out=bt)
        if not ok.all():  # keep NaN/inf out of the integer casts
            bc[~ok] = 0
            br[~ok] = 0
        fl = flat[s:s + m]
        np.copyto(fl, br, casting="unsafe")
        fl *= grid.width
        fl += bc.astype(np.int64)
    if inside.all():
        return flat, None
    return flat[inside], inside


def pixel_index(x: np.ndarray, y: np.ndarray, grid: Grid) -> np.ndarray:
    """Flat pixel index ``row * width + col`` of each point, -1 outside the grid (or non-finite)."""
    flat, mask = _inside_index(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64), grid)
    if mask is None:
        return flat
    out = np.full(mask.shape, -1, dtype=np.int64)
    out[mask] = flat
    return out


def rasterize_mean(x: np.ndarray, y: np.ndarray, values: np.ndarray, grid: Grid,
                   nodata: float = -9999.0) -> LabelRaster:
    """Mean of ``values`` per pixel for points ``x``/``y`` in the grid CRS; points outside are ignored."""
    flat, mask = _inside_index(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64), grid)
    values = np.asarray(values)
    if mask is not None:
        values = values[mask]
    size = grid.width * grid.height
    count = np.bincount(flat, minlength=size)
    total = np.bincount(flat, weights=values, minlength=size).astype(np.float64, copy=False)  # f64 sums
    agbd = np.full(size, nodata, dtype=np.float32)
    np.divide(total, count, out=agbd, where=count > 0, casting="unsafe")  # f64 mean rounded to f32
    return LabelRaster(agbd.reshape(grid.shape), count.astype(np.int32).reshape(grid.shape), float(nodata))


def rasterize_shots(lon: np.ndarray, lat: np.ndarray, agbd: np.ndarray, grid: Grid,
                    nodata: float = -9999.0) -> LabelRaster:
    """:func:`rasterize_mean` for lon/lat shots (projected to the grid CRS first)."""
    x, y = project_lonlat(lon, lat, grid.crs)
    return rasterize_mean(x, y, np.asarray(agbd), grid, nodata)


ENGINE_VERSION = "1"


def software_version() -> str:
    """``agb-pipeline <version> labels-engine <n>`` (the SOFTWARE_VERSION tag, as the composites write)."""
    try:
        from importlib.metadata import version

        return f"agb-pipeline {version('agb-pipeline')} labels-engine {ENGINE_VERSION}"
    except Exception:  # noqa: BLE001 - metadata absent in a bare checkout
        return f"agb-pipeline (unversioned) labels-engine {ENGINE_VERSION}"


def write_label_cog(path: str | Path, raster: LabelRaster, grid: Grid, tags: dict[str, Any]) -> Path:
    """Write the 2-band float32 label COG (``agbd``, ``shot_count``) atomically; returns the path.

    Both bands carry the dataset nodata tag; ``shot_count`` is 0 (a real count) where no shot fell.
    """
    import rasterio

    path = Path(path)
    all_tags = {"UNITS": "Mg/ha", "PRODUCT": "GEDI L4A agbd mean per pixel", "NODATA": str(raster.nodata),
                "MGRS_TILE": grid.tile, "SOFTWARE_VERSION": software_version(), "GRID": json.dumps(grid.to_dict()),
                "N_LABELLED_PIXELS": str(raster.n_labelled), "N_SHOTS": str(int(raster.count.sum()))}
    all_tags.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in tags.items()})
    profile = dict(driver="COG", width=grid.width, height=grid.height, count=2, dtype="float32",
                   crs=grid.crs, transform=grid.affine, nodata=raster.nodata, compress="deflate",
                   predictor=2, blocksize=256, overview_resampling="average", BIGTIFF="IF_SAFER")
    with atomic_path(path) as tmp, rasterio.open(tmp, "w", **profile) as ds:
        ds.write(raster.agbd, 1)
        ds.write(raster.count.astype(np.float32), 2)
        ds.set_band_description(1, "agbd")
        ds.set_band_description(2, "shot_count")
        ds.update_tags(**all_tags)
        ds.update_tags(1, BAND_NAME="agbd", UNITS="Mg/ha", STATISTIC="mean of GEDI L4A agbd of the shots in the pixel")
        ds.update_tags(2, BAND_NAME="shot_count", UNITS="shots", STATISTIC="number of shots averaged")
    return path
