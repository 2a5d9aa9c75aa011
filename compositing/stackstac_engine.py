"""The stackstac composite engine: ``CompositeOptions(engine="stackstac")`` for ``composite_tile`` /
``build_composites`` (flow option ``hls.engine``).

The same composite as the default kernel engine (same grid, Fmask rule, count band, nodata, COG and tags:
everything but the pixel computation is the engine's own code path), computed the way many users know:
``stackstac.stack`` -> masked integer sums over ``time`` with xarray/Dask -> the kernel's
:func:`compositing.kernel.finalize` (mean and nodata rule). It exists for users who want the familiar path
and as a cross-check; the kernel engine stays the default (it reads only the band blocks under clear
Fmask pixels and never holds a time stack: about a third of the CPU time and half the memory of this
engine on the benchmark tile, see benchmarks/bench_composite.py).

CMR-STAC's HLS items carry no ``proj:*``, ``eo:bands`` or ``raster:bands`` and no media types, so
nothing is left for stackstac to guess: ``assets`` are named, ``epsg``, ``resolution`` and projected
``bounds`` are the tile grid's, ``dtype=int16`` / ``fill_value=-9999`` (Fmask fill 255 and the band
nodata both become the fill), ``rescale=False`` (HLS units stay integers), ``xy_coords="center"``, and
each asset is a GDAL ``vrt://`` view of its file cut to the tile grid, with the EPSG code assigned that the
engine's grid check has verified (:func:`grid_href`), and carries that raster's exact
``proj:epsg``/``proj:bbox``/``proj:shape``/``proj:transform`` instead of stackstac's estimate from the
lon/lat bbox. Two measured reasons for the view: stackstac calls ``crs.to_epsg()`` on every file it opens,
and for HLS's authority-less "UTM Zone N" WKT that is a PROJ database search of 0.2-0.4 s per asset and
process (4 scenes: 11.2 s -> 2.6 s); and a file that is not exactly the output grid is read through a
``WarpedVRT`` (nearest, same CRS), which costs ~2x the CPU of the reads themselves.
Items are passed as dicts (pystac would rewrite ``proj:epsg`` to ``proj:code``, which stackstac 0.5
ignores). Output windows are the engine's (``chunk_size`` on the tile's block lattice) and are computed
one at a time (each window's reads run in parallel) on the Dask client or local threads.

Unreadable scenes: a read error names the file; with ``on_read_error="skip"`` the scene is recorded and
the tile is recomputed without it (so it is absent from the whole composite, as in the kernel engine);
with ``"fail"`` it is a :class:`CompositeError`. Earthdata credentials are looked up on the process that
reads (they are not part of the task graph), as the kernel's reader does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import rasterio
from stackstac.rio_env import LayeredEnv
from stackstac.rio_reader import DEFAULT_GDAL_ENV

from core.bands import FMASK
from core.constants import FMASK_FILL
from core.earthdata import gdal_options
from core.grid import Grid

from .composite import CompositeError, chunk_windows
from .fmask import FmaskRule, clear_mask
from .kernel import BANDS, NODATA, SceneSource, finalize
from .xr import scene_overlaps

log = logging.getLogger(__name__)


class EarthdataLayeredEnv(LayeredEnv):
    """stackstac's layered GDAL settings plus, on first use in each thread of the reading process, the
    Earthdata settings of :mod:`core.earthdata` for ``remote`` (one remote href of the tile: the settings
    depend on its host only): credentials never enter the task graph."""

    def __init__(self, always: dict, open: dict | None = None, open_vrt: dict | None = None,  # noqa: A002
                 read: dict | None = None, remote: str | None = None) -> None:
        super().__init__(always, open, open_vrt, read)
        self.remote = remote

    def _get_layered_option(self, name: str, if_empty: str = "always") -> Any:
        try:
            return getattr(self._threadlocal, name)
        except AttributeError:
            pass
        opts = {**self._always, **(self._open if name.startswith("open") else {}),
                **(self._open_vrt if name == "open_vrt" else {}), **(self._read if name == "read" else {})}
        if self.remote:
            opts.update(gdal_options(self.remote, for_read=name == "read"))
        env = rasterio.Env(**opts)
        setattr(self._threadlocal, name, env)
        return env

    def __getstate__(self) -> tuple:  # type: ignore[override]
        return (*super().__getstate__(), self.remote)

    def __setstate__(self, state: tuple) -> None:  # type: ignore[override]
        self.__init__(*state)


def gdal_env(remote: str | None, gdal_cache_mb: int) -> EarthdataLayeredEnv:
    """stackstac's default GDAL layers + a bounded block cache (+ Earthdata settings for remote hrefs)."""
    always, open_, open_vrt, read = DEFAULT_GDAL_ENV.__getstate__()
    # in bytes, as in kernel.chunk_task: rasterio 1.4 / GDAL 3.10 read a small value (64) as an almost empty cache
    cache = {"GDAL_CACHEMAX": gdal_cache_mb * 1024 * 1024}
    return EarthdataLayeredEnv({**always, **cache}, open_, open_vrt, read, remote=remote)


