"""Cloud-free mean composites of HLS L30 and/or S30 scenes, one COG per MGRS tile on that tile's own 30 m grid.

Output: ``<output_dir>/composites/<TILE>/<SEASON>.tif`` (SEASON = ``YYYY-MM-DD_YYYY-MM-DD``), int16
COG, 7 bands described B02, B03, B04, B05, B06, B07 (Blue, Green, Red, NIR_Narrow, SWIR1, SWIR2: mean of
the valid observations rounded to the nearest whole HLS unit = reflectance x 10000, band scale 0.0001; S30
scenes contribute their B02 B03 B04 B8A B11 B12) and ``count`` (valid observations).
Nodata -9999 on the six mean bands where count < ``min_observations``; the count band always holds the
real count (0 included). Beside it ``<SEASON>.json``: grid, scenes used / skipped with reasons (unreadable,
other collection, CRS or grid), stats. With ``granite_layout`` also ``composites_granite/<TILE>/<SEASON>.tif``
(:mod:`compositing.granite`).

The engine reads windows itself (:mod:`compositing.kernel`): per spatial chunk it accumulates an int32
sum and a uint16 count over the scenes, so memory is bounded by ``chunk_size`` and never by the number
of scenes. Chunks run on the current Dask client (or ``dask_address``), else on local threads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from core.area import Season, parse_aoi
from core.bands import L30_BY_ID, bands_of, collection_of_item, parse_collections
from core.constants import HLS_L30, HLS_REFLECTANCE_SCALE
from core.files import atomic_path, contained, read_json, write_json_atomic
from core.grid import Grid, GridError, mgrs_tile_grid, normalise_tile, northing_offset, tile_of_item_id

from .contracts import CompositeOptions, CompositeResult, TileComposite
from .dask_tiles import TILE_TASK_THREADS, choose_dask_unit, run_tiles_on_workers
from .fetch import io_pool, is_remote
from .fmask import FmaskRule
from .granite import granite_path, write_granite_composite
from .kernel import BANDS, FMASK, NODATA, SceneSource, chunk_task
from .output import TileWriter
from .reader import AssetReader, AssetReadError, RasterInfo, RasterioReader
from .runner import dask_client, in_dask_worker, limit_malloc_arenas, run_tasks

log = logging.getLogger(__name__)

SCALE_FACTOR = HLS_REFLECTANCE_SCALE
ENGINE_VERSION = "3"  # 3: int16 means rounded to whole HLS units; 2: band ids B02..B07, S30 and L30+S30


class CompositeError(RuntimeError):
    """A tile that cannot be composited (no readable scene, wrong grid, ...); the message names it."""


def software_version() -> str:
    try:
        from importlib.metadata import version

        return f"agb-pipeline {version('agb-pipeline')} composite-engine {ENGINE_VERSION}"
    except Exception:  # noqa: BLE001 - metadata absent in a bare checkout
        return f"agb-pipeline (unversioned) composite-engine {ENGINE_VERSION}"


# ------------------------------------------------------------------------------------------------ items
def load_items(items_json: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Items of a saved search (a FeatureCollection or a list of item dicts)."""
    data = read_json(items_json)
    items = data.get("features") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise ValueError(f"{items_json}: expected a FeatureCollection or a list of STAC items")
    return items


def group_by_tile(items: Iterable[dict[str, Any]], where: str = "items") -> dict[str, list[dict[str, Any]]]:
    """Items grouped by the MGRS tile in their id, each group sorted by datetime then id.

    An item without an id, or whose id is not an HLS granule id, is a ``ValueError`` naming ``where``."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for it in items:
        if not isinstance(it, dict) or "id" not in it:
            raise ValueError(f"{where}: STAC item without an id: {str(it)[:200]}")
        try:
            tile = tile_of_item_id(it["id"])
        except GridError as exc:
            raise ValueError(f"{where}: {exc}; refused (the id names the tile the composite is written for)") from None
        groups.setdefault(tile, []).append(it)
    for g in groups.values():
        g.sort(key=lambda it: (str(it.get("properties", {}).get("datetime", "")), it["id"]))
    return dict(sorted(groups.items()))


def tile_grid(tile: str, aoi: Any) -> Grid:
    """The tile's 30 m HLS grid clipped to the AOI (projected, densified) and snapped to its pixels."""
    import shapely
    from pyproj import Transformer

    full = mgrs_tile_grid(tile)
    geom = parse_aoi(aoi).segmentize(0.01)
    to_utm = Transformer.from_crs("EPSG:4326", full.crs, always_xy=True)
    projected = shapely.transform(geom, lambda xy: np.column_stack(to_utm.transform(xy[:, 0], xy[:, 1])))
    return full.clip(projected.bounds)


