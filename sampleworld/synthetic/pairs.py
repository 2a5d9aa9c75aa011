"""Synthetic composite + label rasters of the pipeline's formats, for tests, the demo and the benchmark.

Composite: int16 as the pipeline writes it (means rounded to whole HLS units; ``dtype="float32"`` for the
composite-engine 1 format), 7 bands B02..B07 (HLS units x10000) + ``count``, nodata -9999, tags MGRS_TILE
and SEASON, band descriptions; a nodata patch in one corner. Label: float32 ``agbd`` (Mg/ha) + ``shot_count``
on the same grid, sparse (GEDI-like along-track lines), nodata as asked (-9999 or -1).
Values are deterministic functions of the pixel's lattice position so overlapping tiles agree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import rasterio

from core.constants import IMAGE_NODATA, LABEL_NODATA
from core.grid import Grid, mgrs_tile_grid

COMPOSITE_DESCRIPTIONS = ("B02", "B03", "B04", "B05", "B06", "B07", "count")
SEASON = "2021-06-01_2021-09-30"


def _field(grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Global lattice (row, col) of every pixel (int32 arrays, shape of the grid)."""
    a, _, c, _, _, f = grid.transform
    gy0, gx0 = int(round(-f / a)), int(round(c / a))
    rows = np.arange(grid.height, dtype=np.int32)[:, None] + gy0
    cols = np.arange(grid.width, dtype=np.int32)[None, :] + gx0
    return np.broadcast_to(rows, grid.shape), np.broadcast_to(cols, grid.shape)


def synth_arrays(grid: Grid, *, label_nodata: float = LABEL_NODATA, nodata_corner: int = 0,
                 track_every: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """(composite (7, h, w), label (2, h, w)) float32 arrays for ``grid``.

    ``nodata_corner``: edge (px) of a -9999 square at the upper-left; labels on every ``track_every``-th
    lattice column, every 2nd row (others ``label_nodata``).
    """
    gr, gc = _field(grid)
    h, w = grid.shape
    comp = np.empty((7, h, w), dtype=np.float32)
    base = ((gr % 997) * 3 + (gc % 991) * 2).astype(np.float32)
    for b in range(6):
        comp[b] = 200.0 + 300.0 * b + base * (0.5 + 0.1 * b)
    comp[6] = (3 + (gr + gc) % 5).astype(np.float32)
    if nodata_corner:
        comp[:, :nodata_corner, :nodata_corner] = IMAGE_NODATA
    lab = np.full((2, h, w), np.float32(label_nodata), dtype=np.float32)
    on = (gc % track_every == 0) & (gr % 2 == 0)
    lab[0][on] = (((gr * 7 + gc * 3) % 300) + 0.5).astype(np.float32)[on]
    lab[1][on] = 1.0
    lab[1][~on] = np.float32(label_nodata) if label_nodata == LABEL_NODATA else 0.0
    return comp, lab


def write_pair(root: Path, grid: Grid, *, season: str = SEASON, label_nodata: float = LABEL_NODATA,
               nodata_corner: int = 0, compress: str | None = "deflate", dtype: str = "int16",
               noise: float = 0.0) -> tuple[Path, Path]:
    """Write ``composites/<TILE>/<SEASON>.tif`` and ``labels/<TILE>/<SEASON>.tif`` under ``root``.

    ``dtype``: the composite's (``int16`` rounds the means); ``noise``: standard deviation (HLS units) of
    seeded Gaussian texture added to the six bands (a real composite compresses far less than the smooth
    synthetic field).
    """
    comp, lab = synth_arrays(grid, label_nodata=label_nodata, nodata_corner=nodata_corner)
    if noise:
        tex = np.random.default_rng(0).normal(0.0, noise, comp[:6].shape).astype(np.float32)
        comp[:6] = np.where(comp[:6] == IMAGE_NODATA, comp[:6], comp[:6] + tex)
    if np.dtype(dtype).kind == "i":
        comp = np.rint(comp)
    paths = []
    for kind, arr, nodata, desc, dt in (("composites", comp, IMAGE_NODATA, COMPOSITE_DESCRIPTIONS, dtype),
                                        ("labels", lab, label_nodata, ("agbd", "shot_count"), "float32")):
        p = root / kind / grid.tile / f"{season}.tif"
        p.parent.mkdir(parents=True, exist_ok=True)
        opts: dict[str, Any] = {"tiled": True, "blockxsize": 256, "blockysize": 256}
        if compress:
            opts["compress"] = compress
            if compress in ("deflate", "zstd"):  # with a predictor, as the pipeline's COGs
                opts["predictor"] = 3 if np.dtype(dt).kind == "f" else 2
        with rasterio.open(p, "w", driver="GTiff", width=grid.width, height=grid.height, count=arr.shape[0],
                           dtype=dt, crs=grid.crs, transform=grid.affine, nodata=nodata, **opts) as ds:
            ds.write(arr.astype(dt))
            ds.descriptions = desc
            ds.update_tags(MGRS_TILE=grid.tile, SEASON=season)
        paths.append(p)
    return paths[0], paths[1]


def demo_grids() -> list[Grid]:
    """Two overlapping zone-10 tile windows (10TEK, 1300 x 900 px, and its east neighbour 10TFK,
    1000 x 900 px) sharing a 326 px strip (the real MGRS tile overlap)."""
    ek = mgrs_tile_grid("10TEK")
    fk = mgrs_tile_grid("10TFK")
    x_over = fk.bounds[0]  # west edge of 10TFK lies inside 10TEK
    y_top = ek.bounds[3] - 30 * 300
    g1 = ek.clip((x_over - 30 * 974, y_top - 30 * 900, ek.bounds[2], y_top))
    g2 = fk.clip((x_over, y_top - 30 * 900, x_over + 30 * 1000, y_top))
    return [g1, g2]


def write_demo_world(root: Path, label_nodata: float = LABEL_NODATA) -> dict[str, Any]:
    """A small 2-tile world for the demo / interop check; returns {"composites": dir, "labels": dir}."""
    for i, g in enumerate(demo_grids()):
        write_pair(root, g, label_nodata=label_nodata, nodata_corner=300 if i == 0 else 0)
    return {"composites": str(root / "composites"), "labels": str(root / "labels")}
