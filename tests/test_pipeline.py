"""The whole biomass-pipeline on the small sample world through Prefect (shared test harness)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

from core.grid import Grid
from flows.params import BiomassPipelineParams
from flows.pipeline import biomass_pipeline

STAGES = {"hls-composite", "gedi-labels", "export-chips", "train-model", "evaluate-model"}


def _artifacts() -> dict[str, str]:
    """Key -> data of the latest artifact of each key."""
    from prefect.client.orchestration import get_client

    async def read() -> dict[str, str]:
        async with get_client() as client:
            return {a.key: str(a.data) for a in await client.read_artifacts() if a.key}

    return asyncio.run(read())


@pytest.fixture(scope="module")
def pipeline_run(prefect_harness, small_world, world_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("pipeline")
    params = BiomassPipelineParams.model_validate({
        "output_dir": str(out),
        "sample_world": {"size": "small", "seed": 0, "output_dir": str(world_dir)},
        "gedi": {"nodata": -1.0},
        "chips": {"chip_size": 48, "split_block_chips": 2, "split_fractions": [0.6, 0.2, 0.2]},
        "training": {"model": "tiny", "epochs": 1, "batch_size": 4, "device": "cpu"},
    })
    return params, biomass_pipeline(params)


def test_pipeline_outputs(pipeline_run, small_world) -> None:
    _, res = pipeline_run
    assert set(res.composites.tiles) == set(small_world["tiles"]) == {"10TEK", "10TFK"}
    for tile, comp in res.composites.tiles.items():
        grid = Grid.from_raster(comp.path)
        assert grid.to_dict()["transform"] == comp.grid["transform"]
        label = Grid.from_raster(res.labels.labels[tile])
        assert (label.crs, label.transform, label.shape) == (grid.crs, grid.transform, grid.shape)
        with rasterio.open(res.maps[tile]) as m:
            assert (m.crs.to_epsg(), tuple(m.transform)[:6], m.shape) == (grid.epsg, grid.transform, grid.shape)
    assert Path(res.labels.shots).is_file()
    assert res.labels.filter_counts["total"]["kept"] > 0
    # read as from NASA: every granule through the Earthdata emulator's protected data host (127.0.0.2)
    assert res.labels.granules and all(g.startswith("http://127.0.0.2:") for g in res.labels.granules)
    assert all(res.chips.splits[s] > 0 for s in ("train", "val", "test")), res.chips.splits
    assert Path(res.checkpoint).is_file()
    metrics = json.loads(Path(res.evaluation.metrics_path).read_text())
    assert {"model", "baseline_mean", "baseline_ridge"} <= set(metrics["metrics"])
    assert res.cached_stages == []
    assert all(v["n"] > 0 for v in res.map_vs_truth.values())
    assert json.loads(json.dumps(res.to_dict()))["chips"]["n_chips"] == res.chips.n_chips  # JSON-able


def test_pipeline_artifacts(pipeline_run) -> None:
    arts = _artifacts()
    keys = set(arts)
    assert "Train statistics" in arts["export-chips-summary"] and "| B07 |" in arts["export-chips-summary"]
    assert "true colour" in arts["hls-composite-summary"] and "data:image/png;base64," in arts["hls-composite-summary"]
    assert {"hls-composite-summary", "gedi-labels-summary", "export-chips-summary", "train-model-summary",
            "evaluate-model-summary", "predict-map-summary", "biomass-pipeline-summary"} <= keys


def test_stac_searches_use_the_global_concurrency_limit(pipeline_run) -> None:
    from prefect.client.orchestration import get_client

    from flows.stages import STAC_LIMIT, STAC_LIMIT_DEFAULT

    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(STAC_LIMIT)
    assert limit.limit == STAC_LIMIT_DEFAULT and limit.active_slots == 0  # created, and released after use


def test_pipeline_rerun_skips_finished_stages(pipeline_run) -> None:
    params, first = pipeline_run
    again = biomass_pipeline(params)
    assert set(again.cached_stages) == STAGES
    assert again.checkpoint == first.checkpoint
    assert again.evaluation.metrics == first.evaluation.metrics


def test_labels_rewritten_by_another_run_invalidate_the_downstream_caches(pipeline_run, small_world) -> None:
    """pipeline -> stand-alone gedi-labels with other filters into the same folder -> pipeline: the second
    pipeline run must not report the stale cached result: labels, chips, model and evaluation are redone."""
    from flows.params import GediLabelsParams
    from flows.stages import gedi_labels

    params, first = pipeline_run
    tile = sorted(first.labels.labels)[0]
    label_path = first.labels.labels[tile]
    with rasterio.open(label_path) as ds:
        before = ds.read(2)
    other = gedi_labels(GediLabelsParams(aoi=small_world["aoi"], year=small_world["year"],
                                         output_dir=params.output_dir, composites=first.composites.paths,
                                         granules=small_world["gedi"]["granules"], nodata=-1.0,
                                         min_sensitivity=0.99))
    with rasterio.open(label_path) as ds:
        assert (ds.read(2) != before).any()  # the stand-alone run overwrote the label raster
    assert other.result.n_shots < first.labels.n_shots
    chips_manifest = Path(first.chips.chips_export).stat().st_mtime_ns
    again = biomass_pipeline(params)
    assert again.cached_stages == ["hls-composite"]
    assert again.labels.n_shots == first.labels.n_shots  # the pipeline's own filters again
    with rasterio.open(label_path) as ds:
        np.testing.assert_array_equal(ds.read(2), before)
    assert Path(again.chips.chips_export).stat().st_mtime_ns != chips_manifest
    assert again.chips.skipped is False and again.training.skipped is False
    assert again.training.resumed_from_epoch is None  # trained again, not resumed from the stale run
