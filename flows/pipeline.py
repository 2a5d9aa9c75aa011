"""The area flows: ``biomass-pipeline``, ``map-biomass`` and ``yearly-biomass``.

``biomass-pipeline``: for each training season (GEDI-covered), HLS search -> composite -> GEDI labels; one
chips export of every season -> one model -> evaluation (overall and per season) -> maps of every map year
(composites only, no GEDI needed) -> change between consecutive map years; the model becomes the area's
current model (``<output_dir>/model/current.json``). ``map-biomass``: maps and change with an existing
model (no labels, no training). ``yearly-biomass`` (the scheduled deployments): map-biomass with the
area's current model, or biomass-pipeline when the area has none yet.

Each stage is its own flow (run as a subflow here), so each can also run alone. With ``sample_world`` set
the flows write the embedded sample world and serve it through a loopback STAC API whose hrefs are
protected URLs of the loopback Earthdata emulator (``sample_world.serve``), read with a demo token.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import flow

from chips.manifest import ExportResult
from compositing.contracts import CompositeResult
from core.catalog import ResolvedRun, resolve_catalog
from core.contracts import Contract
from flows import mrv as M
from flows import stac_items as si
from flows import stages as S
from flows import summaries
from flows import years as Y
from flows.deploy_steps import check_worker_environment
from flows.mrv import MrvResult
from flows.params import (
    BiomassPipelineParams,
    EvaluateModelParams,
    ExportChipsParams,
    GediOptions,
    MapBiomassParams,
    SampleWorldParams,
    TrainModelParams,
    YearlyBiomassParams,
    _RunArea,
    last_finished_season_year,
)
from flows.results import HlsStageResult, MappingResult, ModelRecord, RunPlan, Stage
from flows.runguard import guarded
from labels.contracts import LabelsResult
from training.evaluate import EvalResult
from training.train import TrainResult


@contextlib.contextmanager
def _area(params: _RunArea, out: Path) -> Iterator[dict[str, Any]]:
    """aoi/year/season/STAC URLs of the run; for the sample world, generated and served on loopback
    (``data_years``: the years the world has scenes for)."""
    gedi = getattr(params, "gedi", None) or GediOptions()
    area: dict[str, Any] = {"aoi": params.aoi, "year": params.year,
                            "season": params.season.model_dump() if params.season else None,
                            "hls_stac_url": params.hls.stac_url, "gedi_stac_url": gedi.stac_url,
                            "hls_collection": params.hls.collection, "gedi_collection": gedi.collection,
                            "world": None, "data_years": None}
    if params.sample_world is None:
        gedi_urls = [gedi.stac_url] if hasattr(params, "gedi") and not params.gedi.granules else []
        check_worker_environment([params.hls.stac_url, *gedi_urls], params.dask_address)
        yield area
        return
    from sampleworld.serve import patched_env, serve_world

    sw = params.sample_world
    world_dir = str(Path(sw.output_dir or out / "world").resolve())
    manifest = S.sample_world(SampleWorldParams(output_dir=world_dir, size=sw.size, seed=sw.seed))
    # served as NASA serves it: protected URLs behind the Earthdata emulator, the run using its demo token
    with serve_world(world_dir, earthdata=sw.serve == "earthdata") as served, patched_env(served.env):
        url = served.stac_url
        aoi = params.aoi or manifest["aoi"]
        year = params.year or (last_finished_season_year(aoi, params.as_of) if params.as_of else manifest["year"])
        area.update(aoi=aoi, year=year, hls_stac_url=url, gedi_stac_url=url,
                    hls_collection=manifest["hls"]["collection"], gedi_collection=manifest["gedi"]["collection"],
                    world=manifest, data_years=manifest.get("years"))
        yield area
        print(served.summary())


@dataclass(frozen=True)
class PipelineResult(Contract):
    """Everything a biomass-pipeline run produced: the plan (years, windows, why), the typed result of every
    stage (composites and labels per year, keyed ``str(year)``), the model (the area's current model),
    and the maps and change of every map year."""

    output_dir: str
    plan: RunPlan
    composites: dict[str, CompositeResult]
    labels: dict[str, LabelsResult]
    chips: ExportResult
    training: TrainResult
    evaluation: EvalResult
    model: ModelRecord
    mapping: MappingResult
    cached_stages: list[str]
    mrv: MrvResult | None = None

    @property
    def checkpoint(self) -> str:
        return self.training.best_checkpoint


@dataclass(frozen=True)
class MapBiomassResult(Contract):
    """A map-biomass run: the plan, the model used, the maps and change of every map year, and the MRV outputs
    (totals and their change with intervals, the run catalog)."""

    output_dir: str
    plan: RunPlan
    model: ModelRecord
    mapping: MappingResult
    mrv: MrvResult | None = None


@dataclass(frozen=True)
class YearlyResult(Contract):
    """A yearly-biomass run: ``trained`` tells whether the area had no model (then ``pipeline`` is the
    biomass-pipeline run that trained it); ``mapping`` has the maps and change either way."""

    output_dir: str
    trained: bool
    plan: RunPlan
    model: ModelRecord
    mapping: MappingResult
    pipeline: PipelineResult | None
    mrv: MrvResult | None = None


def _train_and_evaluate(params: BiomassPipelineParams, out: Path, plan: RunPlan,
                        comps: dict[int, Stage[HlsStageResult]], labs: dict[int, Stage[LabelsResult]]
                        ) -> tuple[Stage[ExportResult], Stage[TrainResult], Stage[EvalResult]]:
    """One chips export of every training season -> one model -> evaluation (overall and per season)."""
    composites = [p for y in plan.years.training_years for p in comps[y].result.composites.paths]
    labels = [p for y in plan.years.training_years for p in labs[y].result.labels.values()]
    chips = S.export_chips(ExportChipsParams(composites=composites, labels=labels, output_dir=str(out),
                                             force=params.force, **params.chips.model_dump()))
    tr = params.training.model_dump()
    eval_split = tr.pop("eval_split")
    export = chips.result.export_dir
    trained = S.train_model(TrainModelParams(export=export, output_dir=str(out / "model"), force=params.force, **tr))
    ev = S.evaluate_model(EvaluateModelParams(checkpoint=trained.result.best_checkpoint, export=export,
                                              split=eval_split, output_dir=str(out / "eval"), force=params.force,
                                              intervals=params.intervals))
    return chips, trained, ev


@flow(name="biomass-pipeline", log_prints=True)
def biomass_pipeline(params: BiomassPipelineParams) -> PipelineResult:
    """Train on the GEDI seasons, evaluate, and map every map year of an area (with the change between years)."""
    out = Path(params.output_dir).resolve()
    with guarded(out, "biomass-pipeline"), _area(params, out) as area:
        plan = Y.plan_run(params, area, out, train=True, training_years=params.training_years)
        comps = Y.composite_years(params, area, out, plan, plan.years.training_years + plan.years.map_years)
        labs = Y.label_years(params, area, out, plan, comps)
        chips, trained, ev = _train_and_evaluate(params, out, plan, comps, labs)
        model = Y.write_model_record(out, plan, trained.result.best_checkpoint, chips.result.export_dir,
                                     ev.result.metrics_path, (ev.result.metrics.get("model") or {}).get("rmse"),
                                     ev.result.calibration)
        composites = {y: s.result.composites for y, s in comps.items()}
        mapping = Y.map_years(model.checkpoint, area, out, plan, composites, params.force,
                              params.change.change_options(), model.calibration)
        outputs = M.area_run_outputs(composites=composites, mapping=mapping, chips=chips.result,
                                     labels=[labs[y].result for y in sorted(labs)], training=trained.result,
                                     train_config=params.training.train_config().to_dict(), evaluation=ev.result,
                                     label_years=plan.years.training_years)
        mrv = _mrv(params, out, area["aoi"], outputs)  # under the lock: it writes the area's catalog
    stages = [*(("hls-composite", s) for s in comps.values()), *(("gedi-labels", s) for s in labs.values()),
              ("export-chips", chips), ("train-model", trained), ("evaluate-model", ev)]
    result = PipelineResult(
        output_dir=str(out), plan=plan, composites={str(y): c for y, c in composites.items()},
        labels={str(y): s.result for y, s in labs.items()}, chips=chips.result, training=trained.result,
        evaluation=ev.result, model=model, mapping=mapping, mrv=mrv,
        cached_stages=sorted({n for n, s in stages if s.cached} - {n for n, s in stages if not s.cached}))
    summaries.pipeline(result)
    return result


def _mrv(params: _RunArea, out: Path, aoi: Any, outputs: M.RunOutputs) -> MrvResult:
    """Totals per map year and their change (with intervals), quicklooks, the run catalog; printed."""
    res = M.mrv_task(str(out), outputs, aoi, params.totals.totals_options(), params.catalog)
    text = summaries.totals_text(res)
    print(text or "no area totals: " + "; ".join(res.notes))
    if res.catalog is not None:
        print(f"STAC catalog {res.catalog.catalog}: {len(res.catalog.added)} items added, "
              f"{len(res.catalog.updated)} updated; {'valid' if res.validation and res.validation.ok else 'INVALID'}")
    return res


def _model_for(params: MapBiomassParams, out: Path) -> tuple[ModelRecord, ResolvedRun | None]:
    """The model (and its calibration) to map with: the catalog's, the given checkpoint, or the area's."""
    if params.catalog_input:
        r = resolve_catalog(params.catalog_input)
        print(f"mapping with model {r.model_item} of the catalog {r.catalog} ({r.checkpoint})")
        return ModelRecord(checkpoint=r.checkpoint, training_years=[], seasons=[], export="", metrics="",
                           rmse=None, trained_at="", calibration=params.calibration or r.calibration), r
    if params.checkpoint:
        ck = str(Path(params.checkpoint).resolve())
        if not Path(ck).is_file():
            raise FileNotFoundError(f"checkpoint {ck} not found")
        if params.calibration and not Path(params.calibration).is_file():
            raise FileNotFoundError(f"calibration {params.calibration} not found (the calibration.json of the "
                                    "checkpoint's evaluation; leave it unset to map without interval bands)")
        return ModelRecord(checkpoint=ck, training_years=[], seasons=[], export="", metrics="", rmse=None,
                           trained_at="", calibration=params.calibration), None
    rec = Y.read_model_record(out)
    if rec is None:
        raise FileNotFoundError(f"no model for this area: {out / 'model' / Y.MODEL_RECORD} is missing (or its "
                                "checkpoint is gone); give `checkpoint` or `catalog_input`, or train one with "
                                "biomass-pipeline (the area's retrain deployment)")
    cal = params.calibration or rec.calibration
    if cal and not Path(cal).is_file():
        print(f"the area model's calibration {cal} is gone: maps without interval bands, no totals")
        cal = None
    return dataclasses.replace(rec, calibration=cal), None


def _catalog_composites(resolved: ResolvedRun | None, plan: RunPlan, aoi: Any) -> dict[int, CompositeResult]:
    """The catalog's composites of the map years whose window is the plan's and which cover the area."""
    from shapely.geometry import shape

    from core.area import parse_aoi
    from core.catalog import area_geometry

    reuse: dict[int, CompositeResult] = {}
    for y in plan.years.map_years if resolved is not None else []:
        paths = resolved.composites.get(str(y))
        if not paths:
            continue
        try:
            comp = si.composites_from_paths(paths)
        except (FileNotFoundError, ValueError) as exc:
            print(f"{y}: the catalog's composites are not reused ({exc}): compositing anew")
            continue
        season = plan.season(y)
        if (comp.season["start"], comp.season["end"]) != (season.start, season.end):
            print(f"{y}: the catalog's composites are of {comp.season}, the run's window is {season.label}: "
                  "compositing anew")
        elif not shape(area_geometry(list(paths.values()))).buffer(1e-4).covers(parse_aoi(aoi)):
            print(f"{y}: the catalog's composites do not cover the area: compositing anew")
        else:
            reuse[y] = comp
    return reuse


@flow(name="map-biomass", log_prints=True)
def map_biomass(params: MapBiomassParams) -> MapBiomassResult:
    """Map an area for the given years with an existing model (no labels, no training), with the change, the
    totals and the run catalog; ``catalog_input``: a run's catalog gives the model, calibration and composites."""
    out = Path(params.output_dir).resolve()
    with guarded(out, "map-biomass"):
        model, resolved = _model_for(params, out)
        with _area(params, out) as area:
            plan = Y.plan_run(params, area, out, train=False)
            composites = _catalog_composites(resolved, plan, area["aoi"])
            todo = [y for y in plan.years.map_years if y not in composites]
            comps = Y.composite_years(params, area, out, plan, todo) if todo else {}
            composites.update({y: s.result.composites for y, s in comps.items()})
            mapping = Y.map_years(model.checkpoint, area, out, plan, composites, params.force,
                                  params.change.change_options(), model.calibration)
        outputs = M.area_run_outputs(composites=composites, mapping=mapping, calibration=model.calibration,
                                     label_years=model.training_years)
        return MapBiomassResult(output_dir=str(out), plan=plan, model=model, mapping=mapping,
                                mrv=_mrv(params, out, area["aoi"], outputs))


@flow(name="yearly-biomass", log_prints=True)
def yearly_biomass(params: YearlyBiomassParams) -> YearlyResult:
    """The scheduled run: map the season just finished with the area's current model (training it first,
    on the seasons GEDI covers, when the area has none), and the change since the year before."""
    out = Path(params.output_dir).resolve()
    record = Y.read_model_record(out)
    fields = set(_RunArea.model_fields)
    if record is not None:
        print(f"mapping with the area's current model {record.checkpoint} (trained on {record.training_years})")
        mapped = map_biomass(MapBiomassParams(**params.model_dump(include=fields)))  # the area's model, calibration
        return YearlyResult(output_dir=str(out), trained=False, plan=mapped.plan, model=mapped.model,
                            mapping=mapped.mapping, pipeline=None, mrv=mapped.mrv)
    print(f"no model for this area under {out}: training one first")
    run = biomass_pipeline(BiomassPipelineParams(**params.model_dump()))
    return YearlyResult(output_dir=str(out), trained=True, plan=run.plan, model=run.model, mapping=run.mapping,
                        pipeline=run, mrv=run.mrv)
