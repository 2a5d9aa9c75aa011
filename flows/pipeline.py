"""``biomass-pipeline``: HLS search -> composites -> GEDI labels -> chips -> training -> evaluation -> maps.

Each stage is its own flow (run as a subflow here), so each can also run alone. With ``sample_world`` set
the pipeline writes the embedded sample world and serves it through a loopback STAC API for the run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prefect import flow

from flows import artifacts as art
from flows import stages as S
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
    from sampleworld.stac_server import serve_stac

    sw = params.sample_world
    world_dir = str(Path(sw.output_dir or out / "world").resolve())
    manifest = S.sample_world(SampleWorldParams(output_dir=world_dir, size=sw.size, seed=sw.seed))
    with serve_stac(world_dir) as url:
        area.update(aoi=params.aoi or manifest["aoi"], year=params.year or manifest["year"],
                    season=area["season"] or (None if params.year else manifest.get("season")),
                    hls_stac_url=url, gedi_stac_url=url, hls_collection=manifest["hls"]["collection"],
                    gedi_collection=manifest["gedi"]["collection"], world=manifest)
        yield area


@flow(name="biomass-pipeline", log_prints=True)
def biomass_pipeline(params: BiomassPipelineParams) -> dict[str, Any]:
    """The whole job for an area and a year: composites, labels, chips, model, evaluation and biomass maps."""
    out = Path(params.output_dir).resolve()
    result: dict[str, Any] = {"output_dir": str(out)}
    with _area(params, out) as area:
        hls = params.hls.model_dump()
        comp = S.hls_composite(HlsCompositeParams(
            aoi=area["aoi"], year=area["year"], season=area["season"], output_dir=str(out),
            dask_address=params.dask_address, force=params.force,
            **{**hls, "stac_url": area["hls_stac_url"], "collection": area["hls_collection"]}))
        composites = [t["path"] for t in comp["tiles"].values()]
        gedi = params.gedi.model_dump()
        lab = S.gedi_labels(GediLabelsParams(
            aoi=area["aoi"], year=area["year"], season=area["season"], output_dir=str(out),
            composites=composites, dask_address=params.dask_address, force=params.force,
            **{**gedi, "stac_url": area["gedi_stac_url"], "collection": area["gedi_collection"]}))
        world = area["world"]
    label_paths = list(lab["labels"].values())
    chips = S.export_chips(ExportChipsParams(composites=composites, labels=label_paths,
                                             output_dir=str(out), force=params.force,
                                             **params.chips.model_dump()))
    tr = params.training.model_dump()
    eval_split = tr.pop("eval_split")
    trained = S.train_model(TrainModelParams(export=chips["export"], output_dir=str(out / "model"),
                                             force=params.force, **tr))
    ckpt = trained.get("best_checkpoint") or trained["checkpoint"]
    ev = S.evaluate_model(EvaluateModelParams(checkpoint=ckpt, export=chips["export"], split=eval_split,
                                              output_dir=str(out / "eval"), force=params.force))
    maps = {tile: S.predict_map(PredictMapParams(checkpoint=ckpt, composite=path,
                                                 output_dir=str(out / "maps"), force=params.force))["map"]
            for tile, path in ((t, c["path"]) for t, c in comp["tiles"].items())}
    truth = None
    if world is not None:
        from training.map_truth import compare_to_truth

        truth = {tile: compare_to_truth(path, world["truth"]["agb"]) for tile, path in maps.items()}
    result.update(composites=comp["tiles"], labels=lab["labels"], shots=lab.get("shots"),
                  filter_counts=lab.get("filter_counts"), chips=chips, checkpoint=ckpt,
                  training={k: trained.get(k) for k in ("best_val_loss", "epochs_run", "history")},
                  evaluation=ev, maps=maps, map_vs_truth=truth,
                  cached_stages=[n for n, r in (("hls-composite", comp), ("gedi-labels", lab), ("export-chips", chips),
                                                ("train-model", trained), ("evaluate-model", ev)) if r.get("cached")])
    _summary(result)
    return result


def _summary(res: dict[str, Any]) -> None:
    rows = [("composites", ", ".join(t["path"] for t in res["composites"].values())),
            ("labels", ", ".join(res["labels"].values())), ("shots", res.get("shots")),
            ("chips", res["chips"].get("export")), ("checkpoint", res["checkpoint"]),
            ("metrics", res["evaluation"].get("metrics_path", "")), ("maps", ", ".join(res["maps"].values()))]
    truth = res.get("map_vs_truth") or {}
    text = ("# Biomass pipeline\n\n## Outputs\n\n" + art.table_md(["output", "path"], rows)
            + "\n\n## Evaluation (test split, Mg/ha)\n\n" + art.table_md(S.METRIC_HEADERS, S.metrics_rows(res["evaluation"]))
            + ("\n\n## Map against the sample world's truth\n\n"
               + art.table_md(["tile", "R²", "RMSE", "pixels"], [(t, v["r2"], v["rmse"], v["n"]) for t, v in truth.items()])
               if truth else ""))
    art.markdown("biomass-pipeline-summary", text, "Outputs and metrics of the whole run")
