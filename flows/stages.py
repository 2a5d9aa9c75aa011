"""Stage flows: each wraps one engine as Prefect tasks, with the input-keyed stage cache and UI artifacts.

Tasks pass paths and small JSON results, never arrays. Network-bound tasks (STAC searches) retry with
backoff, hold a slot of the server-wide ``stac-requests`` concurrency limit while they query, and carry the
``stac`` tag; the engines have their own bounded HTTP retries underneath.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows import artifacts as art
from flows.cache import load_cached, stage_key, store
from flows.params import (
    EvaluateModelParams,
    ExportChipsParams,
    GediLabelsParams,
    HlsCompositeParams,
    PredictMapParams,
    SampleWorldParams,
    TrainModelParams,
)

NET_RETRIES = dict(retries=3, retry_delay_seconds=[5, 20, 60], retry_jitter_factor=0.5)
STAC_LIMIT = "stac-requests"  # global concurrency limit shared by every flow run on the server
STAC_LIMIT_DEFAULT = 4


def stac_slot() -> contextlib.AbstractContextManager[None]:
    """A slot of the server-wide ``stac-requests`` concurrency limit (created with 4 slots when missing;
    change it with ``prefect gcl update stac-requests --limit N``)."""
    from prefect.client.orchestration import get_client
    from prefect.concurrency.sync import concurrency
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(STAC_LIMIT)
        except ObjectNotFound:
            from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=STAC_LIMIT,
                                                                                    limit=STAC_LIMIT_DEFAULT))
            except Exception as exc:  # created concurrently by another run: fine, use it
                _logger().debug("concurrency limit %s: %s", STAC_LIMIT, exc)
    return concurrency(STAC_LIMIT, occupy=1)


def _logger() -> logging.Logger | logging.LoggerAdapter[Any]:
    try:
        return get_run_logger()
    except Exception:  # outside a run context (e.g. .fn() in tests)
        return logging.getLogger("flows")


def cached_stage(stage: str, params: dict[str, Any], cache_root: str, force: bool,
                 body: Callable[[], dict[str, Any]], summarize: Callable[[dict[str, Any], bool], None]) -> dict:
    """Return the cached result of ``stage`` for ``params`` or run ``body`` and cache it."""
    key = stage_key(stage, params)
    if not force:
        hit = load_cached(cache_root, stage, key)
        if hit is not None:
            _logger().info("%s: inputs unchanged (key %s) and outputs present: skipped", stage, key)
            hit = {**hit, "cached": True}
            summarize(hit, True)
            return hit
    result = body()
    result = {**result, "cache_key": key}
    store(cache_root, stage, key, result)
    summarize(result, False)
    return {**result, "cached": False}


def _skip_note(cached: bool) -> str:
    return "\n\n_Skipped: a finished result for the same inputs was found (force=true re-runs)._\n" if cached else ""


# --------------------------------------------------------------------------------------------- sample world
@task(name="generate-sample-world", cache_policy=NO_CACHE)
def generate_world_task(output_dir: str, size: str, seed: int) -> dict[str, Any]:
    from sampleworld import generate_world

    return generate_world(output_dir, size=size, seed=seed)


@flow(name="sample-world", log_prints=True)
def sample_world(params: SampleWorldParams) -> dict[str, Any]:
    """Write the deterministic sample world (HLS COGs, GEDI L4A granules, STAC JSON, truth rasters)."""
    manifest = generate_world_task(str(Path(params.output_dir).resolve()), params.size, params.seed)
    art.markdown("sample-world", f"# Sample world `{params.size}` (seed {params.seed})\n\n"
                 + art.table_md(["key", "value"], [(k, manifest.get(k)) for k in ("aoi", "tiles", "year", "season")]))
    return manifest


# --------------------------------------------------------------------------------------------- composites
@task(name="search-hls", cache_policy=NO_CACHE, tags=["stac"], **NET_RETRIES)
def search_hls_task(**kwargs: Any) -> dict[str, Any]:
    from compositing.search import search_hls

    with stac_slot():
        return search_hls(**kwargs)


@task(name="composite-tiles", cache_policy=NO_CACHE)
def composite_task(**kwargs: Any) -> dict[str, Any]:
    from compositing.composite import build_composites

    return build_composites(**kwargs)


@flow(name="hls-composite", log_prints=True)
def hls_composite(params: HlsCompositeParams) -> dict[str, Any]:
    """Search HLS L30 for the area's season and build one cloud-free mean composite per MGRS tile."""
    from core.area import resolve_season

    p = params.model_dump(mode="json")
    out = str(Path(params.output_dir).resolve())
    season = resolve_season(params.aoi, params.year, p["season"])

    def body() -> dict[str, Any]:
        search = search_hls_task(aoi=params.aoi, year=params.year, season=season.to_dict(),
                                 max_cloud_cover=params.max_cloud_cover, stac_url=params.stac_url,
                                 collection=params.collection, output_dir=out)
        progress = art.Progress("hls-composite-progress", "MGRS tiles composited")
        tiles: dict[str, Any] = {}
        outside: list[str] = []
        for i, tile in enumerate(search["tiles"]):  # one task per MGRS tile: a failure names its tile
            res = composite_task.with_options(name=f"composite-{tile}")(
                items_json=search["items_json"], aoi=params.aoi, season=season.to_dict(), output_dir=out,
                mask_snow=params.mask_snow, mask_water=params.mask_water, tiles=[tile],
                mask_high_aerosol=params.mask_high_aerosol, min_observations=params.min_observations,
                on_read_error=params.on_read_error, dask_address=params.dask_address)
            tiles.update(res["tiles"])
            outside += res.get("tiles_outside_aoi", [])
            progress.update((i + 1) / len(search["tiles"]))
        if not tiles:
            raise RuntimeError(f"no composite: the search found no HLS scene over the area ({search['items_json']})")
        return {"season": season.to_dict(), "search": search, "tiles": tiles, "tiles_outside_aoi": outside,
                "output_dir": out}

    return cached_stage("hls-composite", p, out, params.force, body, _summarize_composite)


