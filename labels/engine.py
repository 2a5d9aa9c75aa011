"""GEDI L4A labels engine: search -> read + filter per granule -> GeoParquet -> label COG per tile.

Each step is its own function taking and returning JSON-able values (paths, counts) so flows can run
them as separate tasks; :func:`run_gedi_labels` chains them. Outputs under ``output_dir``:
``labels/granules/<granule>.parquet|.json`` (per-granule shots and counts, re-used when the recorded
inputs match), ``labels/gedi_shots.parquet`` (+ ``.json``), ``labels/<TILE>/<SEASON>.tif`` (+ ``.json``).
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import logging
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np

from core.area import AoiError, Season, parse_aoi, parse_season_label, resolve_season
from core.constants import LABEL_NODATA
from core.files import UnsafePathError, contained, read_json, write_json_atomic
from core.grid import Grid, GridError, normalise_tile
from labels.contracts import READ_ERROR_MODES, LabelOptions, LabelsResult
from labels.filters import ShotFilters, add_counts, empty_counts
from labels.granule import GediReadError, basename_of, parse_granule_name
from labels.rasterize import rasterize_shots, write_label_cog
from labels.reader import read_granule_shots
from labels.search import search_granules
from labels.shots import concat_shots, read_shots, shots_frame, write_shots
from labels.sources import FETCH_WORKERS

log = logging.getLogger(__name__)

READ_WORKERS = 8
"""Granules read at once by :func:`run_gedi_labels` (threads; each read waits on the network most of the
time, so the bound is about the server's and the link's connections, not the CPUs)."""


class LabelsError(RuntimeError):
    """A labels stage that would produce an empty product (no usable granule, no kept shot, no labelled
    pixel); the message lists every granule with the reason it gave nothing. Nothing was written."""



def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _recorded(sidecar: Path, inputs: dict[str, Any], *outputs: Path) -> dict[str, Any] | None:
    """The recorded result when ``sidecar`` holds the same inputs and every output exists."""
    if not sidecar.is_file() or not all(p.exists() for p in outputs):
        return None
    rec = read_json(sidecar)
    same = rec.get("inputs") == json.loads(json.dumps(inputs, default=str))
    return rec.get("result") if same else None


def make_filters(*, season: Any = None, require_l4_quality: bool = True, drop_degraded: bool = True,
                 min_sensitivity: float | None = None, leaf_on_only: bool = False,
                 pft_classes: list[int] | None = None) -> ShotFilters:
    """:class:`ShotFilters` from flow parameters (``season`` None = no date window)."""
    window = Season.from_any(season) if season else None
    return ShotFilters(start=window.start if window else None, end=window.end if window else None,
                       require_l4_quality=require_l4_quality, drop_degraded=drop_degraded,
                       min_sensitivity=min_sensitivity, leaf_on_only=leaf_on_only,
                       pft_classes=tuple(pft_classes) if pft_classes is not None else None)


def read_gedi_granule(granule: str, *, aoi: Any, filters: dict[str, Any], output_dir: str,
                      on_read_error: str = "skip", session: Any = None) -> dict[str, Any]:
    """Read one granule's shots in the AOI, filter, write ``labels/granules/<id>.parquet``.

    ``filters``: :meth:`ShotFilters.to_dict` (or :func:`make_filters` keywords). Returns
    ``{"granule", "href", "status": "ok", "shots", "counts", "per_beam", "warnings",
    "production_version", "bytes_read", "file_size"}``, or with ``on_read_error="skip"``
    ``{"granule", "href", "status": "skipped", "reason"}`` for an unusable file.
    """
    if on_read_error not in READ_ERROR_MODES:
        raise ValueError(f"on_read_error must be one of {READ_ERROR_MODES}, got {on_read_error!r}")
    flt = ShotFilters(**{**filters, "start": _date_or_none(filters.get("start")),
                         "end": _date_or_none(filters.get("end"))})
    geom = parse_aoi(aoi)
    name = basename_of(granule)
    gid = name[:-3] if name.endswith(".h5") else name
    inputs = {"href": granule, "aoi": geom.wkt, "filters": flt.to_dict()}
    try:
        folder = contained(output_dir, "labels", "granules", what="granule name")
        parquet, sidecar = (contained(folder, f"{gid}{ext}", what="granule file name") for ext in (".parquet", ".json"))
    except UnsafePathError as exc:
        if on_read_error == "skip":
            log.warning("skipping granule %r: %s", granule, exc)
            return {"granule": gid, "href": granule, "status": "skipped", "reason": str(exc)}
        raise GediReadError(f"{granule}: {exc}") from None
    done = _recorded(sidecar, inputs, parquet)
    if done is not None:
        return done
    try:
        shots = read_granule_shots(granule, geom, flt, session=session)
    except GediReadError as exc:
        if on_read_error == "skip":
            log.warning("skipping granule: %s", exc)
            return {"granule": gid, "href": granule, "status": "skipped", "reason": str(exc)}
        raise
    write_shots(shots_frame(shots.columns, shots.granule_id, shots.production_version), parquet)
    result = {"granule": shots.granule_id, "href": granule, "status": "ok", "shots": str(parquet),
              "counts": shots.counts, "per_beam": shots.per_beam, "warnings": shots.warnings,
              "production_version": shots.production_version, "bytes_read": shots.bytes_read,
              "file_size": shots.file_size}
    write_json_atomic(sidecar, {"inputs": inputs, "result": result})
    for w in shots.warnings:
        log.warning(w)
    return result


def _date_or_none(v: Any) -> Any:
    from datetime import date

    return date.fromisoformat(v) if isinstance(v, str) else v


def prefer_production_version(granules: list[str]) -> tuple[list[str], list[dict[str, str]]]:
    """Drop ``01`` granules whose ``02`` reprocessing (same orbit and sub-orbit) is also in the list.

    Names that do not parse are kept (the reader reports them). Returns (kept, skipped records).
    """
    best: dict[tuple[int, int], tuple[str, str]] = {}
    for href in granules:
        try:
            g = parse_granule_name(href)
        except GediReadError:
            continue
        cur = best.get(g.key)
        if cur is None or g.production_version > cur[1]:
            best[g.key] = (href, g.production_version)
    kept, skipped, seen = [], [], set()
    for href in granules:
        if href in seen:
            continue
        seen.add(href)
        try:
            g = parse_granule_name(href)
        except GediReadError:
            kept.append(href)
            continue
        winner = best[g.key][0]
        if winner == href:
            kept.append(href)
        elif basename_of(winner) == basename_of(href):
            skipped.append({"granule": g.granule_id, "reason": f"duplicate of {winner}"})
        else:
            skipped.append({"granule": g.granule_id, "reason": f"superseded by production version "
                            f"{best[g.key][1]} ({basename_of(winner)})"})
    return kept, skipped


def merge_shots(results: list[dict[str, Any]], *, output_dir: str) -> dict[str, Any]:
    """Concatenate the per-granule shots of ``results`` into ``labels/gedi_shots.parquet``."""
    ok = [r for r in results if r.get("status") == "ok"]
    inputs = {"granules": [(r["granule"], r["counts"]["kept"], r["shots"]) for r in ok]}
    path = Path(output_dir) / "labels" / "gedi_shots.parquet"
    sidecar = path.with_suffix(".json")
    done = _recorded(sidecar, inputs, path)
    if done is not None:
        return done
    gdf = concat_shots([read_shots(r["shots"]) for r in ok])
    write_shots(gdf, path)
    result = {"shots": str(path), "n_shots": int(len(gdf)), "digest": _digest(inputs)}
    write_json_atomic(sidecar, {"inputs": inputs, "result": result})
    return result


def composite_grids(composites: Any, season_label: str | None = None) -> list[dict[str, Any]]:
    """``[{"tile", "season", "path", "grid"}]`` of composite COGs.

    ``composites``: a COG path, a list of them, or a folder holding ``composites/<TILE>/<SEASON>.tif``
    (an hls-composite ``output_dir``) or ``<TILE>/<SEASON>.tif``. With ``season_label`` only that
    season's files are taken from a folder. Raises ``ValueError`` when a path is missing or two
    composites claim the same tile and season.
    """
    paths: list[Path] = []
    if isinstance(composites, (str, Path)) and Path(composites).is_dir():
        root = Path(composites)
        root = root / "composites" if (root / "composites").is_dir() else root
        pattern = f"*/{season_label}.tif" if season_label else "*/*.tif"
        paths = sorted(root.glob(pattern))
        if not paths:
            raise ValueError(f"{root}: no composite COGs matching {pattern}")
    else:
        items = [composites] if isinstance(composites, (str, Path)) else list(composites)
        paths = [Path(p) for p in items]
    out: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for p in paths:
        if not p.is_file():
            raise ValueError(f"composite not found: {p}")
        grid = Grid.from_raster(str(p))
        try:
            tile = normalise_tile(grid.tile or p.parent.name)
            season = parse_season_label(_raster_tag(p, "SEASON") or p.stem, "SEASON tag (or file name)").label
        except (GridError, AoiError) as exc:
            raise ValueError(f"composite {p}: {exc}; refused (the tile and season name the label raster "
                             "written for it)") from None
        grid = Grid.from_dict({**grid.to_dict(), "tile": tile})
        if (tile, season) in seen:
            raise ValueError(f"two composites for tile {tile} season {season}: {p}")
        seen.add((tile, season))
        out.append({"tile": tile, "season": season, "path": str(p), "grid": grid.to_dict()})
    return out


def _raster_tag(path: Path, key: str) -> str | None:
    import rasterio

    with rasterio.open(path) as ds:
        return ds.tags().get(key)


def rasterize_labels(*, shots: str, grid: dict[str, Any], output_path: str, nodata: float = LABEL_NODATA,
                     tags: dict[str, Any] | None = None) -> dict[str, Any]:
    """Per-pixel mean AGBD and shot count of the shots GeoParquet ``shots`` on ``grid`` (a Grid dict).

    Writes the 2-band float32 COG ``output_path`` (+ ``.json`` sidecar); nodata where no shot fell.
    """
    g = Grid.from_dict(grid)
    path = Path(output_path)
    inputs = {"shots": shots, "shots_digest": _file_digest(shots), "grid": g.to_dict(), "nodata": nodata,
              "tags": tags or {}}
    done = _recorded(path.with_suffix(".json"), inputs, path)
    if done is not None:
        return done
    df = read_shots(shots, columns=["lon", "lat", "agbd"])
    raster = rasterize_shots(df["lon"].to_numpy(), df["lat"].to_numpy(), df["agbd"].to_numpy(), g, nodata)
    write_label_cog(path, raster, g, tags or {})
    result = {"tile": g.tile, "path": str(path), "n_shots": int(raster.count.sum()),
              "n_labelled_pixels": raster.n_labelled, "all_nodata": raster.all_nodata,
              "agbd_mean": float(raster.agbd[raster.count > 0].mean()) if not raster.all_nodata else None}
    write_json_atomic(path.with_suffix(".json"), {"inputs": inputs, "result": result})
    return result


def _file_digest(path: str) -> str:
    side = Path(path).with_suffix(".json")
    if side.is_file():
        return str(read_json(side).get("result", {}).get("digest", ""))
    st = Path(path).stat()
    return f"{st.st_size}-{st.st_mtime_ns}"


def run_gedi_labels(*, aoi: Any, year: int | None = None, season: Any = None, granules: list[str] | None = None,
                    composites: Any = None, output_dir: str, options: LabelOptions = LabelOptions(),
                    session: Any = None, on_granule: Callable[[int, int], None] | None = None,
                    read_workers: int = READ_WORKERS) -> LabelsResult:
    """GEDI L4A shots in ``aoi`` -> ``labels/gedi_shots.parquet`` + ``labels/<TILE>/<SEASON>.tif``.

    Date window: ``season`` > default season of ``year`` > the composites' ``SEASON`` tag; without any,
    no date filter (and ``granules`` must be given). ``granules``: local paths or URLs (None: search
    ``options.stac_url``). ``on_granule(done, total)``: called after each granule is read (progress).
    ``read_workers``: granules read at once (1: one after the other); the outputs do not depend on it.
    See docs/labels.md.
    """
    o = options
    geom = parse_aoi(aoi)
    window = resolve_season(geom, year, season) if (season or year is not None) else None
    grids = composite_grids(composites, window.label if window else None) if composites else []
    if window is None and grids:
        seasons = {g["season"] for g in grids}
        if len(seasons) != 1:
            raise ValueError(f"composites span several seasons {sorted(seasons)}: give `season` or `year`")
        window = Season.from_any(seasons.pop())
    warnings: list[str] = []
    if window is None:
        if not granules:
            raise ValueError("give `year`, `season`, composites with a SEASON tag, or `granules`")
        warnings.append("no date window (no year, season or composite season): shots of any date kept")
    flt = make_filters(season=window.to_dict() if window else None, require_l4_quality=o.require_l4_quality,
                       drop_degraded=o.drop_degraded, min_sensitivity=o.min_sensitivity,
                       leaf_on_only=o.leaf_on_only, pft_classes=list(o.pft_classes) if o.pft_classes else None)
    if granules is None:
        granules = search_granules(aoi=aoi, season=window.to_dict(), stac_url=o.stac_url,  # type: ignore[union-attr]
                                   collection=o.collection, output_dir=output_dir)
    hrefs, skipped = prefer_production_version([str(g) for g in granules])
    if session is None and any(h.startswith(("http://", "https://")) for h in hrefs):
        from core.earthdata_http import earthdata_session

        session = earthdata_session()  # one session for the run: the data host's cookie is re-used
        _pool_for(session, read_workers * FETCH_WORKERS)
    if o.skip_version_01:
        hrefs, old = _drop_version_01(hrefs)
        skipped += old
    results = read_granules(hrefs, aoi=aoi, filters=flt.to_dict(), output_dir=output_dir,
                            on_read_error=o.on_read_error, session=session, workers=read_workers,
                            on_granule=on_granule)
    refuse_empty(results, skipped, grids)  # before anything of the stage's product is written
    merged = merge_shots(results, output_dir=output_dir)
    res = _assemble(results, skipped, merged, grids, window, flt, o.nodata, o.collection, output_dir, warnings)
    return LabelsResult(**res, granules=list(hrefs))


def _pool_for(session: Any, connections: int) -> None:
    """Keep up to ``connections`` connections per host in ``session`` (requests keeps 10 and logs a warning
    for each further one it drops): the granules' concurrent range requests re-use them."""
    from requests.adapters import HTTPAdapter

    for prefix in ("https://", "http://"):
        session.mount(prefix, HTTPAdapter(pool_connections=10, pool_maxsize=max(10, connections)))


