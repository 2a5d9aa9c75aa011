"""What each stage contributes to the run's STAC catalog: typed stage results -> :class:`core.catalog.ItemSpec`.

No Prefect here (plain functions, tested without a flow run); :func:`core.catalog.write_catalog` writes them.
Item ids are stable, so a re-run replaces its items: ``composite-<TILE>-<SEASON>``, ``labels-<TILE>-<SEASON>``,
``chips``, ``model``, ``evaluation-<split>``, ``map-<TILE>-<YEAR>``, ``totals-<YEAR>``, ``change-<Y1>-<Y2>``.
Quicklook PNGs written beside an output (``.quicklook.png``, ``.coverage.png``, ``.density.png``,
``.preview.png``, ``.interval.png``, ``.change.png``) become ``overview`` assets when present.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chips.manifest import ExportResult
from compositing.contracts import CompositeResult, TileComposite
from core.catalog import AssetSpec, ItemSpec
from labels.contracts import LabelsResult
from training.evaluate import EvalResult
from training.mapping import MapResult
from training.totals import AreaTotal, TotalChange
from training.train import TrainResult

MODEL_ID = "model"
QUICKLOOK_SUFFIXES = (".quicklook.png", ".coverage.png", ".density.png", ".preview.png", ".interval.png", ".change.png")


def season_year(season: dict[str, str]) -> str:
    """The year a season is named by: the year of its last day (south: Dec-Mar seasons end in ``year``)."""
    return str(season["end"])[:4]


def composites_from_paths(paths: dict[str, str]) -> CompositeResult:
    """The :class:`CompositeResult` of composites given by path (tile -> COG), from their JSON sidecars (what
    a ``map-biomass`` run resolved from a catalog has); one season."""
    from core.files import read_json

    tiles = {}
    for tile, path in sorted(paths.items()):
        sidecar = Path(path).with_suffix(".json")
        if not sidecar.is_file():
            raise FileNotFoundError(f"composite {path} has no sidecar {sidecar.name} (its TileComposite record)")
        tiles[tile] = TileComposite.from_dict(read_json(sidecar))
    seasons = {json_key(t.season) for t in tiles.values()}
    if len(seasons) != 1:
        raise ValueError(f"composites {sorted(paths.values())} are of several seasons: {sorted(seasons)}")
    first = next(iter(tiles.values()))
    search = Path(first.path).parents[2] / "search" / "hls_items.json"  # <out>/composites/<TILE>/<SEASON>.tif
    return CompositeResult(season=first.season, items_json=str(search) if search.is_file() else "", tiles=tiles)


def json_key(season: dict[str, str]) -> str:
    return f"{season['start']}_{season['end']}"


def _quicklooks(path: str) -> list[AssetSpec]:
    p = Path(path)
    return [AssetSpec(f"overview{s.removesuffix('.png')}".replace(".", "-"), str(p.with_suffix(s)), ["overview"],
                      title=f"quicklook ({s.strip('.').removesuffix('.png')})")
            for s in QUICKLOOK_SUFFIXES if p.with_suffix(s).is_file()]


def composite_items(res: CompositeResult, year: str | None = None) -> list[ItemSpec]:
    """One item per tile composite: source scene ids, skipped scenes, masking parameters, engine version;
    ``year``: the map year it serves (default: the season's last day's year)."""
    out = []
    for tile, t in sorted(res.tiles.items()):
        label = Path(t.path).stem
        assets = [AssetSpec("data", t.path, ["data"], "mean reflectance composite (HLS units x 10000) + count",
                            raster=True), AssetSpec("sidecar", t.sidecar, ["metadata"], "composite result")]
        if res.items_json and Path(res.items_json).is_file():
            assets.append(AssetSpec("source-items", res.items_json, ["metadata"], "HLS STAC items used"))
        props = {"agb:tile": tile, "agb:year": year or season_year(t.season), "agb:season": t.season,
                 "agb:collection": t.collection, "agb:source_scenes": list(t.scenes_used),
                 "agb:scenes_skipped": list(t.scenes_skipped), "agb:valid_obs": t.valid_obs,
                 "agb:parameters": {"masked_bits": t.masked_bits, "min_observations": t.min_observations},
                 "agb:engine": t.software_version}
        out.append(ItemSpec(id=f"composite-{tile}-{label}", collection="composites", assets=assets + _quicklooks(t.path),
                            start=t.season["start"], end=t.season["end"], properties=props,
                            lineage=f"per-pixel mean of Fmask-clear HLS L30 observations of {len(t.scenes_used)} scenes"))
    return out


def label_items(res: LabelsResult) -> list[ItemSpec]:
    """One item per tile label raster: GEDI granules used and skipped, the quality filters and their counts."""
    out = []
    for tile, path in sorted(res.labels.items()):
        label = Path(path).stem
        start, end = label.split("_") if "_" in label else ((res.season or {}).get("start"), (res.season or {}).get("end"))
        assets = [AssetSpec("data", path, ["data"], "GEDI L4A agbd mean (Mg/ha) and shot count", raster=True)]
        if Path(res.shots).is_file():
            assets.append(AssetSpec("shots", res.shots, ["data"], "kept GEDI L4A shots (GeoParquet, EPSG:4326)"))
        props = {"agb:tile": tile, "agb:year": str(end)[:4], "agb:gedi_granules": list(res.granules_used),
                 "agb:granules_skipped": list(res.granules_skipped), "agb:filters": res.filters,
                 "agb:filter_counts": res.filter_counts.get("total", {}),
                 "agb:production_versions": res.production_versions, "agb:label_nodata": res.nodata}
        out.append(ItemSpec(id=f"labels-{tile}-{label}", collection="labels", assets=assets + _quicklooks(path),
                            start=str(start), end=str(end), properties=props,
                            derived_from=[f"composites/composite-{tile}-{label}"],
                            lineage="GEDI L4A v2.1 footprints, quality-filtered, agbd averaged per 30 m pixel"))
    return out


def _span(composites: CompositeResult | list[CompositeResult]) -> tuple[str, str, list[str]]:
    """(first day, last day, composite item refs) over one or several seasons' composites."""
    comps = composites if isinstance(composites, list) else [composites]
    tiles = [t for c in comps for t in c.tiles.values()]
    refs = [f"composites/composite-{t.tile}-{Path(t.path).stem}" for t in tiles]
    return min(t.season["start"] for t in tiles), max(t.season["end"] for t in tiles), refs


