"""The whole biomass-pipeline on the small sample world through Prefect (shared test harness): two training
seasons with GEDI (2022, 2024), a map-only year (2025: after GEDI's last shot), the change between the
map years, then map-biomass with the area's current model."""

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
    from prefect.client.schemas.sorting import ArtifactSort

    async def read() -> dict[str, str]:  # newest first; other tests' runs share the harness and the keys
        async with get_client() as client:
            arts = await client.read_artifacts(sort=ArtifactSort.CREATED_DESC)
        latest: dict[str, str] = {}
        for a in arts:
            if a.key and a.key not in latest:
                latest[a.key] = str(a.data)
        return latest

    return asyncio.run(read())


@pytest.fixture(scope="module")
def pipeline_run(prefect_harness, small_world, world_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("pipeline")
    params = BiomassPipelineParams.model_validate({
        "output_dir": str(out),
        "sample_world": {"size": "small", "seed": 0, "output_dir": str(world_dir)},
        "gedi": {"nodata": -1.0},
        "chips": {"chip_size": 48, "split_block_m": 2000, "split_fractions": [0.6, 0.2, 0.2]},
        "training_years": [2022, 2024], "map_years": [2024, 2025],
        "training": {"model": "tiny", "epochs": 1, "batch_size": 4, "device": "cpu"},
    })
    return params, biomass_pipeline(params)


def test_pipeline_outputs(pipeline_run, small_world) -> None:
    _, res = pipeline_run
    assert small_world["years"] == [2022, 2024, 2025] and small_world["gedi_years"] == [2022, 2024]
    assert set(res.composites) == {"2022", "2024", "2025"} and set(res.labels) == {"2022", "2024"}
    for year, lab in res.labels.items():
        comp = res.composites[year]
        assert set(comp.tiles) == set(small_world["tiles"]) == {"10TEK", "10TFK"}
        assert comp.season == {"start": f"{year}-06-01", "end": f"{year}-09-30"} == lab.season
        for tile, c in comp.tiles.items():
            grid = Grid.from_raster(c.path)
            assert grid.to_dict()["transform"] == c.grid["transform"]
            label = Grid.from_raster(lab.labels[tile])
            assert (label.crs, label.transform, label.shape) == (grid.crs, grid.transform, grid.shape)
        assert Path(lab.shots).is_file() and lab.filter_counts["total"]["kept"] > 0
        # read as from NASA: every granule through the Earthdata emulator's protected data host (127.0.0.2)
        assert lab.granules and all(g.startswith("http://127.0.0.2:") for g in lab.granules)
    for year, m in res.mapping.years.items():
        for tile, path in m.maps.items():
            grid = Grid.from_raster(res.composites[year].tiles[tile].path)
            with rasterio.open(path) as ds:
                assert (ds.crs.to_epsg(), tuple(ds.transform)[:6], ds.shape) == (grid.epsg, grid.transform, grid.shape)
            assert m.map_vs_truth[tile]["n"] > 0
    assert all(res.chips.splits[s] > 0 for s in ("train", "val", "test")), res.chips.splits
    split = json.loads(Path(res.chips.split_file).read_text())
    assert {c["season"] for c in split["chips"]} == {"2022-06-01_2022-09-30", "2024-06-01_2024-09-30"}
    assert Path(res.checkpoint).is_file()
    metrics = json.loads(Path(res.evaluation.metrics_path).read_text())
    assert {"model", "baseline_mean", "baseline_ridge"} <= set(metrics["metrics"])
    assert set(res.evaluation.per_season) <= {"2022-06-01_2022-09-30", "2024-06-01_2024-09-30"}
    assert sum(v["n_pixels"] for v in res.evaluation.per_season.values()) in (0, res.evaluation.n_pixels)
    assert res.cached_stages == []
    assert res.model.training_years == [2022, 2024] and res.model.checkpoint == res.checkpoint
    assert json.loads(json.dumps(res.to_dict()))["chips"]["n_chips"] == res.chips.n_chips  # JSON-able


def test_pipeline_plan_and_change(pipeline_run) -> None:
    _, res = pipeline_run
    yp = res.plan.years
    assert (yp.training_years, yp.map_years, yp.training_rule) == ([2022, 2024], [2024, 2025], "explicit")
    assert res.plan.season(2025).gedi_days is None and res.plan.season(2022).gedi_days == 122
    (change,) = res.mapping.change
    assert (change.year_from, change.year_to) == (2024, 2025)
    assert change.area.n_valid > 0 and change.area.mean_from is not None
    assert change.area.total_change_mg == pytest.approx(
        (change.area.mean_to - change.area.mean_from) * change.area.n_valid * 0.09, rel=1e-3, abs=1.0)
    with rasterio.open(change.rasters["10TEK"]) as ds, rasterio.open(res.mapping.years["2025"].maps["10TEK"]) as m:
        assert ds.transform == m.transform and ds.tags()["YEAR_TO"] == "2025"
    assert Path(change.table_csv).read_text().splitlines()[-1].startswith("area,")


def test_pipeline_totals_change_and_catalog(pipeline_run) -> None:
    """Totals (Mg AGB, Mg C) with intervals per map year, their change, totals.json and the run catalog."""
    from core.stac_validate import validate_catalog

    _, res = pipeline_run
    mrv = res.mrv
    assert res.model.calibration == res.evaluation.calibration and Path(res.model.calibration).is_file()
    assert [t.year for t in mrv.totals] == ["2024", "2025"]
    assert len(mrv.notes) == 1 and mrv.notes[0].startswith("map year(s) 2025 had no GEDI labels")  # trained 2022+2024
    for t in mrv.totals:
        assert t.agb_mg.lower < t.agb_mg.value < t.agb_mg.upper and t.agb_mg.level == 0.9
        assert t.carbon_mg.value == pytest.approx(0.47 * t.agb_mg.value) and t.area_ha > 0
    (ch,) = mrv.changes
    assert (ch.from_year, ch.to_year) == ("2024", "2025") and ch.agb_mg.lower < ch.agb_mg.value < ch.agb_mg.upper
    assert ch.agb_mg.value == pytest.approx(mrv.totals[1].agb_mg.value - mrv.totals[0].agb_mg.value, rel=1e-6)
    saved = json.loads(Path(mrv.totals_json).read_text())
    assert [t["year"] for t in saved["totals"]] == ["2024", "2025"] and len(saved["changes"]) == 1
    assert Path(mrv.totals_json) == Path(res.output_dir, "totals", "totals.json")
    assert mrv.catalog.catalog == str(Path(res.output_dir, "catalog", "catalog.json")) and mrv.validation.ok
    assert {"composites", "labels", "chips", "models", "evaluations", "maps", "totals"} <= set(mrv.catalog.items)
    assert mrv.catalog.missing_links == [] and validate_catalog(Path(res.output_dir, "catalog")).ok
    with rasterio.open(res.mapping.years["2025"].maps["10TEK"]) as ds:
        assert ds.descriptions == ("agb", "agb_lower", "agb_upper")  # interval bands on every map
    assert Path(res.mapping.change[0].rasters["10TEK"]).with_suffix(".change.png").is_file()
    assert json.loads(json.dumps(res.to_dict()))["mrv"]["totals"][0]["carbon_mg"]["level"] == 0.9


def test_pipeline_artifacts(pipeline_run) -> None:
    arts = _artifacts()
    keys = set(arts)
    assert "Train statistics" in arts["export-chips-summary"] and "| B07 |" in arts["export-chips-summary"]
    assert "true colour" in arts["hls-composite-summary"] and "data:image/png;base64," in arts["hls-composite-summary"]
    assert {"hls-composite-summary", "gedi-labels-summary", "export-chips-summary", "train-model-summary",
            "evaluate-model-summary", "predict-map-summary", "biomass-pipeline-summary", "run-plan",
            "biomass-change", "mrv-summary"} <= keys
    assert {"hls-composite-progress", "gedi-labels-progress", "train-model-progress", "predict-map-progress"} <= keys
    assert "| 2024 | 2025 | area |" in arts["biomass-change"] and "| 2025 |" in arts["run-plan"]
    assert "| 2024 -> 2025 |" in arts["mrv-summary"] and "validates" in arts["mrv-summary"]
    assert "## Area totals (Mg)" in arts["biomass-pipeline-summary"]


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
    labels = first.labels["2024"]
    tile = sorted(labels.labels)[0]
    label_path = labels.labels[tile]
    with rasterio.open(label_path) as ds:
        before = ds.read(2)
    other = gedi_labels(GediLabelsParams(aoi=small_world["aoi"], year=2024,
                                         output_dir=str(Path(label_path).parents[2]),  # the season's folder
                                         composites=first.composites["2024"].paths,
                                         granules=small_world["gedi"]["granules"], nodata=-1.0,
                                         min_sensitivity=0.99))
    with rasterio.open(label_path) as ds:
        assert (ds.read(2) != before).any()  # the stand-alone run overwrote the label raster
    assert other.result.n_shots < labels.n_shots
    chips_manifest = Path(first.chips.chips_export).stat().st_mtime_ns
    again = biomass_pipeline(params)
    assert again.cached_stages == ["hls-composite"]
    assert again.labels["2024"].n_shots == labels.n_shots  # the pipeline's own filters again
    with rasterio.open(label_path) as ds:
        np.testing.assert_array_equal(ds.read(2), before)
    assert Path(again.chips.chips_export).stat().st_mtime_ns != chips_manifest
    assert again.chips.skipped is False and again.training.skipped is False
    assert again.training.resumed_from_epoch is None  # trained again, not resumed from the stale run


def test_map_biomass_with_the_area_model(pipeline_run, world_dir, tmp_path) -> None:
    """map-biomass reads the area's current model (no labels, no training) and maps a year without GEDI."""
    from flows.params import MapBiomassParams
    from flows.pipeline import map_biomass

    params, first = pipeline_run
    res = map_biomass(MapBiomassParams.model_validate({
        "output_dir": params.output_dir, "year": 2025, "previous_year": True,
        "sample_world": {"size": "small", "seed": 0, "output_dir": str(world_dir)}}))
    assert res.model.checkpoint == Path(params.output_dir, "model", "best.ckpt").as_posix()
    assert res.plan.years.training_years == [] and res.plan.years.map_years == [2024, 2025]
    assert set(res.mapping.years) == {"2024", "2025"} and len(res.mapping.change) == 1
    assert res.model.calibration == first.model.calibration and [t.year for t in res.mrv.totals] == ["2024", "2025"]
    assert len(res.mrv.changes) == 1 and res.mrv.validation.ok
    assert len(res.mrv.notes) == 1 and res.mrv.notes[0].startswith("map year(s) 2025 had no GEDI labels")
    assert res.mrv.catalog.catalog == first.mrv.catalog.catalog  # the area's catalog: the second run adds to it
    assert res.mrv.catalog.missing_links == [] and "maps/map-10TEK-2025" in res.mrv.catalog.updated
    with pytest.raises(FileNotFoundError, match="no model for this area"):
        map_biomass(MapBiomassParams.model_validate({
            "output_dir": str(tmp_path), "sample_world": {"size": "small", "seed": 0, "output_dir": str(world_dir)}}))


def test_map_biomass_from_a_catalog(pipeline_run, world_dir, tmp_path) -> None:
    """map-biomass with ``catalog_input``: the catalog's model and calibration, its composites of the same
    windows reused (no compositing), the same totals, and a catalog of its own."""
    from flows.params import MapBiomassParams
    from flows.pipeline import map_biomass

    params, first = pipeline_run
    res = map_biomass(MapBiomassParams.model_validate({
        "output_dir": str(tmp_path), "year": 2025, "previous_year": True,
        "catalog_input": first.mrv.catalog.catalog,
        "sample_world": {"size": "small", "seed": 0, "output_dir": str(world_dir)}}))
    assert res.model.checkpoint == first.checkpoint and res.model.calibration == first.evaluation.calibration
    for y in ("2024", "2025"):
        assert res.mapping.years[y].composites.paths == first.composites[y].paths  # reused, not recomposited
    assert not (tmp_path / "seasons").exists()
    assert [t.agb_mg.value for t in res.mrv.totals] == pytest.approx([t.agb_mg.value for t in first.mrv.totals],
                                                                    rel=1e-5)
    assert res.mrv.changes[0].agb_mg.value == pytest.approx(first.mrv.changes[0].agb_mg.value, rel=1e-4, abs=1.0)
    assert res.mrv.catalog.catalog == str(tmp_path / "catalog" / "catalog.json") and res.mrv.validation.ok
    assert set(res.mrv.catalog.items) == {"composites", "maps", "totals"}
    with pytest.raises(ValueError, match="not both"):
        MapBiomassParams.model_validate({"output_dir": str(tmp_path), "checkpoint": first.checkpoint,
                                         "catalog_input": first.mrv.catalog.catalog,
                                         "sample_world": {"size": "small", "seed": 0}})