def read_granules(hrefs: list[str], *, aoi: Any, filters: dict[str, Any], output_dir: str,
                  on_read_error: str = "skip", session: Any = None, workers: int = READ_WORKERS,
                  on_granule: Callable[[int, int], None] | None = None) -> list[dict[str, Any]]:
    """:func:`read_gedi_granule` of every href, at most ``workers`` at once; results in ``hrefs`` order.

    A granule that raises (``on_read_error`` "fail"/"raise", an endpoint outage) stops the reading: the
    granules not started are cancelled, the running ones finish, and the error of the first granule in
    ``hrefs`` order that raised is raised, as reading them one after the other would.
    ``on_granule(done, total)`` runs in the calling thread as each granule finishes. Two hrefs with the
    same file name (their outputs share a path) are read one after the other.
    """
    def one(h: str) -> dict[str, Any]:
        return read_gedi_granule(h, aoi=aoi, filters=filters, output_dir=output_dir,
                                 on_read_error=on_read_error, session=session)

    names = [basename_of(h) for h in hrefs]
    if workers <= 1 or len(hrefs) <= 1 or len(set(names)) < len(names):  # one name twice: same output files
        out = []
        for i, h in enumerate(hrefs):
            out.append(one(h))
            if on_granule is not None:
                on_granule(i + 1, len(hrefs))
        return out
    with ThreadPoolExecutor(max_workers=min(workers, len(hrefs)), thread_name_prefix="gedi-read") as pool:
        futures = [pool.submit(contextvars.copy_context().run, one, h) for h in hrefs]  # the caller's log context
        pending: set[Future] = set(futures)
        done_n = 0
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            if any(f.exception() is not None for f in done):
                for f in pending:
                    f.cancel()
                wait(pending)
                break
            for _ in done:
                done_n += 1
                if on_granule is not None:
                    on_granule(done_n, len(hrefs))
    failed = [f for f in futures if f.done() and not f.cancelled() and f.exception() is not None]
    if failed:
        raise failed[0].exception()  # type: ignore[misc]
    return [f.result() for f in futures]


