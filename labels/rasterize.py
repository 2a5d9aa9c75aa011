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

from core.constants import AGB_UNITS, LABEL_NODATA
from core.files import atomic_path
from core.grid import Grid


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
_POLY_DEGREE = 4
_POLY_MIN_POINTS = 200_000  # below this pyproj is fast enough
_POLY_MAX_RESIDUAL_M = 1e-3  # fit accepted when its validated residual is below 1 mm


def _poly_terms(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.stack([u**i * v**j for i in range(_POLY_DEGREE + 1) for j in range(_POLY_DEGREE + 1 - i)], 1)


def _fit_projection(lon_rng: tuple[float, float], lat_rng: tuple[float, float], crs: str) -> tuple[Any, float] | None:
    """Degree-4 polynomials lon/lat -> x/y fitted on a 40 x 40 control grid over the points' bounds and
    validated on a 97 x 97 grid in between; (coefficients, max residual in metres) or None if too coarse."""
    from pyproj import Transformer

    t = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    centre = ((lon_rng[0] + lon_rng[1]) / 2, (lat_rng[0] + lat_rng[1]) / 2)

    def grid_pts(k: int) -> tuple[np.ndarray, np.ndarray]:
        g_lon, g_lat = np.meshgrid(np.linspace(*lon_rng, k), np.linspace(*lat_rng, k))
        return g_lon.ravel(), g_lat.ravel()

    c_lon, c_lat = grid_pts(40)
    cx, cy = t.transform(c_lon, c_lat)
    a = _poly_terms(c_lon - centre[0], c_lat - centre[1])
    coef_x = np.linalg.lstsq(a, cx, rcond=None)[0]
    coef_y = np.linalg.lstsq(a, cy, rcond=None)[0]
    v_lon, v_lat = grid_pts(97)
    vx, vy = t.transform(v_lon, v_lat)
    b = _poly_terms(v_lon - centre[0], v_lat - centre[1])
    resid = float(max(np.abs(b @ coef_x - vx).max(), np.abs(b @ coef_y - vy).max()))
    if not np.isfinite(resid) or resid > _POLY_MAX_RESIDUAL_M:
        return None
    return (centre, coef_x, coef_y), resid


def _eval_poly(u: np.ndarray, v: np.ndarray, coef: np.ndarray, out: np.ndarray) -> None:
    """``out = sum c_ij u^i v^j`` by Horner in v inside Horner in u (block-sized arrays, in place)."""
    terms = [(i, j) for i in range(_POLY_DEGREE + 1) for j in range(_POLY_DEGREE + 1 - i)]
    inner = np.empty_like(out)
    out.fill(0.0)
    for i in range(_POLY_DEGREE, -1, -1):
        inner.fill(0.0)
        for j in range(_POLY_DEGREE - i, -1, -1):
            inner *= v
            inner += coef[terms.index((i, j))]
        out *= u
        out += inner


def project_for_grid(lon: np.ndarray, lat: np.ndarray, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Lon/lat -> grid-CRS metres, fast for many points, with exactly the pixels of :func:`project_lonlat`.

    Large inputs use a validated degree-4 polynomial (residual below 1 mm over the points' bounds); points
    within 10x that residual of a pixel edge are re-projected exactly with pyproj, so ``floor`` of every
    pixel coordinate equals the exact projection's. Small or widely spread inputs use pyproj directly.
    """
    lon = np.asarray(lon, dtype=np.float64)
    lat = np.asarray(lat, dtype=np.float64)
    finite = np.isfinite(lon) & np.isfinite(lat)
    if lon.size < _POLY_MIN_POINTS or not finite.all():
        return project_lonlat(lon, lat, grid.crs)
    fit = _fit_projection((float(lon.min()), float(lon.max())), (float(lat.min()), float(lat.max())), grid.crs)
    if fit is None:
        return project_lonlat(lon, lat, grid.crs)
    (centre, coef_x, coef_y), resid = fit
    margin_x = (10 * resid + 1e-6) / abs(grid.transform[0])  # in pixels
    margin_y = (10 * resid + 1e-6) / abs(grid.transform[4])
    a, _, c, _, e, f = grid.transform
    n = lon.size
    x, y = np.empty(n), np.empty(n)
    near = np.zeros(n, dtype=bool)
    u, v = np.empty(min(n, _STEP)), np.empty(min(n, _STEP))
    fr = np.empty(min(n, _STEP))
    for s in range(0, n, _STEP):
        m = min(_STEP, n - s)
        bu, bv, bf = u[:m], v[:m], fr[:m]
        np.subtract(lon[s:s + m], centre[0], out=bu)
        np.subtract(lat[s:s + m], centre[1], out=bv)
        bx, by, bn = x[s:s + m], y[s:s + m], near[s:s + m]
        _eval_poly(bu, bv, coef_x, bx)
        _eval_poly(bu, bv, coef_y, by)
        for arr, origin, size, marg in ((bx, c, a, margin_x), (by, f, e, margin_y)):
            np.subtract(arr, origin, out=bf)
            bf /= size
            np.subtract(bf, np.floor(bf), out=bf)
            bn |= bf < marg
            bn |= bf > 1.0 - marg
    if near.any():
        x[near], y[near] = project_lonlat(lon[near], lat[near], grid.crs)
    return x, y


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
                   nodata: float = LABEL_NODATA) -> LabelRaster:
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
                    nodata: float = LABEL_NODATA) -> LabelRaster:
    """:func:`rasterize_mean` for lon/lat shots (projected to the grid CRS first, :func:`project_for_grid`)."""
    x, y = project_for_grid(lon, lat, grid)
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
        ds.units = (AGB_UNITS, "shots")  # GDAL band unit types
        ds.update_tags(**all_tags)
        ds.update_tags(1, BAND_NAME="agbd", UNITS="Mg/ha", STATISTIC="mean of GEDI L4A agbd of the shots in the pixel")
        ds.update_tags(2, BAND_NAME="shot_count", UNITS="shots", STATISTIC="number of shots averaged")
    return path