def _summarize_composite(res: dict[str, Any], cached: bool) -> None:
    rows, skipped, images = [], [], []
    for tile, t in res.get("tiles", {}).items():
        stats = t.get("valid_obs", {}) or {}
        rows.append((tile, len(t.get("scenes_used", [])), len(t.get("scenes_skipped", [])),
                     stats.get("mean", ""), stats.get("nodata_fraction", ""), t.get("path", "")))
        skipped += [(tile, s.get("id", ""), s.get("asset", ""), s.get("reason", "")) for s in t.get("scenes_skipped", [])]
        png = art.safe_quicklook(art.quicklook_rgb, t["path"], str(Path(t["path"]).with_suffix(".quicklook.png")))
        if png:
            images.append(art.image_markdown(f"{tile} true colour", png))
    search = res.get("search", {})
    text = (f"# HLS composites {res.get('season', {})}\n\nScenes found: {search.get('n_items', '?')}"
            f" (dropped by cloud filter: {search.get('dropped_cloud', 0)}, duplicate ids: {search.get('duplicates', 0)})"
            + _skip_note(cached) + "\n\n"
            + art.table_md(["tile", "scenes used", "skipped", "mean valid obs", "nodata fraction", "path"], rows)
            + ("\n\n## Skipped scenes\n\n" + art.table_md(["tile", "scene", "asset", "reason"], skipped) if skipped else "")
            + "\n\n" + "\n".join(images))
    art.markdown("hls-composite-summary", text, "Composites per MGRS tile")


# --------------------------------------------------------------------------------------------- labels
@task(name="search-gedi", cache_policy=NO_CACHE, tags=["stac"], **NET_RETRIES)
def search_gedi_task(**kwargs: Any) -> list[str]:
    from labels import search_granules

    with stac_slot():
        return search_granules(**kwargs)


@task(name="gedi-labels", cache_policy=NO_CACHE)
def labels_task(**kwargs: Any) -> dict[str, Any]:
    from labels import run_gedi_labels

    return run_gedi_labels(**kwargs)


@flow(name="gedi-labels", log_prints=True)
def gedi_labels(params: GediLabelsParams) -> dict[str, Any]:
    """Read and quality-filter GEDI L4A footprints and rasterize AGBD onto each composite's grid."""
    from core.area import resolve_season

    p = params.model_dump(mode="json")
    out = str(Path(params.output_dir).resolve())
    season = resolve_season(params.aoi, params.year, p["season"])

    def body() -> dict[str, Any]:
        granules = params.granules
        if not granules:
            granules = search_gedi_task(aoi=params.aoi, season=season.to_dict(), stac_url=params.stac_url,
                                        collection=params.collection, output_dir=out)
        kw = {k: v for k, v in p.items() if k not in ("force", "dask_address", "granules", "season", "year")}
        return labels_task(**{**kw, "season": season.to_dict(), "granules": granules, "output_dir": out})

    return cached_stage("gedi-labels", p, out, params.force, body, _summarize_labels)