def stackstac_items(items: dict[str, dict[str, Any]], sources: list[SceneSource], grid: Grid) -> list[dict[str, Any]]:
    """Copies of the scenes' items with only the needed assets, each a :func:`grid_href` view of its file
    (or, for an href with a query string, the file itself) with that raster's exact ``proj:*``."""
    out = []
    for s in sources:
        item = items[s.id]
        file_grid = grid.window_bounds(-s.row_off, -s.col_off, s.height, s.width)
        assets = {}
        for key, href in s.hrefs.items():
            view = grid_href(href, s, grid)
            g = grid if view else file_grid
            assets[key] = {**(item.get("assets") or {}).get(key, {}), "href": view or href, "proj:epsg": grid.epsg,
                           "proj:bbox": list(g.bounds), "proj:shape": [g.height, g.width],
                           "proj:transform": list(g.transform)}
        props = {**(item.get("properties") or {}), "proj:epsg": grid.epsg}
        out.append({**item, "properties": props, "assets": assets, "stac_extensions": []})
    return out


def grid_href(href: str, source: SceneSource, grid: Grid) -> str | None:
    """GDAL ``vrt://`` view of ``href`` cut to ``grid`` (``srcwin``; outside the file: nodata) with the
    EPSG code the grid check verified assigned (``a_srs``); None for an href with a query string."""
    if "?" in href:
        return None
    path = href
    if href.startswith(("http://", "https://")):
        path = "/vsicurl/" + href
    elif href.startswith("s3://"):
        path = "/vsis3/" + href[5:]
    return f"vrt://{path}?a_srs=EPSG:{grid.epsg}&srcwin={source.col_off},{source.row_off},{grid.width},{grid.height}"


def stack_scenes(items: list[dict[str, Any]], grid: Grid, chunks: tuple[tuple[int, ...], tuple[int, ...]],
                 gdal_env: Any = None) -> Any:
    """``stackstac.stack`` of the six bands + Fmask on exactly ``grid``: (time, band, y, x) int16, fill -9999."""
    import stackstac

    stack = stackstac.stack(items, assets=[*BANDS, FMASK], epsg=grid.epsg, resolution=grid.resolution,
                            bounds=grid.bounds, snap_bounds=False, chunksize=chunks, dtype=np.dtype("int16"),
                            fill_value=np.int16(NODATA), rescale=False, sortby_date=False, xy_coords="center",
                            properties=False, band_coords=False, gdal_env=gdal_env, errors_as_nodata=())
    if stack.shape[2:] != grid.shape:
        raise CompositeError(f"tile {grid.tile}: stackstac built a {stack.shape[2:]} raster for the "
                             f"{grid.shape} grid")
    return stack


def _clear(fmask: np.ndarray, rule: FmaskRule) -> np.ndarray:
    """Clear observations of an int16 Fmask block (the stack's fill -9999 counts as Fmask fill)."""
    fm = np.where(fmask == NODATA, FMASK_FILL, fmask).astype(np.uint8)
    return clear_mask(fm, rule)


def composite_array(stack: Any, rule: FmaskRule, min_observations: int) -> Any:
    """(7, y, x) int16 Dask array (the kernel's format): per band the mean of valid observations, then the count.

    Valid: Fmask clear by ``rule`` and none of the six band values is nodata (as in the kernel); integer
    sums and count over ``time``, then :func:`compositing.kernel.finalize` per block.
    """
    import dask.array as da
    import xarray as xr

    fm = stack.sel(band=FMASK)
    bands = stack.sel(band=list(BANDS))
    clear = xr.apply_ufunc(_clear, fm, kwargs={"rule": rule}, dask="parallelized", output_dtypes=[bool])
    valid = clear & (bands != NODATA).all("band")
    sums = bands.astype("int32").where(valid, 0).sum("time").transpose("band", "y", "x")
    count = valid.sum("time", dtype="uint16")
    s = sums.data.rechunk({0: -1})
    c = count.data[None]
    return da.map_blocks(_finalize_block, s, c, min_observations=min_observations, dtype=np.int16,
                         chunks=((len(BANDS) + 1,), *s.chunks[1:]))


