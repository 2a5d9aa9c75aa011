"""Stage flows: each wraps one engine as Prefect tasks, with the input-keyed stage cache and UI artifacts.

Tasks pass paths and typed results (frozen dataclasses of the engines), never arrays. The engines have
their own bounded retries (the STAC searches: :mod:`core.http`), so tasks carry no Prefect retries on top.
STAC searches hold a slot of the server-wide ``stac-requests`` concurrency limit and carry the ``stac`` tag.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from chips.manifest import MANIFEST_NAME, ExportResult
from chips.params import ChipParams
from compositing.contracts import CompositeOptions, CompositeResult, SearchOptions, SearchResult
from core.contracts import Contract
from flows import summaries
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
from flows.results import HlsStageResult, Stage
from flows.runguard import guarded
from labels.contracts import LabelOptions, LabelsResult
from training.config import TrainConfig
from training.evaluate import EvalResult
from training.mapping import MapResult
from training.train import TrainResult
from training.uncertainty import IntervalOptions

STAC_LIMIT = "stac-requests"  # global concurrency limit shared by every flow run on the server
STAC_LIMIT_DEFAULT = 4
R = TypeVar("R", bound=Contract)


def stac_slot() -> contextlib.AbstractContextManager[None]:
    """A slot of the server-wide ``stac-requests`` concurrency limit (created with 4 slots when missing;
    change it with ``prefect gcl update stac-requests --limit N``)."""
    from prefect.client.orchestration import get_client
    from prefect.concurrency.sync import concurrency
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(STAC_LIMIT)
        except ObjectNotFound:
            from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

            with contextlib.suppress(ObjectAlreadyExists):  # created concurrently by another run: use it
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=STAC_LIMIT,
                                                                                    limit=STAC_LIMIT_DEFAULT))
    return concurrency(STAC_LIMIT, occupy=1)


def _logger() -> logging.Logger | logging.LoggerAdapter[Any]:
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:  # outside a run context (e.g. .fn() in tests)
        return logging.getLogger("flows")


def cached_stage(stage: str, params: dict[str, Any], inputs: Sequence[str], cache_root: str, force: bool,
                 kind: type[R], body: Callable[[], R], summarize: Callable[[R, bool], None]) -> Stage[R]:
    """The cached result of ``stage`` for ``params`` and the current ``inputs`` files, or run ``body``."""
    with guarded(cache_root, stage):  # one run per output folder; dead runs' temps removed
        key = stage_key(stage, params, inputs)
        if not force:
            hit = load_cached(cache_root, stage, key, kind)
            if hit is not None:
                _logger().info("%s: parameters and input files unchanged (key %s), outputs intact: skipped",
                               stage, key)
                summarize(hit, True)  # type: ignore[arg-type]
                return Stage(hit, True, key)  # type: ignore[arg-type]
        result = body()
        store(cache_root, stage, key, result)
    summarize(result, False)
    return Stage(result, False, key)


def _files(value: list[str] | str | None, sub: str) -> list[str]:
    """The rasters a ``composites``/``labels`` parameter names (a list, a file, or an output folder)."""
    if value is None:
        return []
    if isinstance(value, str):
        p = Path(value)
        if p.is_dir():
            base = p / sub if (p / sub).is_dir() else p
            return sorted(str(f) for f in base.glob("*/*.tif"))
        return [str(p)]
    return [str(v) for v in value]


# --------------------------------------------------------------------------------------------- sample world
@task(name="generate-sample-world", cache_policy=NO_CACHE)
def generate_world_task(output_dir: str, size: str, seed: int) -> dict[str, Any]:
    from sampleworld import generate_world

    return generate_world(output_dir, size=size, seed=seed)


@flow(name="sample-world", log_prints=True)
def sample_world(params: SampleWorldParams) -> dict[str, Any]:
    """Write the deterministic sample world (HLS COGs, GEDI L4A granules, STAC JSON, truth rasters)."""
    with guarded(params.output_dir, "sample-world"):
        manifest = generate_world_task(str(Path(params.output_dir).resolve()), params.size, params.seed)
    summaries.world(manifest, params.size, params.seed)
    return manifest


# --------------------------------------------------------------------------------------------- seasons
@task(name="choose-season", cache_policy=NO_CACHE, tags=["stac"])
def choose_season_task(aoi: Any, year: int, options: SearchOptions, output_dir: str) -> Any:
    """The tropical window of ``year``: the year's HLS scenes' lowest-cloud 4-month window (core.seasons)."""
    from compositing.window import choose_season

    with stac_slot():
        return choose_season(aoi=aoi, year=year, output_dir=output_dir, options=options)


def _stage_season(params: HlsCompositeParams | GediLabelsParams, out: str) -> Any:
    """A stage's window: ``season``; else the year's default (tropics: the driest window, from the HLS search
    for hls-composite, from the composites' SEASON tag for gedi-labels)."""
    from core.area import Season, resolve_season
    from core.seasons import needs_search

    explicit = params.season.model_dump() if params.season else None
    if explicit or params.year is None or not needs_search(params.aoi, explicit):
        return resolve_season(params.aoi, params.year, explicit)
    if isinstance(params, HlsCompositeParams):
        choice = choose_season_task(params.aoi, params.year, params.search_options(),
                                    str(Path(out) / "seasons" / f"window-{params.year}"))
        return choice.season
    tags = sorted({_season_tag(p) for p in _files(params.composites, "composites")} - {None})
    if len(tags) != 1:
        raise ValueError(f"tropical area without `season`: the window comes from the year's scenes; give `season` "
                         f"or the composites of one season (their SEASON tags: {tags or 'none'})")
    return Season.from_any(tags[0])


def _season_tag(path: str) -> str | None:
    import rasterio

    with rasterio.open(path) as ds:
        return ds.tags().get("SEASON")


# --------------------------------------------------------------------------------------------- composites
@task(name="search-hls", cache_policy=NO_CACHE, tags=["stac"])
def search_hls_task(aoi: Any, season: dict[str, str], options: SearchOptions, output_dir: str) -> SearchResult:
    from compositing.search import search_hls

    with stac_slot():
        return search_hls(aoi=aoi, season=season, options=options, output_dir=output_dir)


@task(name="composite-tile", cache_policy=NO_CACHE)
def composite_task(items_json: str, tile: str, aoi: Any, season: dict[str, str], options: CompositeOptions,
                   output_dir: str, dask_address: str | None) -> CompositeResult:
    from compositing.composite import build_composites

    return build_composites(items_json=items_json, aoi=aoi, season=season, output_dir=output_dir, options=options,
                            tiles=[tile], dask_address=dask_address)


def composite_tiles(items_json: str, tiles: list[str], aoi: Any, season: dict[str, str], options: CompositeOptions,
                    output_dir: str, dask_address: str | None, on_tile: Callable[[int], Any] | None = None
                    ) -> CompositeResult:
    """The composites of ``tiles`` (inside a flow), one ``composite-<TILE>`` task each: a failure names its
    tile. With a Dask cluster the unit of Dask work (whole tiles written by the workers, or windows written
    here: ``CompositeOptions.dask_unit``) is chosen once for the region and every tile's task is in flight at
    once; on local threads one tile after the other, each on every core. ``on_tile(n)``: n tiles done."""
    from compositing.dask_tiles import region_dask_unit

    unit = region_dask_unit(dask_address, options.dask_unit, len(tiles), output_dir)
    if unit:  # decided once for the region: each per-tile call below sees one tile only
        options = dataclasses.replace(options, dask_unit=unit)
    calls = [(composite_task.with_options(name=f"composite-{tile}"),
              (items_json, tile, aoi, season, options, output_dir, dask_address)) for tile in tiles]
    if unit is None:
        results: Iterator[CompositeResult] = (t(*a) for t, a in calls)
    else:
        futures = [t.submit(*a) for t, a in calls]
        results = (f.result() for f in futures)
    done: dict[str, Any] = {}
    outside: list[str] = []
    for i, res in enumerate(results):
        done.update(res.tiles)
        outside += res.tiles_outside_aoi
        if on_tile:
            on_tile(i + 1)
    return CompositeResult(season=season, items_json=items_json, tiles=done, tiles_outside_aoi=outside,
                           dask_unit=unit)


@flow(name="hls-composite", log_prints=True)
def hls_composite(params: HlsCompositeParams) -> Stage[HlsStageResult]:
    """Search HLS L30 for the area's season and build one cloud-free mean composite per MGRS tile
    (:func:`composite_tiles`)."""
    from flows import artifacts as art

    out = str(Path(params.output_dir).resolve())
    season = _stage_season(params, out)

    def body() -> HlsStageResult:
        search = search_hls_task(params.aoi, season.to_dict(), params.search_options(), out)
        if not search.tiles:
            raise RuntimeError(f"no composite: the search found no HLS scene over the area ({search.items_json})")
        progress = art.Progress("hls-composite-progress", "MGRS tiles composited")
        comps = composite_tiles(search.items_json, search.tiles, params.aoi, season.to_dict(),
                                params.composite_options(), out, params.dask_address,
                                on_tile=lambda done: progress.update(done / len(search.tiles)))
        return HlsStageResult(search=search, composites=comps, output_dir=out)

    return cached_stage("hls-composite", params.model_dump(mode="json"), [], out, params.force, HlsStageResult,
                        body, summaries.composites)


# --------------------------------------------------------------------------------------------- labels
@task(name="search-gedi", cache_policy=NO_CACHE, tags=["stac"])
def search_gedi_task(aoi: Any, season: dict[str, str], options: LabelOptions, output_dir: str) -> list[str]:
    from labels import search_granules

    with stac_slot():
        return search_granules(aoi=aoi, season=season, stac_url=options.stac_url, collection=options.collection,
                               output_dir=output_dir)


@task(name="gedi-labels", cache_policy=NO_CACHE)
def labels_task(aoi: Any, season: dict[str, str], granules: list[str], composites: list[str] | str | None,
                options: LabelOptions, output_dir: str) -> LabelsResult:
    from flows import artifacts as art
    from labels import run_gedi_labels

    progress = art.Progress("gedi-labels-progress", "GEDI L4A granules read")
    return run_gedi_labels(aoi=aoi, season=season, granules=granules, composites=composites, options=options,
                           output_dir=output_dir, on_granule=lambda done, total: progress.update(done / total))


@flow(name="gedi-labels", log_prints=True)
def gedi_labels(params: GediLabelsParams) -> Stage[LabelsResult]:
    """Read and quality-filter GEDI L4A footprints and rasterize AGBD onto each composite's grid."""

    out = str(Path(params.output_dir).resolve())
    season = _stage_season(params, out)
    options = params.label_options()

    def body() -> LabelsResult:
        granules = params.granules or search_gedi_task(params.aoi, season.to_dict(), options, out)
        return labels_task(params.aoi, season.to_dict(), granules, params.composites, options, out)

    local = [g for g in params.granules or [] if not g.startswith(("http://", "https://", "s3://"))]
    return cached_stage("gedi-labels", params.model_dump(mode="json"), _files(params.composites, "composites") + local,
                        out, params.force, LabelsResult, body, summaries.labels)


# --------------------------------------------------------------------------------------------- chips
@task(name="export-chips", cache_policy=NO_CACHE)
def chips_task(composites: list[str] | str, labels: list[str] | str, output_dir: str,
               params: ChipParams) -> ExportResult:
    from chips.export import export_chips

    return export_chips(composites=composites, labels=labels, output_dir=output_dir, params=params)


@flow(name="export-chips", log_prints=True)
def export_chips(params: ExportChipsParams) -> Stage[ExportResult]:
    """Cut training chips (Esri Export Tiles + TerraTorch layouts) from composites and label rasters.

    The export is written to ``<output_dir>/chips/``."""
    out = str(Path(params.output_dir).resolve())
    inputs = _files(params.composites, "composites") + _files(params.labels, "labels")
    return cached_stage("export-chips", params.model_dump(mode="json"), inputs, out, params.force, ExportResult,
                        lambda: chips_task(params.composites, params.labels, out, params.chip_params()),
                        summaries.chips)


# --------------------------------------------------------------------------------------------- model
@task(name="train-model", cache_policy=NO_CACHE)
def train_task(export: str, output_dir: str, config: TrainConfig,
               on_step: Callable[[int, int], None] | None) -> TrainResult:
    from training.train import train_model

    return train_model(export=export, output_dir=output_dir, config=config, on_step=on_step)


@flow(name="train-model", log_prints=True)
def train_model(params: TrainModelParams) -> Stage[TrainResult]:
    """Fine-tune the Swin + UPerNet biomass regressor on a chips export (resumes from last.ckpt)."""
    from flows import artifacts as art

    out = str(Path(params.output_dir).resolve())

    def body() -> TrainResult:
        progress = art.Progress("train-model-progress", "Training epochs")
        shown = [-1]

        def on_step(epoch: int, step: int) -> None:  # one progress update per epoch, not per step
            if epoch != shown[0]:
                shown[0] = epoch
                progress.update(epoch / params.epochs)

        res = train_task(params.export, out, params.train_config(), on_step)
        progress.update(1.0)
        return res

    inputs = [str(Path(params.export) / MANIFEST_NAME), *([params.init_checkpoint] if params.init_checkpoint else [])]
    return cached_stage("train-model", params.model_dump(mode="json"), inputs, out, params.force, TrainResult, body,
                        summaries.training)


@task(name="evaluate-model", cache_policy=NO_CACHE)
def evaluate_task(checkpoint: str, model: str | None, export: str, split: str, output_dir: str,
                  norm_mean: list[float] | None = None, norm_std: list[float] | None = None,
                  intervals: IntervalOptions | None = None) -> EvalResult:
    from training.evaluate import evaluate_model

    return evaluate_model(checkpoint=checkpoint, model=model, export=export, split=split, output_dir=output_dir,
                          norm_mean=norm_mean, norm_std=norm_std, intervals=intervals)


@flow(name="evaluate-model", log_prints=True)
def evaluate_model(params: EvaluateModelParams) -> Stage[EvalResult]:
    """Metrics on a split (RMSE, MAE, bias, R², binned RMSE) against the mean and ridge baselines, and the
    coverage of split-conformal prediction intervals calibrated on the validation split."""
    out = str(Path(params.output_dir).resolve())
    inputs = [params.checkpoint, str(Path(params.export) / MANIFEST_NAME)]
    intervals = params.intervals.interval_options() if params.intervals else None
    return cached_stage("evaluate-model", params.model_dump(mode="json"), inputs, out, params.force, EvalResult,
                        lambda: evaluate_task(params.checkpoint, params.model, params.export, params.split, out,
                                              params.norm_mean, params.norm_std, intervals),
                        summaries.evaluation)


@task(name="predict-map", cache_policy=NO_CACHE)
def predict_task(checkpoint: str, composite: str, output_dir: str, model: str | None = None,
                 norm_mean: list[float] | None = None, norm_std: list[float] | None = None,
                 calibration: str | None = None) -> MapResult:
    from training.mapping import predict_map as _predict

    return _predict(checkpoint=checkpoint, composite=composite, output_dir=output_dir, model=model,
                    norm_mean=norm_mean, norm_std=norm_std, calibration=calibration)


@flow(name="predict-map", log_prints=True)
def predict_map(params: PredictMapParams) -> Stage[MapResult]:
    """Tiled inference (crops of the training chip size, stride 6/7 of it, overlaps averaged) over a composite
    -> biomass COG (Mg/ha), with prediction-interval bands when a calibration is given."""
    root = str(Path(params.output_dir or Path(params.composite).parent).resolve())
    inputs = [params.checkpoint, params.composite, *([params.calibration] if params.calibration else [])]
    return cached_stage("predict-map", params.model_dump(mode="json"), inputs, root, params.force, MapResult,
                        lambda: predict_task(params.checkpoint, params.composite, root, params.model, params.norm_mean,
                                             params.norm_std, params.calibration),
                        summaries.biomass_map)