def chips_item(res: ExportResult, composites: CompositeResult | list[CompositeResult],
               labels: LabelsResult | list[LabelsResult] | None, geometry: dict[str, Any] | None) -> ItemSpec:
    """The chips export: split sizes, dropped chips, band statistics, its files."""
    start, end, refs = _span(composites)
    assets = [AssetSpec("manifest", res.chips_export, ["metadata"], "export manifest (chips_export.json)"),
              AssetSpec("split", res.split_file, ["metadata"], "spatial split of the chips"),
              AssetSpec("export", res.export_dir, ["data"], "export folder (Esri + TerraTorch layouts)")]
    if res.terratorch_config and Path(res.terratorch_config).is_file():
        assets.append(AssetSpec("terratorch-config", res.terratorch_config, ["metadata"], "TerraTorch config"))
    labs = labels if isinstance(labels, list) else [labels] if labels else []
    label_refs = [f"labels/labels-{t}-{Path(p).stem}" for lab in labs for t, p in sorted(lab.labels.items())]
    props = {"agb:n_chips": res.n_chips, "agb:splits": res.splits, "agb:dropped": res.dropped,
             "agb:candidates": res.candidates, "agb:label_nodata": res.label_nodata, "agb:stats": res.stats}
    return ItemSpec(id="chips", collection="chips", assets=assets, start=start, end=end, properties=props,
                    derived_from=refs + label_refs, geometry=geometry,
                    lineage="chips cut on the composites' grids where GEDI labels fell, spatial-block split")


def model_item(res: TrainResult, config: dict[str, Any], composites: CompositeResult | list[CompositeResult],
               geometry: dict[str, Any] | None) -> ItemSpec:
    """The trained model: preset, training parameters, best epoch, normalisation, checkpoints and history."""
    import torch

    start, end, _ = _span(composites)
    assets = [AssetSpec("checkpoint", res.best_checkpoint, ["model"], "best checkpoint (lowest validation loss)"),
              AssetSpec("last-checkpoint", res.last_checkpoint, ["model"], "last checkpoint (resume)"),
              AssetSpec("history", res.history_path, ["metadata"], "training history")]
    result = Path(res.history_path).with_name("train_result.json")
    if result.is_file():
        assets.append(AssetSpec("train-result", str(result), ["metadata"], "training result"))
    props = {"agb:model": res.model, "agb:parameters": config, "agb:best_epoch": res.best_epoch,
             "agb:best_val_loss": res.best_val_loss, "agb:epochs_run": res.epochs_run, "agb:stopped": res.stopped,
             "agb:parameter_count": res.parameters, "agb:norm": res.norm, "agb:label_mean": res.label_mean,
             "agb:init": res.init}
    return ItemSpec(id=MODEL_ID, collection="models", assets=assets, start=start, end=end, properties=props,
                    derived_from=["chips/chips"], geometry=geometry, software={"torch": torch.__version__},
                    lineage="Swin + UPerNet regressor fine-tuned on labelled pixels of the chips (loss on labels only)")


def evaluation_item(res: EvalResult, composites: CompositeResult | list[CompositeResult],
                    geometry: dict[str, Any] | None) -> ItemSpec:
    """The evaluation: metrics against the baselines, interval calibration and its coverage, plots."""
    start, end, _ = _span(composites)
    assets = [AssetSpec("metrics", res.metrics_path, ["metadata"], "metrics.json")]
    if res.calibration:
        assets.append(AssetSpec("calibration", res.calibration, ["metadata"], "prediction-interval calibration"))
    assets += [AssetSpec(k, p, ["overview"], k) for k, p in sorted(res.plots.items()) if Path(p).is_file()]
    model = res.metrics.get("model", {})
    props = {"agb:model_item": MODEL_ID, "agb:split": res.split, "agb:n_pixels": res.n_pixels,
             "agb:metrics": {k: model.get(k) for k in ("n", "rmse", "mae", "bias", "r2")},
             "agb:model_beats": res.model_beats, "agb:interval": _interval_summary(res.interval)}
    return ItemSpec(id=f"evaluation-{res.split}", collection="evaluations", assets=assets, start=start, end=end,
                    properties=props, derived_from=[f"models/{MODEL_ID}", "chips/chips"], geometry=geometry,
                    lineage=f"model and baselines scored on the {res.split} split's GEDI-labelled pixels")


