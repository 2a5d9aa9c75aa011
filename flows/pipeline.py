"""``biomass-pipeline``: HLS search -> composites -> GEDI labels -> chips -> training -> evaluation -> maps.

Each stage is its own flow (run as a subflow here), so each can also run alone. With ``sample_world`` set
the pipeline writes the embedded sample world and serves it through a loopback STAC API whose hrefs are
protected URLs of the loopback Earthdata emulator (``sample_world.serve``), read with a demo token.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import flow

from chips.manifest import ExportResult
from compositing.contracts import CompositeResult
from core.contracts import Contract
from flows import artifacts as art
from flows import stages as S
from flows import summaries
from flows.params import (
    BiomassPipelineParams,
    EvaluateModelParams,
    ExportChipsParams,
    GediLabelsParams,
    HlsCompositeParams,
    PredictMapParams,
    SampleWorldParams,
    TrainModelParams,
)
from labels.contracts import LabelsResult
from training.evaluate import EvalResult
from training.train import TrainResult


@contextlib.contextmanager
def _area(params: BiomassPipelineParams, out: Path) -> Iterator[dict[str, Any]]:
    """aoi/year/season/STAC URLs of the run; for the sample world, generated and served on loopback."""
    area: dict[str, Any] = {"aoi": params.aoi, "year": params.year,
                            "season": params.season.model_dump() if params.season else None,
                            "hls_stac_url": params.hls.stac_url, "gedi_stac_url": params.gedi.stac_url,
                            "hls_collection": params.hls.collection, "gedi_collection": params.gedi.collection,
                            "world": None}
    if params.sample_world is None:
        yield area
        return
    from sampleworld.serve import patched_env, serve_world

    sw = params.sample_world
    world_dir = str(Path(sw.output_dir or out / "world").resolve())
    manifest = S.sample_world(SampleWorldParams(output_dir=world_dir, size=sw.size, seed=sw.seed))
    # served as NASA serves it: protected URLs behind the Earthdata emulator, the run using its demo token
    with serve_world(world_dir, earthdata=sw.serve == "earthdata") as served, patched_env(served.env):
        url = served.stac_url
        area.update(aoi=params.aoi or manifest["aoi"], year=params.year or manifest["year"],
                    season=area["season"] or (None if params.year else manifest.get("season")),
                    hls_stac_url=url, gedi_stac_url=url, hls_collection=manifest["hls"]["collection"],
                    gedi_collection=manifest["gedi"]["collection"], world=manifest)
        yield area
        print(served.summary())


@dataclass(frozen=True)
class PipelineResult(Contract):
    """Everything a biomass-pipeline run produced (typed results of every stage)."""

    output_dir: str
    composites: CompositeResult
    labels: LabelsResult
    chips: ExportResult
    training: TrainResult
    evaluation: EvalResult
    maps: dict[str, str]
    map_vs_truth: dict[str, dict[str, Any]] | None
    cached_stages: list[str]

    @property
    def checkpoint(self) -> str:
        return self.training.best_checkpoint


@flow(name="biomass-pipeline", log_prints=True)
def biomass_pipeline(params: BiomassPipelineParams) -> PipelineResult:
    """The whole job for an area and a year: composites, labels, chips, model, evaluation and biomass maps."""
    out = Path(params.output_dir).resolve()
    with _area(params, out) as area:
        hls = params.hls.model_dump()
        comp = S.hls_composite(HlsCompositeParams(
            aoi=area["aoi"], year=area["year"], season=area["season"], output_dir=str(out),
            dask_address=params.dask_address, force=params.force,
            **{**hls, "stac_url": area["hls_stac_url"], "collection": area["hls_collection"]}))
        composites = comp.result.composites.paths
        gedi = params.gedi.model_dump()
        lab = S.gedi_labels(GediLabelsParams(
            aoi=area["aoi"], year=area["year"], season=area["season"], output_dir=str(out),
            composites=composites, force=params.force,
            **{**gedi, "stac_url": area["gedi_stac_url"], "collection": area["gedi_collection"]}))
        world = area["world"]
    chips = S.export_chips(ExportChipsParams(composites=composites, labels=list(lab.result.labels.values()),
                                             output_dir=str(out), force=params.force, **params.chips.model_dump()))
    tr = params.training.model_dump()
    eval_split = tr.pop("eval_split")
    export = chips.result.export_dir
    trained = S.train_model(TrainModelParams(export=export, output_dir=str(out / "model"), force=params.force, **tr))
    ckpt = trained.result.best_checkpoint
    ev = S.evaluate_model(EvaluateModelParams(checkpoint=ckpt, export=export, split=eval_split,
                                              output_dir=str(out / "eval"), force=params.force))
    maps = {tile: S.predict_map(PredictMapParams(checkpoint=ckpt, composite=t.path, output_dir=str(out / "maps"),
                                                 force=params.force)).result.map
            for tile, t in comp.result.composites.tiles.items()}
    truth = None
    if world is not None:
        from training.map_truth import compare_to_truth

        truth = {tile: compare_to_truth(path, world["truth"]["agb"]) for tile, path in maps.items()}
    stages = {"hls-composite": comp, "gedi-labels": lab, "export-chips": chips, "train-model": trained,
              "evaluate-model": ev}
    result = PipelineResult(output_dir=str(out), composites=comp.result.composites, labels=lab.result,
                            chips=chips.result, training=trained.result, evaluation=ev.result, maps=maps,
                            map_vs_truth=truth, cached_stages=[n for n, r in stages.items() if r.cached])
    _summary(result)
    return result


def _summary(res: PipelineResult) -> None:
    rows = [("composites", ", ".join(res.composites.paths)), ("labels", ", ".join(res.labels.labels.values())),
            ("shots", res.labels.shots), ("chips", res.chips.export_dir), ("checkpoint", res.checkpoint),
            ("metrics", res.evaluation.metrics_path), ("maps", ", ".join(res.maps.values()))]
    truth = res.map_vs_truth or {}
    text = ("# Biomass pipeline\n\n## Outputs\n\n" + art.table_md(["output", "path"], rows)
            + "\n\n## Evaluation (test split, Mg/ha)\n\n"
            + art.table_md(summaries.METRIC_HEADERS, summaries.metrics_rows(res.evaluation))
            + ("\n\n## Map against the sample world's truth\n\n"
               + art.table_md(["tile", "R²", "RMSE", "pixels"], [(t, v["r2"], v["rmse"], v["n"]) for t, v in truth.items()])
               if truth else ""))
    art.markdown("biomass-pipeline-summary", text, "Outputs and metrics of the whole run")