def refuse_empty(results: list[dict[str, Any]], skipped: list[dict[str, str]], grids: list[dict[str, Any]]) -> None:
    """:class:`LabelsError` naming every granule and its reason when the stage would write an empty
    product: no granule read, no shot kept, or (with composites) no kept shot on any composite grid."""
    ok = [r for r in results if r["status"] == "ok"]
    reasons = [f"{s['granule']}: {s['reason']}" for s in skipped]
    reasons += [f"{r['granule']}: {r['reason']}" for r in results if r["status"] != "ok"]
    skipped_note = f"; skipped: {'; '.join(reasons)}" if reasons else ""
    if not ok:
        raise LabelsError(f"no usable GEDI L4A granule among the {len(results) + len(skipped)} given, so no label "
                          f"was written{skipped_note or ' (no granule given)'}")
    if sum(r["counts"]["kept"] for r in ok) == 0:
        per = "; ".join(f"{r['granule']}: {_none_kept(r['counts'])}" for r in ok)
        raise LabelsError(f"no GEDI shot was kept in the area and season, so no label was written ({per})"
                          f"{skipped_note}")
    if grids and sum(_shots_on_grid(ok, g["grid"]) for g in grids) == 0:
        tiles = ", ".join(f"{g['tile']} ({g['path']})" for g in grids)
        raise LabelsError(f"none of the {sum(r['counts']['kept'] for r in ok)} kept GEDI shots falls on the "
                          f"composite grids of {tiles}: every label raster would be empty, none was written")