# ------------------------------------------------------------------------------------------------ scenes
def scene_assets(item: dict[str, Any], collections: tuple[str, ...]) -> dict[str, str] | str:
    """``{slot: asset key}`` of a scene: the six model-band slots B02..B07 mapped to its own collection's
    assets (S30: B02 B03 B04 B8A B11 B12), plus Fmask; or the reason it cannot be used."""
    coll = collection_of_item(item)
    if coll is None or coll not in collections:
        return (f"collection {coll or item.get('collection')!r} of this item is not among the composite's "
                f"collections {list(collections)}")
    return {**{slot: b.asset for slot, b in zip(BANDS, bands_of(coll), strict=True)}, FMASK: FMASK}


def _check_grid(info: Any, grid: Grid) -> tuple[int, int] | str:
    """Where ``grid``'s upper-left pixel lies in the file (row, col), or why the file is not on the tile's
    lattice. A file in EPSG:327NN (UTM south) is the same lattice as the tile's EPSG:326NN grid with
    northings 10,000 km larger, and is read as such."""
    shift = northing_offset(info.epsg, grid.epsg)
    if shift is None:
        crs = f"EPSG:{info.epsg}" if info.epsg else "a CRS without an EPSG equivalent"
        return f"CRS {crs} is not the tile's {grid.crs} (nor its UTM-south equivalent)"
    a, b, c, d, e, f = info.transform
    if abs(a - grid.transform[0]) > 1e-6 or abs(e - grid.transform[4]) > 1e-6:
        return f"pixel size {a} x {e} is not the tile grid's {grid.transform[0]} x {grid.transform[4]}"
    try:
        return grid.offset_in(Grid(grid.crs, (a, b, c, d, e, f + shift), info.width, info.height, grid.tile))
    except GridError as exc:
        return f"file grid is not aligned with tile {grid.tile}: {exc}"


def prepare_scenes(reader: AssetReader, items: list[dict[str, Any]], grid: Grid, fail_fast: bool,
                   threads: int = 8, collections: tuple[str, ...] = (HLS_L30,)
                   ) -> tuple[list[SceneSource], list[dict[str, str]]]:
    """Open every needed asset's header, check its grid; return usable scenes and skipped ones (reasons).

    A scene whose collection, CRS or grid does not fit the tile is skipped and recorded (``fail_fast``:
    a :class:`CompositeError`), so one odd scene costs that scene, not the tile. The headers of remote
    assets are all opened at once first, on the remote I/O pool (an open costs several round trips).
    """
    infos = _remote_infos(reader, items, collections)

    def one(item: dict[str, Any]) -> SceneSource | dict[str, str]:
        plan = scene_assets(item, collections)
        if isinstance(plan, str):
            return {"id": item["id"], "asset": "*", "reason": plan}
        assets = item.get("assets") or {}
        hrefs: dict[str, str] = {}
        at: tuple[int, int, int, int] | None = None
        for slot, key in plan.items():
            href = (assets.get(key) or {}).get("href")
            if not href:
                return {"id": item["id"], "asset": key, "reason": "item has no such asset"}
            try:
                info = infos[href] if href in infos else reader.info(href)
                if isinstance(info, AssetReadError):
                    raise info
            except AssetReadError as exc:
                return {"id": item["id"], "asset": key, "reason": exc.reason}
            off = _check_grid(info, grid)
            if isinstance(off, str):
                return {"id": item["id"], "asset": key, "reason": f"{off} ({href})"}
            here = (*off, info.height, info.width)
            if at is not None and here != at:
                return {"id": item["id"], "asset": key,
                        "reason": f"on a different grid than the scene's other assets ({href})"}
            at, hrefs[slot] = here, href
        assert at is not None
        return SceneSource(item["id"], hrefs, *at)

    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(items)))) as pool:
        results = list(pool.map(one, items))
    used = [r for r in results if isinstance(r, SceneSource)]
    skipped = [r for r in results if isinstance(r, dict)]
    if skipped and fail_fast:
        s = skipped[0]
        raise CompositeError(f"tile {grid.tile}: scene {s['id']} asset {s['asset']}: {s['reason']}")
    return used, skipped