def _summarize_labels(res: dict[str, Any], cached: bool) -> None:
    fc = res.get("filter_counts", {})
    total = fc.get("total", fc)
    rows = [(k, v) for k, v in total.items()] if isinstance(total, dict) else []
    per = fc.get("per_granule", {})
    prow = [(g, *[c.get(k, "") for k in (list(total) if isinstance(total, dict) else [])]) for g, c in per.items()]
    images = []
    for tile, path in (res.get("labels") or {}).items():
        png = art.safe_quicklook(art.quicklook_band, path, str(Path(path).with_suffix(".coverage.png")),
                                 title=f"{tile} GEDI AGBD labels", cmap="YlGn")
        if png:
            images.append(art.image_markdown(f"{tile} label coverage", png))
    text = ("# GEDI L4A labels" + _skip_note(cached) + "\n\n## Shots removed by each filter (total)\n\n"
            + art.table_md(["filter", "shots"], rows)
            + ("\n\n## Per granule\n\n" + art.table_md(["granule", *list(total)], prow) if prow and isinstance(total, dict) else "")
            + f"\n\nGeoParquet: `{res.get('shots', '')}`\n\n"
            + ("\n\n## Skipped granules\n\n" + art.table_md(["granule", "reason"],
               [(s.get("granule", ""), s.get("reason", "")) for s in res.get("granules_skipped", [])])
               if res.get("granules_skipped") else "")
            + "\n\n" + "\n".join(images))
    art.markdown("gedi-labels-summary", text, "GEDI filter table and label coverage")


# --------------------------------------------------------------------------------------------- chips
@task(name="export-chips", cache_policy=NO_CACHE)
def chips_task(**kwargs: Any) -> dict[str, Any]:
    from chips.export import export_chips

    return export_chips(**kwargs)


@flow(name="export-chips", log_prints=True)
def export_chips(params: ExportChipsParams) -> dict[str, Any]:
    """Cut training chips (Esri Export Tiles + TerraTorch layouts) from composites and label rasters.

    The export is written to ``<output_dir>/chips/``."""
    p = params.model_dump(mode="json")
    out = str(Path(params.output_dir).resolve())

    def body() -> dict[str, Any]:
        kw = {k: v for k, v in p.items() if k != "force"}
        kw["split_fractions"] = tuple(kw["split_fractions"])
        res = chips_task(**{**kw, "output_dir": out})
        return {"export": res["export_dir"], "counts": res["splits"], **res}

    return cached_stage("export-chips", p, out, params.force, body, _summarize_chips)


def _summarize_chips(res: dict[str, Any], cached: bool) -> None:
    train = res["stats"]["train"]  # per-band lists, training split (chips.export result)
    srows = [(b, *(train[k][i] for k in ("min", "max", "mean", "std"))) for i, b in enumerate(train["bands"])]
    text = ("# Training chips" + _skip_note(cached) + "\n\n" + art.table_md(["split", "chips"], list(res["counts"].items()))
            + "\n\n## Train statistics (HLS units x 10000)\n\n"
            + art.table_md(["band", "min", "max", "mean", "std"], srows)
            + f"\n\nExport: `{res['export']}`\n")
    art.markdown("export-chips-summary", text, "Chips per split")


# --------------------------------------------------------------------------------------------- model
@task(name="train-model", cache_policy=NO_CACHE)
def train_task(**kwargs: Any) -> dict[str, Any]:
    from training.train import train_model

    return train_model(**kwargs)


@flow(name="train-model", log_prints=True)
def train_model(params: TrainModelParams) -> dict[str, Any]:
    """Fine-tune the Swin + UPerNet biomass regressor on a chips export (resumes from last.ckpt)."""
    p = params.model_dump(mode="json")
    out = str(Path(params.output_dir).resolve())

    def body() -> dict[str, Any]:
        progress = art.Progress("train-model-progress", "Training epochs")

        shown = [-1]

        def on_step(epoch: int, step: int) -> None:  # one progress update per epoch, not per step
            if epoch != shown[0]:
                shown[0] = epoch
                progress.update(epoch / params.epochs)

        kw = {k: v for k, v in p.items() if k != "force"}
        res = train_task(**{**kw, "output_dir": out, "on_step": on_step})
        progress.update(1.0)
        return res

    return cached_stage("train-model", p, out, params.force, body, _summarize_train)