def _none_kept(counts: dict[str, int]) -> str:
    removed = ", ".join(f"{k} {v}" for k, v in counts.items() if k not in ("input", "kept") and v)
    return f"{counts.get('input', 0)} shots read, removed: {removed or 'none'}"


def _shots_on_grid(ok: list[dict[str, Any]], grid: dict[str, Any]) -> int:
    from labels.rasterize import pixel_index, project_for_grid

    g = Grid.from_dict(grid)
    n = 0
    for r in ok:
        if not r["counts"]["kept"]:
            continue
        df = read_shots(r["shots"], columns=["lon", "lat"])
        x, y = project_for_grid(df["lon"].to_numpy(), df["lat"].to_numpy(), g)
        n += int((pixel_index(x, y, g) >= 0).sum())
    return n


def _drop_version_01(hrefs: list[str]) -> tuple[list[str], list[dict[str, str]]]:
    kept, skipped = [], []
    for h in hrefs:
        try:
            v = parse_granule_name(h).production_version
        except GediReadError:
            v = None
        if v == "01":
            skipped.append({"granule": basename_of(h)[:-3], "reason": "production version 01 "
                            "(skip_version_01=True; AGBD wrong for selected_algorithm 10)"})
        else:
            kept.append(h)
    return kept, skipped


