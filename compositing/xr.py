"""A lazy HLS composite for notebooks: an ``xarray.Dataset`` computed by the composite engine's own kernel.

    from compositing.composite import load_items, tile_grid
    from compositing.xr import composite_dataset

    items = load_items("out/search/hls_items.json")
    ds = composite_dataset(items, tile_grid("10TEK", aoi))       # file headers only, no pixels yet
    ds.Red.sel(x=601_000, y=4_440_000, method="nearest").compute()  # reads one window
    ds.rio.to_raster("composite.tif")                              # 7 bands, nodata -9999, like the engine

Every output window (``chunk_size``, aligned to the tile's block lattice exactly as the engine aligns its
windows) is one Dask task that calls :func:`compositing.kernel.chunk_task`, the function the engine runs
per window: same Fmask rule, same integer sums and count, same mean and nodata rule, so the values equal
the COG :func:`compositing.composite.composite_tile` writes. The Dataset has the layout of
:func:`core.xr.open_composite` (variables ``Blue Green Red NIR_Narrow SWIR1 SWIR2 count``, NaN for nodata,
CRS and transform in ``spatial_ref``). Compute several variables together (``ds.compute()``,
``ds.persist()``, ``ds.rio.to_raster()``) so each window runs once.

Difference from the engine: a read error raises (:class:`compositing.reader.AssetReadError` naming the
file) instead of skipping the scene, because a lazy window cannot take a scene out of windows already
computed; the engine (``build_composites``) has the skip-and-record behaviour. Scenes whose header cannot
be read are left out when the Dataset is built and listed in ``ds.attrs["SCENES_SKIPPED"]``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import partial
from typing import Any

import numpy as np

from core.grid import Grid
from core.xr import REFLECTANCE_UNITS, bands_to_dataset, composite_specs, spatial_coords

from .composite import (
    SCALE_FACTOR,
    CompositeError,
    chunk_windows,
    group_by_tile,
    prepare_scenes,
    software_version,
)
from .contracts import CompositeOptions
from .fmask import FmaskRule
from .kernel import BANDS, NODATA, SceneSource, chunk_task
from .reader import AssetReader, RasterioReader


def _window_data(reader: AssetReader, scenes: list[SceneSource], rule: FmaskRule, min_observations: int,
                 gdal_cache_mb: int, window: tuple[int, int, int, int]) -> np.ndarray:
    """(7, h, w) int16 of one window: the engine's chunk task, failing on the first read error."""
    return chunk_task(reader, scenes, window, rule, min_observations, True, gdal_cache_mb).data


def scene_overlaps(s: SceneSource, grid: Grid) -> bool:
    """True when the scene's file shares at least one pixel with ``grid``."""
    return -s.row_off < grid.height and s.height - s.row_off > 0 and -s.col_off < grid.width and s.width - s.col_off > 0


def _tile_items(items: Iterable[Any], grid: Grid) -> tuple[list[dict[str, Any]], int]:
    """The items of the grid's MGRS tile, sorted as the engine sorts them, and how many were of other tiles."""
    dicts = [it.to_dict() if hasattr(it, "to_dict") else it for it in items]
    groups = group_by_tile(dicts)
    if not grid.tile:
        if len(groups) != 1:
            raise ValueError(f"the grid names no MGRS tile and the items are of tiles {sorted(groups)}: "
                             "give a tile's grid (compositing.composite.tile_grid)")
        return next(iter(groups.values())), 0
    mine = groups.get(grid.tile, [])
    if not mine:
        raise CompositeError(f"no item of tile {grid.tile} among {len(dicts)} items (tiles {sorted(groups)})")
    return mine, len(dicts) - len(mine)