def _finalize_block(sums: np.ndarray, count: np.ndarray, min_observations: int) -> np.ndarray:
    return finalize(sums, count[0], min_observations)


def _failed_scene(exc: BaseException, sources: list[SceneSource]) -> tuple[SceneSource, str] | None:
    text = str(exc)
    for s in sources:
        for key, href in s.hrefs.items():
            if href in text:
                return s, key
    return None


def _window_blocks(result: Any, grid: Grid, chunk_size: int) -> list[tuple[tuple[int, int, int, int], Any]]:
    """(window, one-block Dask array) for every engine window; windows match the array's chunks."""
    rows = np.cumsum((0, *result.chunks[1]))
    cols = np.cumsum((0, *result.chunks[2]))
    out = []
    for i in range(len(rows) - 1):
        for j in range(len(cols) - 1):
            win = (int(rows[i]), int(cols[j]), int(rows[i + 1] - rows[i]), int(cols[j + 1] - cols[j]))
            out.append((win, result.blocks[0, i, j]))
    assert sorted(w for w, _ in out) == sorted(chunk_windows(grid, chunk_size))
    return out


def _compute(block: Any, client: Any, threads: int | None) -> np.ndarray:
    if client is not None:
        return client.compute(block).result()
    from .runner import n_local_threads

    return block.compute(scheduler="threads", num_workers=threads or n_local_threads())


def _chunks(grid: Grid, chunk_size: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    wins = chunk_windows(grid, chunk_size)
    rows = tuple(h for r, c, h, w in wins if c == 0)
    cols = tuple(w for r, c, h, w in wins if r == 0)
    return rows, cols


def compute_tile(out: Any, reader: Any, sources: list[SceneSource], grid: Grid, rule: FmaskRule,
                 min_observations: int, fail_fast: bool, chunk_size: int, client: Any, gdal_cache_mb: int,
                 threads: int | None, stats: Any, *, items: dict[str, dict[str, Any]]) -> tuple[set[str], dict]:
    """The engine's ``_compute_tile`` contract with stackstac: write every window into ``out`` (a
    :class:`compositing.output.TileWriter`), return the scenes used and the failed ones
    ({id: {"id", "asset", "reason"}})."""
    bad: dict[str, dict[str, str]] = {}
    # one remote href of the tile stands for its data host (the Earthdata settings depend on the host only)
    remote = next((h for s in sources for h in s.hrefs.values() if h.startswith(("http://", "https://"))), None)
    env = gdal_env(remote, gdal_cache_mb)
    while True:
        active = [s for s in sources if s.id not in bad and scene_overlaps(s, grid)]
        if not active:
            return set(), bad
        stack = stack_scenes(stackstac_items(items, active, grid), grid, _chunks(grid, chunk_size), env)
        result = composite_array(stack, rule, min_observations)
        try:
            for win, block in _window_blocks(result, grid, chunk_size):
                data = np.asarray(_compute(block, client, threads), dtype=np.int16)
                out.write(win, data)
                stats.add(win, data[-1])
            return {s.id for s in active}, bad
        except Exception as exc:  # noqa: BLE001 - stackstac wraps every GDAL failure in a RuntimeError
            found = _failed_scene(exc, active)
            if found is None:
                raise CompositeError(f"tile {grid.tile}: stackstac engine failed: {exc}") from exc
            scene, asset = found
            reason = str(exc.__cause__ or exc)[:400]
            if fail_fast:
                raise CompositeError(f"tile {grid.tile}: scene {scene.id} asset {asset} ({scene.hrefs[asset]}): "
                                     f"{reason} (on_read_error='fail')") from exc
            bad[scene.id] = {"id": scene.id, "asset": asset, "reason": reason}
            log.info("tile %s: recomputing without scene %s (%s)", grid.tile, scene.id, reason)


def tile_computer(items: list[dict[str, Any]]) -> Callable[..., tuple[set[str], dict]]:
    """:func:`compute_tile` bound to the tile's items (``CompositeOptions(engine="stackstac")``)."""
    return partial(compute_tile, items={it["id"]: it for it in items})