def _assemble(results: list[dict[str, Any]], skipped: list[dict[str, str]], merged: dict[str, Any],
              grids: list[dict[str, Any]], window: Season | None, flt: ShotFilters, nodata: float,
              collection: str, output_dir: str, warnings: list[str]) -> dict[str, Any]:
    ok = [r for r in results if r["status"] == "ok"]
    skipped = skipped + [{"granule": r["granule"], "reason": r["reason"]} for r in results
                         if r["status"] != "ok"]
    total = empty_counts()
    for r in ok:
        add_counts(total, r["counts"])
        warnings.extend(r["warnings"])
    tags = {"COLLECTION": collection, "SEASON": window.label if window else "",
            "GRANULE_IDS": [r["granule"] for r in ok], "FILTERS": flt.to_dict(),
            "SHOTS": Path(merged["shots"]).name}
    labels, stats = {}, {}
    for g in grids:
        out = contained(output_dir, "labels", g["tile"], f"{g['season']}.tif", what="label raster path")
        res = rasterize_labels(shots=merged["shots"], grid=g["grid"], output_path=str(out), nodata=nodata,
                               tags={**tags, "SEASON": g["season"], "COMPOSITE": Path(g["path"]).name})
        labels[g["tile"]] = res["path"]
        stats[g["tile"]] = {k: res[k] for k in ("n_shots", "n_labelled_pixels", "all_nodata", "agbd_mean")}
        if res["all_nodata"]:
            warnings.append(f"tile {g['tile']}: no shot fell on the grid; the label raster is all nodata")
    if window is not None:
        warnings.extend(f"composite {g['path']} has season {g['season']}, shots were taken from "
                        f"{window.label}" for g in grids if g["season"] != window.label)
    if not grids:
        warnings.append("no composites given: only the shots GeoParquet was written, no label rasters")
    return {"shots": merged["shots"], "n_shots": merged["n_shots"], "labels": labels, "label_stats": stats,
            "all_nodata": {t: s["all_nodata"] for t, s in stats.items()},
            "filter_counts": {"total": total, "per_granule": {r["granule"]: r["counts"] for r in ok}},
            "granules_used": [r["granule"] for r in ok], "granules_skipped": skipped,
            "production_versions": {r["granule"]: r["production_version"] for r in ok},
            "warnings": list(dict.fromkeys(warnings)), "season": window.to_dict() if window else None,
            "filters": flt.to_dict(), "nodata": nodata,
            "bytes_read": int(np.sum([r["bytes_read"] for r in ok])) if ok else 0}