def _summarize_train(res: dict[str, Any], cached: bool) -> None:
    hist = res.get("history", [])
    rows = [(h.get("epoch"), h.get("train_loss"), h.get("val_loss"), h.get("lr"), h.get("img_per_s")) for h in hist]
    text = ("# Training" + _skip_note(cached) + "\n\n" + art.table_md(["epoch", "train loss", "val loss", "lr", "img/s"], rows)
            + f"\n\nBest checkpoint: `{res.get('best_checkpoint', res.get('checkpoint', ''))}`\n")
    art.markdown("train-model-summary", text, "Training history")


@task(name="evaluate-model", cache_policy=NO_CACHE)
def evaluate_task(**kwargs: Any) -> dict[str, Any]:
    from training.evaluate import evaluate_model

    return evaluate_model(**kwargs)


@flow(name="evaluate-model", log_prints=True)
def evaluate_model(params: EvaluateModelParams) -> dict[str, Any]:
    """Metrics on a split (RMSE, MAE, bias, R², binned RMSE) against the mean and ridge baselines."""
    p = params.model_dump(mode="json")
    out = str(Path(params.output_dir).resolve())

    def body() -> dict[str, Any]:
        kw = {k: v for k, v in p.items() if k != "force"}
        return evaluate_task(**{**kw, "output_dir": out})

    return cached_stage("evaluate-model", p, out, params.force, body, _summarize_eval)


def metrics_rows(res: dict[str, Any]) -> list[tuple[Any, ...]]:
    metrics = res.get("metrics", {})
    rows = []
    for name in ("model", "baseline_mean", "baseline_ridge"):
        m = metrics.get(name)
        if isinstance(m, dict):
            binned = m.get("binned_rmse", {})
            rows.append((name, m.get("rmse"), m.get("mae"), m.get("bias"), m.get("r2"),
                         *((binned.get(b) or {}).get("rmse") for b in ("0-100", "100-200", "200-300", "0-300"))))
    return rows


METRIC_HEADERS = ["model", "RMSE", "MAE", "bias", "R²", "RMSE 0-100", "100-200", "200-300", "0-300"]


def _summarize_eval(res: dict[str, Any], cached: bool) -> None:
    images = [art.image_markdown(Path(p).stem, Path(p)) for p in res.get("plots", {}).values() if Path(p).is_file()]
    text = ("# Evaluation" + _skip_note(cached) + "\n\nMg/ha over labelled pixels of the split.\n\n"
            + art.table_md(METRIC_HEADERS, metrics_rows(res)) + "\n\n" + "\n".join(images))
    art.markdown("evaluate-model-summary", text, "Metrics against baselines")


@task(name="predict-map", cache_policy=NO_CACHE)
def predict_task(**kwargs: Any) -> dict[str, Any]:
    from training.mapping import predict_map as _predict

    return _predict(**kwargs)


@flow(name="predict-map", log_prints=True)
def predict_map(params: PredictMapParams) -> dict[str, Any]:
    """Tiled inference (224 crops, stride 192, overlaps averaged) over a composite -> biomass COG (Mg/ha)."""
    p = params.model_dump(mode="json")
    root = str(Path(params.output_dir or Path(params.composite).parent).resolve())

    def body() -> dict[str, Any]:
        return predict_task(checkpoint=params.checkpoint, composite=params.composite, output_dir=root)

    def summarize(res: dict[str, Any], cached: bool) -> None:
        path = res.get("map", "")
        png = art.safe_quicklook(art.quicklook_band, path, str(Path(path).with_suffix(".preview.png")),
                                 title="Biomass map", cmap="YlGn") if path else None
        art.markdown("predict-map-summary", "# Biomass map" + _skip_note(cached) + f"\n\n`{path}`\n\n"
                     + (art.image_markdown("biomass map", png) if png else ""), "Biomass map preview")

    return cached_stage("predict-map", p, root, params.force, body, summarize)
