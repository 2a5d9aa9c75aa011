"""``generate_world``: the sample world's one entry point (HLS COGs, GEDI L4A HDF5, STAC JSON, truth).

Layout under ``output_dir`` (docs/DESIGN.md): ``hls/<item_id>/<item_id>.<ASSET>.tif`` (+ ``.jpg`` browse,
``.cmr.xml`` metadata), ``gedi/GEDI04_A_...V002.h5``, ``stac/{hls,gedi}_{collection,items}.json``,
``truth/agb.tif`` (Mg/ha float32, nodata -9999), ``truth/landcover.tif`` (uint8, 255 none) and
``world.json`` (the manifest, written last: its presence marks a finished world).
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from pyproj import Transformer

from core.constants import IMAGE_NODATA
from core.files import write_json_atomic
from core.grid import Grid, mgrs_tile_grid
from sampleworld import hls as H
from sampleworld import landscape as L
from sampleworld.cog import write_cog
from sampleworld.resume import done_marker, load_done, save_done
from sampleworld.spec import WorldSpec, check_timeline, preset, with_overrides
from sampleworld.stac import GEDI_COLLECTION, HLS_COLLECTION, collection, feature_collection

MANIFEST = "world.json"
GENERATOR_VERSION = 2  # 2: scenes and GEDI granules of several years, on the real timeline


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *stream]))


def world_grid(spec: WorldSpec) -> tuple[Grid, list[float]]:
    """The world window on the zone's 30 m lattice and the AOI lon/lat bbox.

    The AOI is the UTM square of ``aoi_px`` pixels around ``aoi_center``; the window covers the AOI's
    lon/lat bbox (re-projected, so slightly larger than the square) plus ``margin_px``. Full-tile
    worlds use the (single) MGRS tile grid.
    """
    cx, cy = spec.aoi_center
    half = spec.aoi_px * 15.0
    to_ll = Transformer.from_crs(spec.epsg, 4326, always_xy=True)
    lons, lats = to_ll.transform([cx - half, cx + half, cx + half, cx - half], [cy - half, cy - half,
                                                                             cy + half, cy + half])
    aoi = [round(min(lons), 6), round(min(lats), 6), round(max(lons), 6), round(max(lats), 6)]
    if spec.full_tiles:
        if len(spec.tiles) != 1:
            raise ValueError("full-tile worlds take exactly one MGRS tile")
        return mgrs_tile_grid(spec.tiles[0]), aoi
    to_utm = Transformer.from_crs(4326, spec.epsg, always_xy=True)
    minx, miny, maxx, maxy = to_utm.transform_bounds(*aoi, densify_pts=21)
    m = spec.margin_px * 30.0
    x0, x1 = math.floor((minx - m) / 30) * 30, math.ceil((maxx + m) / 30) * 30
    y0, y1 = math.floor((miny - m) / 30) * 30, math.ceil((maxy + m) / 30) * 30
    w, h = int((x1 - x0) / 30), int((y1 - y0) / 30)
    return Grid(f"EPSG:{spec.epsg}", (30.0, 0.0, float(x0), 0.0, -30.0, float(y1)), w, h, ""), aoi


def tile_windows(spec: WorldSpec, world: Grid) -> dict[str, Grid]:
    """Each tile's file window: its real MGRS grid cut to the world window (same lattice). A tile of
    another UTM zone gets the window of its own zone's grid that covers the world window's footprint."""
    from rasterio.warp import transform_bounds

    out = {}
    for t in spec.tiles:
        g = mgrs_tile_grid(t)
        bounds = world.bounds if g.epsg == world.epsg else transform_bounds(world.crs, g.crs, *world.bounds,
                                                                            densify_pts=21)
        out[t] = g.clip(bounds)
    return out


def generate_world(output_dir: str | os.PathLike[str], *, size: str = "small", seed: int = 0,
                   **overrides: Any) -> dict[str, Any]:
    """Write (idempotently) the sample world of preset ``size`` and return its manifest dict.

    ``overrides`` replace :class:`~sampleworld.spec.WorldSpec` fields. A folder holding a finished world
    with the same spec and seed is returned as is; one with a different spec is an error.
    """
    spec = with_overrides(preset(size), **overrides)
    check_timeline(spec)
    out = Path(output_dir).resolve()
    man_path = out / MANIFEST
    key = json.loads(json.dumps({"spec": spec.to_dict(), "seed": seed, "generator_version": GENERATOR_VERSION}))
    resume = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    if man_path.exists():
        old = json.loads(man_path.read_text())
        if {k: old.get(k) for k in key} == key:
            return old
        raise ValueError(f"{man_path}: a different sample world (size/seed/spec) is already there; "
                         "use another output_dir or delete this one")
    out.mkdir(parents=True, exist_ok=True)
    grid, aoi = world_grid(spec)
    lss = landscapes_by_year(spec, L.make_landscape(grid.shape, _rng(seed, 0)))
    truth = write_truth(out, grid, lss, spec)
    hls_items = write_hls(out, spec, grid, lss, seed, resume)
    gedi = _write_gedi(out, spec, grid, lss, seed, aoi, resume)
    manifest = _manifest(out, spec, seed, aoi, grid, hls_items, gedi, truth)
    manifest.update(key)
    write_json_atomic(man_path, manifest)
    return json.loads(man_path.read_text())


def landscapes_by_year(spec: WorldSpec, base: L.Landscape) -> dict[int, L.Landscape]:
    """The landscape of every year of the world: ``base`` with the clear-cuts of that year and before."""
    years = sorted({spec.year, *spec.years, *spec.gedi_years})
    h, w = base.landcover.shape
    rows, cols = np.ogrid[:h, :w]
    out: dict[int, L.Landscape] = {}
    for y in years:
        ls = base
        for d in (d for d in spec.disturbances if d.year <= y):
            cy, cx = d.center_frac[1] * h, d.center_frac[0] * w
            ls = L.clear_cut(ls, (rows - cy) ** 2 + (cols - cx) ** 2 <= d.radius_px**2)
        out[y] = ls
    return out


def write_truth(out: Path, grid: Grid, lss: dict[int, L.Landscape], spec: WorldSpec) -> dict[str, Any]:
    """``truth/agb.tif`` (Mg/ha float32, nodata -9999) and ``truth/landcover.tif`` (uint8, 255 none) of the
    world's year; with clear-cuts also ``truth/agb_<YEAR>.tif`` per year (``agb_by_year``)."""
    codes = json.dumps({str(k): v for k, v in L.LANDCOVER_NAMES.items()})
    ls = lss[spec.year]
    tags = {"units": "Mg/ha", "long_name": "true above-ground biomass density", "SAMPLEWORLD_SIZE": spec.size}
    agb = write_cog(out / "truth" / "agb.tif", ls.agb.astype(np.float32), grid, nodata=IMAGE_NODATA,
                    tags={**tags, "YEAR": str(spec.year)}, description="agb")
    lc = write_cog(out / "truth" / "landcover.tif", ls.landcover, grid, nodata=L.LANDCOVER_NODATA,
                   tags={"CLASS_CODES": codes, "PFT_OF_CLASS": json.dumps(L.PFT_OF_CLASS)},
                   description="landcover")
    by_year = {str(y): str(agb) for y in lss}
    if spec.disturbances:
        for y, ly in lss.items():
            if y != spec.year:
                by_year[str(y)] = str(write_cog(out / "truth" / f"agb_{y}.tif", ly.agb.astype(np.float32), grid,
                                                nodata=IMAGE_NODATA, tags={**tags, "YEAR": str(y)},
                                                description="agb"))
    return {"agb": str(agb), "landcover": str(lc), "agb_by_year": by_year}