def _interval_summary(interval: dict[str, Any] | None) -> dict[str, Any] | None:
    if not interval:
        return None
    keys = ("level", "split", "in_sample", "n", "coverage", "mean_width", "calibration_split", "method", "covers")
    return {k: interval.get(k) for k in keys}


def _map_facts(m: MapResult | str) -> tuple[str, list[str], str | None, float | None, str | None]:
    """(path, band names, calibration, valid fraction, checkpoint) of a map result or a map path (from its tags)."""
    import rasterio

    path = m.map if isinstance(m, MapResult) else m
    with rasterio.open(path) as ds:
        tags = ds.tags()
        if isinstance(m, MapResult):
            return m.map, list(m.bands or ["agb"]), m.calibration, m.valid_fraction, tags.get("CHECKPOINT")
        return m, [d or "" for d in ds.descriptions], tags.get("CALIBRATION"), None, tags.get("CHECKPOINT")


def map_items(maps: dict[str, MapResult | str], composites: CompositeResult, eval_split: str | None = "test",
              year: str | None = None, model_ref: bool = True) -> list[ItemSpec]:
    """One item per tile map (``maps``: tile -> result or COG path) of the composites' season; ``year``: the
    map year (default: the season's last day's year); ``model_ref``: link to the catalog's ``model`` item (its
    checkpoint made the maps)."""
    out = []
    year = year or season_year(composites.season)
    for tile, m in sorted(maps.items()):
        path, bands, calibration, valid, checkpoint = _map_facts(m)
        comp = composites.tiles[tile]
        refs = [f"models/{MODEL_ID}"] if model_ref else []
        refs.append(f"composites/composite-{tile}-{Path(comp.path).stem}")
        if calibration and eval_split:
            refs.append(f"evaluations/evaluation-{eval_split}")
        props = {"agb:tile": tile, "agb:year": year, "agb:season": comp.season,
                 "agb:model_item": MODEL_ID if model_ref else None, "agb:checkpoint": checkpoint,
                 "agb:bands": bands, "agb:calibration": calibration, "agb:valid_fraction": valid}
        out.append(ItemSpec(id=f"map-{tile}-{year}", collection="maps",
                            assets=[AssetSpec("data", path, ["data"], "AGB (Mg/ha) with interval bands", raster=True)]
                            + _quicklooks(path), start=comp.season["start"], end=comp.season["end"],
                            properties=props, derived_from=refs,
                            lineage="tiled inference, crops of the training chip size every 6/7 of it "
                                    "(granite: 224 every 192), overlaps averaged"))
    return out


def totals_items(totals: list[AreaTotal], changes: list[TotalChange], *, table: str | None,
                 seasons: dict[str, dict[str, str]], geometry: dict[str, Any] | None,
                 change_rasters: dict[str, list[str]] | None = None) -> list[ItemSpec]:
    """``totals-<year>`` per map year and ``change-<y1>-<y2>`` per pair (``seasons``: year -> season;
    ``change_rasters``: ``"<y1>-<y2>"`` -> difference rasters, when there are any)."""
    extra = [AssetSpec("table", table, ["data"], "totals and changes (CSV)")] if table else []
    out = []
    for t in totals:
        refs = [f"maps/map-{Path(m).stem.removesuffix('_agb')}-{t.year}" for m in t.maps]
        out.append(ItemSpec(id=f"totals-{t.year}", collection="totals", assets=list(extra),
                            start=seasons[t.year]["start"], end=seasons[t.year]["end"],
                            properties={"agb:year": t.year, "agb:totals": t.to_dict()}, derived_from=refs,
                            geometry=geometry, lineage=t.method))
    for c in changes:
        key = f"{c.from_year}-{c.to_year}"
        rasters = [AssetSpec(f"difference-{Path(r).stem}", r, ["data"], "AGB difference (Mg/ha)", raster=True)
                   for r in (change_rasters or {}).get(key, [])]
        quick = [q for r in (change_rasters or {}).get(key, []) for q in _quicklooks(r)]
        out.append(ItemSpec(id=f"change-{key}", collection="totals", assets=extra + rasters + quick,
                            start=seasons[c.from_year]["start"], end=seasons[c.to_year]["end"],
                            properties={"agb:from_year": c.from_year, "agb:to_year": c.to_year,
                                        "agb:change": c.to_dict()},
                            derived_from=[f"totals/totals-{c.from_year}", f"totals/totals-{c.to_year}"],
                            geometry=None if rasters else geometry, lineage=c.method))
    return out