def _remote_infos(reader: AssetReader, items: list[dict[str, Any]], collections: tuple[str, ...]
                  ) -> dict[str, RasterInfo | AssetReadError]:
    """Headers of the items' remote assets, opened concurrently on :func:`compositing.fetch.io_pool` (a
    wider pool of 64 opened 70 files more slowly: 2.9-3.9 s against 2.2-2.4 s). An unreadable one maps to
    its :class:`AssetReadError`; anything else (an endpoint down) propagates. Local assets are not opened
    here."""
    hrefs: dict[str, None] = {}
    for item in items:
        plan = scene_assets(item, collections)
        if isinstance(plan, dict):
            assets = item.get("assets") or {}
            for key in plan.values():
                href = (assets.get(key) or {}).get("href")
                if isinstance(href, str) and is_remote(href):
                    hrefs[href] = None
    if not hrefs:
        return {}

    def head(href: str) -> tuple[str, RasterInfo | AssetReadError]:
        try:
            return href, reader.info(href)
        except AssetReadError as exc:
            return href, exc

    return dict(io_pool().map(head, hrefs))


def chunk_windows(grid: Grid, chunk_size: int) -> list[tuple[int, int, int, int]]:
    """Output windows aligned to multiples of ``chunk_size`` in the full tile's pixel lattice."""
    if chunk_size <= 0 or chunk_size % 256:
        raise ValueError(f"chunk_size must be a positive multiple of 256 (the HLS block), got {chunk_size}")
    try:
        r0, c0 = grid.offset_in(mgrs_tile_grid(grid.tile)) if grid.tile else (0, 0)
    except GridError:
        r0, c0 = 0, 0
    rows = sorted({0, *[b - r0 for b in range((r0 // chunk_size + 1) * chunk_size, r0 + grid.height, chunk_size)]})
    cols = sorted({0, *[b - c0 for b in range((c0 // chunk_size + 1) * chunk_size, c0 + grid.width, chunk_size)]})
    re_, ce_ = [*rows, grid.height], [*cols, grid.width]
    return [(re_[i], ce_[j], re_[i + 1] - re_[i], ce_[j + 1] - ce_[j])
            for i in range(len(rows)) for j in range(len(cols))]


# ------------------------------------------------------------------------------------------------ output
def output_paths(output_dir: str | os.PathLike[str], tile: str, season: Season) -> tuple[Path, Path]:
    """(COG, JSON sidecar) of a tile's composite, checked to stay under ``output_dir``."""
    base = contained(output_dir, "composites", normalise_tile(tile), what="composite folder")
    return base / f"{season.label}.tif", base / f"{season.label}.json"


def _inputs_key(grid: Grid, season: Season, scenes: list[SceneSource], rule: FmaskRule,
                min_observations: int, collection: str) -> str:
    blob = json.dumps({"grid": grid.to_dict(), "season": season.to_dict(), "rule": rule.describe(),
                       "min_observations": min_observations, "collection": collection,
                       "engine": ENGINE_VERSION, "scenes": [[s.id, sorted(s.hrefs.items())] for s in scenes]},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _tag_dataset(ds: Any, grid: Grid, season: Season, scene_ids: list[str], rule: FmaskRule,
                 collections: tuple[str, ...], min_observations: int) -> None:
    """Dataset and band tags. Band descriptions are the model band ids B02..B07 (core.bands); each band's
    tags give its name, common name, wavelength (of the first collection) and source asset per collection."""
    ds.update_tags(MGRS_TILE=grid.tile, SEASON=season.label, COLLECTION=",".join(collections),
                   SCENE_IDS=json.dumps(scene_ids), N_SCENES=str(len(scene_ids)), MASKED_BITS=rule.describe(),
                   MIN_OBSERVATIONS=str(min_observations), SOFTWARE_VERSION=software_version(),
                   SCALE_FACTOR=str(SCALE_FACTOR), UNITS="HLS surface reflectance x 10000 (mean); count",
                   GRID=json.dumps(grid.to_dict()), NODATA=str(NODATA))
    for i, slot in enumerate(BANDS, start=1):
        per_coll = {c: bands_of(c)[i - 1] for c in collections}
        b = L30_BY_ID[slot]
        ds.set_band_description(i, slot)
        ds.update_tags(i, HLS_BAND=slot, BAND_NAME=b.name, COMMON_NAME=b.common,
                       WAVELENGTH_UM=str(per_coll[collections[0]].wavelength_um),
                       SOURCE_ASSETS=" ".join(f"{c}:{x.asset}" for c, x in per_coll.items()),
                       SCALE_FACTOR=str(SCALE_FACTOR), STATISTIC="mean")
    n = len(BANDS) + 1
    ds.set_band_description(n, "count")
    ds.update_tags(n, BAND_NAME="count", STATISTIC="valid observations", SCALE_FACTOR="1")
    ds.scales = [SCALE_FACTOR] * len(BANDS) + [1.0]
    ds.offsets = [0.0] * n


class _Stats:
    """Per-window count statistics, replaceable when a window is recomputed."""

    def __init__(self, min_observations: int) -> None:
        self.min_obs = max(1, min_observations)
        self.by_window: dict[tuple[int, int, int, int], tuple[int, int, int, int, int]] = {}

    def add(self, window: tuple[int, int, int, int], count: np.ndarray) -> None:
        c = count.astype(np.int64)
        self.by_window[window] = (int(c.sum()), int(c.min()), int(c.max()), int((c >= self.min_obs).sum()), c.size)

    def summary(self) -> dict[str, Any]:
        v = list(self.by_window.values())
        n = sum(x[4] for x in v)
        with_data = sum(x[3] for x in v)
        return {"mean": round(sum(x[0] for x in v) / max(n, 1), 4), "min": min(x[1] for x in v),
                "max": max(x[2] for x in v), "pixels": n, "pixels_with_data": with_data,
                "nodata_fraction": round(1 - with_data / max(n, 1), 6)}


# ------------------------------------------------------------------------------------------------ engine
def _compute_tile(out: TileWriter, reader: AssetReader, sources: list[SceneSource], grid: Grid, rule: FmaskRule,
                  min_observations: int, fail_fast: bool, chunk_size: int, client: Any,
                  gdal_cache_mb: int, threads: int | None, stats: _Stats) -> tuple[set[str], dict[str, dict]]:
    """Run every window, write it into ``out``; recompute windows that used a scene failing elsewhere."""
    bad: dict[str, dict[str, str]] = {}
    used_by_window: dict[tuple[int, int, int, int], set[str]] = {}
    todo = chunk_windows(grid, chunk_size)
    while todo:
        active = [s for s in sources if s.id not in bad]
        args = [(reader, active, w, rule, min_observations, fail_fast, gdal_cache_mb) for w in todo]
        try:
            for _, res in run_tasks(chunk_task, args, client, threads):
                for f in res.failures:
                    bad.setdefault(f["id"], f)
                out.write(res.window, res.data)
                stats.add(res.window, res.data[-1])
                used_by_window[res.window] = set(res.used)
        except AssetReadError as exc:
            raise CompositeError(f"tile {grid.tile}: {exc} (on_read_error='fail')") from exc
        todo = [w for w, used in used_by_window.items() if used & bad.keys()]
        out.invalidate(todo)
        if todo:
            log.info("tile %s: recomputing %d windows without %d failed scenes", grid.tile, len(todo), len(bad))
    used = set().union(*used_by_window.values()) - bad.keys()
    return used, bad


def _engine_compute(engine: str, items: list[dict[str, Any]]) -> Callable[..., tuple[set[str], dict]]:
    """The per-tile compute function of ``CompositeOptions.engine`` (the contract of :func:`_compute_tile`):
    ``kernel`` (this module's windows) or ``stackstac`` (:mod:`compositing.stackstac_engine`)."""
    if engine == "stackstac":
        from .stackstac_engine import tile_computer

        return tile_computer(items)
    return _compute_tile


def _engine_key(key: str, engine: str) -> str:
    """Inputs key of an engine: another engine's output is never reused for the kernel's, nor the reverse."""
    return key if engine == "kernel" else hashlib.sha256(f"{key}:{engine}".encode()).hexdigest()


def _windows_on(client: Any, dask_address: str | None, unit: str, threads: int | None
                ) -> tuple[contextlib.AbstractContextManager[Any], int | None]:
    """(the client context of a tile's windows, their local threads): inside a Dask task, given no client,
    none and :data:`TILE_TASK_THREADS` (the task is the tile) unless ``unit == "window"`` (fan out)."""
    if client is None and not dask_address and unit != "window" and in_dask_worker():
        return contextlib.nullcontext(None), threads or TILE_TASK_THREADS
    return dask_client(None if client else dask_address), threads


def composite_tile(*, tile: str, items: list[dict[str, Any]], aoi: Any, season: Any, output_dir: str,
                   options: CompositeOptions = CompositeOptions(), dask_address: str | None = None,
                   reader: AssetReader | None = None, threads: int | None = None, gdal_cache_mb: int = 64,
                   client: Any = None) -> TileComposite:
    """Composite one MGRS tile (its items only) into ``composites/<TILE>/<SEASON>.tif``.

    Skips the work when the COG and its sidecar exist for the same inputs (``reused=True``). Inside a Dask
    task the windows stay on the task's thread unless ``options.dask_unit == "window"`` (:func:`_windows_on`).
    """
    o = options
    min_observations, collection, chunk_size = o.min_observations, o.collection, o.chunk_size
    collections = parse_collections(collection)
    season = Season.from_any(season)
    rule = FmaskRule(o.mask_snow, o.mask_water, o.mask_high_aerosol)
    grid = tile_grid(tile, aoi)
    cog, sidecar = output_paths(output_dir, tile, season)
    key = _engine_key(_inputs_key(grid, season, _planned(items, collections), rule, min_observations, collection),
                      o.engine)
    if cog.exists() and sidecar.exists():
        old = read_json(sidecar)
        if old.get("inputs_key") == key:
            return _with_granite(TileComposite.from_dict({**old, "reused": True}), o, output_dir, season)
    reader = reader or RasterioReader()
    limit_malloc_arenas()  # before any thread of ours (header reads, windows) makes its own arena
    fail_fast = o.on_read_error == "fail"
    sources, skipped = prepare_scenes(reader, items, grid, fail_fast, collections=collections)
    if not sources:
        raise CompositeError(f"tile {tile}: no readable scene among {len(items)} "
                             f"(skipped: {json.dumps(skipped)[:1000]})")
    stats = _Stats(min_observations)
    windows_client, threads = _windows_on(client, dask_address, o.dask_unit, threads)
    with atomic_path(cog) as tmp:
        writer = TileWriter(tmp.with_name(tmp.name + ".scratch.tif"), grid, len(BANDS) + 1, NODATA)
        try:
            with writer, windows_client as found:
                used, bad = _engine_compute(o.engine, items)(writer, reader, sources, grid, rule, min_observations,
                                                             fail_fast, chunk_size, client or found, gdal_cache_mb,
                                                             threads, stats)
                if not used:
                    raise CompositeError(f"tile {tile}: no readable scene among {len(items)} "
                                         f"(failed: {json.dumps(list(bad.values()))[:1000]})")
                if stats.summary()["pixels_with_data"] == 0:
                    raise CompositeError(f"tile {tile}: no pixel has {min_observations} valid observation(s) in "
                                         f"{len(used)} scene(s) (every pixel masked: {rule.describe()}); no "
                                         "composite written")
                scene_ids = [s.id for s in sources if s.id in used]
                _tag_dataset(writer.ds, grid, season, scene_ids, rule, collections, min_observations)
                writer.to_cog(tmp)
        finally:
            writer.remove()
    skipped += [_asset_name(f, items, collections) for f in bad.values()]
    skipped += [{"id": s.id, "asset": "*", "reason": "no pixel of the scene falls inside the tile's area grid"}
                for s in sources if s.id not in used and s.id not in bad]
    result = TileComposite(tile=tile, path=str(cog), sidecar=str(sidecar), grid=grid.to_dict(),
                           season=season.to_dict(), collection=collection, scenes_used=scene_ids,
                           scenes_skipped=skipped, valid_obs=stats.summary(), masked_bits=rule.describe(),
                           min_observations=min_observations, software_version=software_version(),
                           inputs_key=key, reused=False)
    write_json_atomic(sidecar, result.to_dict())
    return _with_granite(result, o, output_dir, season)


def _planned(items: list[dict[str, Any]], collections: tuple[str, ...]) -> list[SceneSource]:
    """Scenes as the inputs key sees them: id and the hrefs of the assets each would be read from."""
    out = []
    for it in items:
        plan = scene_assets(it, collections)
        assets = it.get("assets") or {}
        hrefs = {} if isinstance(plan, str) else {s: (assets.get(k) or {}).get("href", "") for s, k in plan.items()}
        out.append(SceneSource(it["id"], hrefs, 0, 0, 0, 0))
    return out


def _asset_name(failure: dict[str, str], items: list[dict[str, Any]], collections: tuple[str, ...]) -> dict[str, str]:
    """A read failure with its slot (B05) replaced by the scene's own asset key (S30: B8A)."""
    item = next((it for it in items if it["id"] == failure["id"]), None)
    plan = scene_assets(item, collections) if item else {}
    return {**failure, "asset": plan.get(failure["asset"], failure["asset"]) if isinstance(plan, dict) else failure["asset"]}


def _with_granite(result: TileComposite, o: CompositeOptions, output_dir: str, season: Season) -> TileComposite:
    """With ``o.granite_layout``: make sure the granite-layout copy of the composite exists and is newer."""
    if not o.granite_layout:
        return result
    dst = granite_path(output_dir, result.tile, season)
    if not dst.exists() or dst.stat().st_mtime_ns < Path(result.path).stat().st_mtime_ns:
        write_granite_composite(Path(result.path), dst)
    if result.granite_path != str(dst):
        result = dataclasses.replace(result, granite_path=str(dst))
        write_json_atomic(Path(result.sidecar), {**result.to_dict(), "reused": False})
    return result


def _run_tiles(groups: dict[str, list[dict[str, Any]]], opts: dict[str, Any], client: Any
               ) -> dict[str, TileComposite | CompositeError]:
    """Composite every tile: concurrently on a Dask client (one driver thread per tile submits its windows,
    so the cluster always has windows of some tile to run while another tile writes its COG), else one
    tile after the other on local threads. A tile's CompositeError is returned in its place (raised with
    ``on_read_error="fail"``)."""
    def one(tile: str) -> TileComposite | CompositeError:
        try:
            return composite_tile(tile=tile, items=groups[tile], client=client, **opts)
        except CompositeError as exc:
            if opts["options"].on_read_error == "fail":
                raise
            return exc

    if client is None or len(groups) < 2:
        return {tile: one(tile) for tile in groups}
    with ThreadPoolExecutor(max_workers=len(groups), thread_name_prefix="composite-tile") as pool:
        futures = {tile: pool.submit(one, tile) for tile in groups}
        return {tile: fut.result() for tile, fut in futures.items()}


def build_composites(*, items_json: str, aoi: Any, season: Any, output_dir: str,
                     options: CompositeOptions = CompositeOptions(), tiles: list[str] | None = None,
                     dask_address: str | None = None, reader: AssetReader | None = None,
                     threads: int | None = None) -> CompositeResult:
    """Composite every MGRS tile of a saved search (``search/hls_items.json``).

    On a Dask cluster the unit of work is ``options.dask_unit``: whole tiles on the workers (each writes its
    COG) or windows whose arrays come back here (:func:`compositing.dask_tiles.choose_dask_unit`);
    ``threads``: local threads (no cluster; a tile task uses its one Dask thread). Raises :class:`CompositeError`
    naming every tile without a readable scene (after doing the others).
    """
    groups = group_by_tile(load_items(items_json), str(items_json))
    if tiles:
        wanted = {normalise_tile(t) for t in tiles}
        groups = {t: g for t, g in groups.items() if t in wanted}
    if not groups:
        raise CompositeError(f"{items_json}: no HLS item for tiles {tiles or 'any'}")
    inside: dict[str, list[dict[str, Any]]] = {}
    outside: list[str] = []
    for tile, items in groups.items():
        try:
            tile_grid(tile, aoi)
            inside[tile] = items
        except GridError:
            outside.append(tile)
    opts = dict(aoi=aoi, season=season, output_dir=output_dir, options=options, reader=reader, threads=threads)
    unit = None
    with dask_client(dask_address) as client:
        if client is not None and inside:
            unit = choose_dask_unit(client, options.dask_unit, len(inside), output_dir)
        run = run_tiles_on_workers if unit == "tile" else _run_tiles
        results = run(inside, opts, client)
    done = {t: r for t, r in results.items() if isinstance(r, TileComposite)}  # in tile order
    errors = {t: str(r) for t, r in results.items() if isinstance(r, CompositeError)}
    if errors:
        raise CompositeError("tiles without a composite: " + "; ".join(f"{t}: {e}" for t, e in errors.items()))
    return CompositeResult(season=Season.from_any(season).to_dict(), items_json=str(items_json), tiles=done,
                           tiles_outside_aoi=outside, dask_unit=unit)