def write_hls(out: Path, spec: WorldSpec, grid: Grid, lss: dict[int, L.Landscape], seed: int,
              resume: str = "") -> list[dict[str, Any]]:
    """Render every scene and write its granules; return the STAC items (sorted by datetime, tile).
    Scenes whose granules were finished by an earlier run for the same world (``resume`` key) are skipped."""
    windows = tile_windows(spec, grid)
    jobs = [(out, spec, grid, windows, seed, k, resume) for k in range(len(spec.scenes))]
    # A daemonic process (e.g. a Dask/Prefect worker) may not start children: render serially there.
    if spec.workers > 1 and len(jobs) > 1 and not multiprocessing.current_process().daemon:
        ctx = multiprocessing.get_context("spawn")  # no fork of a process holding GDAL/HDF5 state
        with ProcessPoolExecutor(max_workers=spec.workers, mp_context=ctx, initializer=_set_landscape,
                                 initargs=(lss,)) as pool:
            results = list(pool.map(_scene_job, jobs))
    else:
        _set_landscape(lss)
        try:
            results = [_scene_job(j) for j in jobs]
        finally:
            _set_landscape(None)
    items = [it for r in results for it in r]
    items.sort(key=lambda it: (it["properties"]["datetime"], it["id"]))
    c = _hls_collection(grid, spec)
    write_json_atomic(out / "stac" / "hls_collection.json", c)
    write_json_atomic(out / "stac" / "hls_items.json", feature_collection(items))
    return items