def composite_dataset(items: Iterable[Any], grid: Grid | dict[str, Any], *,
                      options: CompositeOptions = CompositeOptions(), scale: bool = False,
                      reader: AssetReader | None = None, gdal_cache_mb: int = 64) -> Any:
    """Lazy cloud-free mean composite of ``items`` on ``grid`` (an ``xarray.Dataset`` backed by Dask).

    ``items``: STAC item dicts as the search saves them (``load_items``; pystac Items work too); only
    those of ``grid.tile`` are used, as the engine composites each tile on its own grid. ``grid``: a
    :class:`core.grid.Grid` (or its dict), e.g. ``tile_grid(tile, aoi)``. ``options``: the engine's
    :class:`CompositeOptions`; the masking options, ``min_observations`` and ``chunk_size`` (the Dask
    chunks) apply; it is always the kernel, and a read error always raises. ``scale=True`` multiplies the
    reflectances by 0.0001. Scene headers are read now (grid check); pixels only when computed.
    """
    grid = grid if isinstance(grid, Grid) else Grid.from_dict(grid)
    rule = FmaskRule(options.mask_snow, options.mask_water, options.mask_high_aerosol)
    min_observations, chunk_size = options.min_observations, options.chunk_size
    reader = reader or RasterioReader()
    tile_items, other = _tile_items(items, grid)
    sources, skipped = prepare_scenes(reader, tile_items, grid, fail_fast=False)
    sources = [s for s in sources if scene_overlaps(s, grid)]
    if not sources:
        raise CompositeError(f"tile {grid.tile}: no readable scene covers the grid among {len(tile_items)} "
                             f"(skipped: {json.dumps(skipped)[:1000]})")
    data = _lazy_array(reader, sources, grid, rule, min_observations, chunk_size, gdal_cache_mb)
    attrs = {"MGRS_TILE": grid.tile, "COLLECTION": options.collection, "SCENE_IDS": json.dumps([s.id for s in sources]),
             "N_SCENES": str(len(sources)), "SCENES_SKIPPED": json.dumps(skipped),
             "N_ITEMS_OTHER_TILES": str(other), "MASKED_BITS": rule.describe(),
             "MIN_OBSERVATIONS": str(min_observations), "SCALE_FACTOR": str(SCALE_FACTOR),
             "UNITS": f"{REFLECTANCE_UNITS} (mean); count", "GRID": json.dumps(grid.to_dict()),
             "NODATA": str(NODATA), "SOFTWARE_VERSION": software_version()}
    return bands_to_dataset(_as_dataarray(data, grid), composite_specs(), float(NODATA), attrs, scale=scale)


def _lazy_array(reader: AssetReader, sources: list[SceneSource], grid: Grid, rule: FmaskRule,
                min_observations: int, chunk_size: int, gdal_cache_mb: int) -> Any:
    """(7, height, width) int16 Dask array: one ``chunk_task`` call per engine window."""
    import dask
    import dask.array as da

    windows = chunk_windows(grid, chunk_size)
    token = dask.base.tokenize(grid.to_dict(), [(s.id, sorted(s.hrefs.items()), s.row_off, s.col_off)
                                                for s in sources], rule, min_observations, chunk_size, reader)
    fn = partial(_window_data, reader, sources, rule, min_observations, gdal_cache_mb)
    rows: dict[int, list[Any]] = {}
    for r, c, h, w in windows:
        task = dask.delayed(fn, pure=True)((r, c, h, w), dask_key_name=f"hls-window-{token}-{r}-{c}")
        rows.setdefault(r, []).append(da.from_delayed(task, shape=(len(BANDS) + 1, h, w), dtype=np.int16))
    return da.block([rows[r] for r in sorted(rows)])


def _as_dataarray(data: Any, grid: Grid) -> Any:
    import rioxarray  # noqa: F401 - registers the .rio accessor
    import xarray as xr

    y, x = spatial_coords(grid.transform, grid.width, grid.height)
    arr = xr.DataArray(data, dims=("band", "y", "x"),
                       coords={"band": np.arange(1, data.shape[0] + 1), "y": y, "x": x})
    return arr.rio.write_crs(grid.crs).rio.write_transform(grid.affine)