_LANDSCAPE: dict[int, L.Landscape] | None = None


def _set_landscape(lss: dict[int, L.Landscape] | None) -> None:
    """Hand the (large) landscapes, by year, to a worker once, not with every job."""
    global _LANDSCAPE
    _LANDSCAPE = lss


def _scene_job(args: tuple) -> list[dict[str, Any]]:
    out, spec, grid, windows, seed, k, resume = args
    assert _LANDSCAPE is not None, "landscape not set in this process"
    ls = _LANDSCAPE[spec.year_of(spec.scenes[k])]
    from sampleworld.granule import write_granule

    sc = spec.scenes[k]
    lon, lat = Transformer.from_crs(spec.epsg, 4326, always_xy=True).transform(*spec.aoi_center)
    acq = H.acquisition(sc, spec.year_of(sc), lon, lat)
    marker = done_marker(out / "hls", f"scene-{k:03d}")
    done = load_done(marker, resume) if resume else None
    if done is not None and all(Path(it["assets"]["Fmask"]["href"]).exists() for it in done):
        return done
    scene = H.render_scene(ls, acq, _rng(seed, 1, k))
    items = []
    for j, (tile, win) in enumerate(sorted(windows.items())):
        if win.epsg == grid.epsg:
            item = write_granule(out, spec, grid, win, tile, acq, scene, _rng(seed, 3, k, j))
        else:  # a tile of the neighbouring UTM zone: resampled onto its own grid, as HLS does
            item = write_granule(out, spec, win, win, tile, acq, H.reproject_scene(scene, grid, win),
                                 _rng(seed, 3, k, j))
        if item is not None:
            items.append(item)
    if resume:
        save_done(marker, resume, items)
    return items


def _hls_collection(grid: Grid, spec: WorldSpec) -> dict[str, Any]:
    lons, lats = Transformer.from_crs(spec.epsg, 4326, always_xy=True).transform(
        [grid.bounds[0], grid.bounds[2]], [grid.bounds[1], grid.bounds[3]])
    return collection(
        HLS_COLLECTION, "HLS Landsat Operational Land Imager Surface Reflectance and TOA Brightness Daily "
        "Global 30m v2.0", "Sample world (synthetic) HLS L30 v2.0 granules in the real file format.",
        [min(lons), min(lats), max(lons), max(lats)], ["2013-04-11T00:00:00.000Z", None], "LPCLOUD")


def _write_gedi(out: Path, spec: WorldSpec, grid: Grid, lss: dict[int, L.Landscape], seed: int,
                aoi: list[float], resume: str) -> dict[str, Any]:
    from sampleworld.gedi import write_gedi

    return write_gedi(out, spec, grid, lss, seed, aoi, resume)


def _manifest(out: Path, spec: WorldSpec, seed: int, aoi: list[float], grid: Grid,
              hls_items: list[dict[str, Any]], gedi: dict[str, Any], truth: dict[str, Any]) -> dict[str, Any]:
    x0, y0, x1, y1 = aoi
    ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
    dates = sorted({it["properties"]["datetime"][:10] for it in hls_items})
    return {
        "name": f"sampleworld-{spec.size}-seed{seed}",
        "size": spec.size,
        "seed": seed,
        "year": spec.year,
        "years": spec.years,
        "gedi_years": spec.gedi_years,
        "aoi": aoi,
        "aoi_geojson": {"type": "Polygon", "coordinates": [ring]},
        "tiles": list(spec.tiles),
        "season": {"start": f"{spec.year}-06-01", "end": f"{spec.year}-09-30"},
        "grid": grid.to_dict(),
        "hls": {"collection": HLS_COLLECTION, "collection_json": str(out / "stac" / "hls_collection.json"),
                "items_json": str(out / "stac" / "hls_items.json"), "n_scenes": len(hls_items),
                "dates": dates},
        "gedi": {"collection": GEDI_COLLECTION, **gedi},
        "truth": truth,
    }


__all__ = ["generate_world", "world_grid", "tile_windows", "MANIFEST"]
