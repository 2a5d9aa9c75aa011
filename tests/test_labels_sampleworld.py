"""Acceptance on the small sample world: the label raster equals an independent NumPy rasterization, and
labelled pixels differ from the true AGB raster by the error the generator put in (manifest agbd_error)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from pyproj import Transformer

from core.grid import Grid, mgrs_tile_grid
from labels import run_gedi_labels
from labels.contracts import LabelOptions


def _season(world: dict[str, Any]) -> str:
    return f"{world['season']['start']}_{world['season']['end']}"


def _stand_in_composites(world: dict[str, Any], folder: Path) -> list[str]:
    """One COG per world tile on the composite's grid: the tile grid clipped to the AOI (only grid and tags
    matter to the labels engine)."""
    minx, miny, maxx, maxy = world["aoi"]
    paths = []
    for tile in world["tiles"]:
        tg = mgrs_tile_grid(tile)
        xs, ys = Transformer.from_crs("EPSG:4326", tg.crs, always_xy=True).transform(
            [minx, maxx, minx, maxx], [miny, miny, maxy, maxy])
        g = tg.clip((min(xs), min(ys), max(xs), max(ys)))
        p = folder / "composites" / tile / f"{_season(world)}.tif"
        p.parent.mkdir(parents=True, exist_ok=True)
        with rasterio.open(p, "w", driver="GTiff", width=g.width, height=g.height, count=1, dtype="float32",
                           crs=g.crs, transform=g.affine, nodata=-9999.0) as ds:
            ds.write(np.zeros(g.shape, np.float32), 1)
            ds.update_tags(MGRS_TILE=tile, SEASON=_season(world))
        paths.append(str(p))
    return paths


@pytest.fixture(scope="module")
def world_labels(small_world: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if not small_world["gedi"]["granules"]:
        pytest.skip("the sample world has no GEDI granules")
    out = tmp_path_factory.mktemp("world_labels")
    comps = _stand_in_composites(small_world, out)
    year = str(small_world["year"])  # the world's other years have granules too: the season's are these
    granules = [g for g in small_world["gedi"]["granules"] if Path(g).name.split("_")[2].startswith(year)]
    res = run_gedi_labels(aoi=small_world["aoi"], year=small_world["year"], granules=granules,
                          composites=comps, output_dir=str(out))
    return {"result": res, "composites": comps, "out": out, "granules": granules}


def test_every_tile_labelled_and_counts_consistent(small_world: dict, world_labels: dict) -> None:
    res = world_labels["result"]
    assert set(res.labels) == set(small_world["tiles"])
    assert not any(res.all_nodata.values())
    total = res.filter_counts["total"]
    assert total["input"] - sum(v for k, v in total.items() if k not in ("input", "kept")) == total["kept"]
    assert total["kept"] == res.n_shots > 500
    shots = dict(zip(small_world["gedi"]["granules"], small_world["gedi"]["shots"], strict=True))
    assert total["input"] == sum(shots[g] for g in world_labels["granules"])
    for name in world_labels["granules"]:
        if name.endswith("_01_V002.h5"):
            assert any(Path(name).name in w and "production version 01" in w for w in res.warnings)


def test_label_raster_equals_numpy_rasterization(world_labels: dict) -> None:
    res = world_labels["result"]
    shots = gpd.read_parquet(res.shots)
    for tile, path in res.labels.items():
        with rasterio.open(path) as ds:
            grid = Grid.from_raster(path)
            agbd, count = ds.read(1), ds.read(2)
            assert ds.nodata == -9999.0
        comp = next(p for p in world_labels["composites"] if f"/{tile}/" in p)
        assert grid == Grid.from_raster(comp)  # exactly the composite's grid
        x, y = Transformer.from_crs("EPSG:4326", grid.crs, always_xy=True).transform(
            shots["lon"].to_numpy(), shots["lat"].to_numpy())
        a, _, c, _, e, f = grid.transform
        col = np.floor((np.asarray(x) - c) / a).astype(np.int64)
        row = np.floor((np.asarray(y) - f) / e).astype(np.int64)
        ok = (col >= 0) & (col < grid.width) & (row >= 0) & (row < grid.height)
        s, n = np.zeros(grid.shape), np.zeros(grid.shape, np.int64)
        np.add.at(s, (row[ok], col[ok]), shots["agbd"].to_numpy()[ok].astype(np.float64))
        np.add.at(n, (row[ok], col[ok]), 1)
        expect = np.full(grid.shape, -9999.0, np.float32)
        expect[n > 0] = (s[n > 0] / n[n > 0]).astype(np.float32)
        np.testing.assert_array_equal(agbd, expect)
        np.testing.assert_array_equal(count, n.astype(np.float32))


def test_label_error_against_truth_is_the_generators(small_world: dict, world_labels: dict) -> None:
    err = small_world["gedi"]["agbd_error"]  # agbd = max(0, truth + N(0, a + b * truth))
    truth_grid = Grid.from_raster(small_world["truth"]["agb"])
    with rasterio.open(small_world["truth"]["agb"]) as ds:
        truth = ds.read(1)
    for path in world_labels["result"].labels.values():
        grid = Grid.from_raster(path)
        with rasterio.open(path) as ds:
            agbd, count = ds.read(1), ds.read(2)
        r0, c0 = grid.offset_in(truth_grid)
        t = truth[r0:r0 + grid.height, c0:c0 + grid.width]
        lab = count > 0
        # away from the clip at 0 (truth >= 100 Mg/ha: > 3 sd), the standardized error is N(0, 1)
        sel = lab & (t >= 100)
        z = (agbd[sel] - t[sel]) * np.sqrt(count[sel]) / (err["a"] + err["b"] * t[sel])
        assert sel.sum() > 200
        assert abs(float(z.mean())) < 4 / np.sqrt(sel.sum())  # 4 standard errors
        assert 0.85 < float(z.std()) < 1.15
        # over all labelled pixels the mean error is small against the noise (clipping adds a little bias)
        d = agbd[lab] - t[lab]
        assert abs(float(d.mean())) < 0.1 * float(np.mean(err["a"] + err["b"] * t[lab]))


def test_search_on_loopback_stac_finds_the_worlds_granules(small_world: dict, stac_url: str,
                                                         world_labels: dict, tmp_path: Path) -> None:
    res = run_gedi_labels(aoi=small_world["aoi"], year=small_world["year"], composites=world_labels["composites"], output_dir=str(tmp_path), options=LabelOptions(stac_url=stac_url))
    found = {Path(g).name[:-3] for g in small_world["gedi"]["granules"]}
    assert set(res.granules_used) | {s["granule"] for s in res.granules_skipped} <= found
    assert res.n_shots == world_labels["result"].n_shots
    assert res.filter_counts == world_labels["result"].filter_counts


def test_degrade_switch_on_a_fully_degraded_granule(small_world: dict, world_labels: dict, tmp_path: Path) -> None:
    per = world_labels["result"].filter_counts["per_granule"]
    degraded = [g for g, c in per.items() if c["degraded"] and c["kept"] == 0]
    if not degraded:
        pytest.skip("the small world has no fully degraded granule")
    res = run_gedi_labels(aoi=small_world["aoi"], year=small_world["year"], granules=[g for g in small_world["gedi"]["granules"] if Path(g).name[:-3] in degraded], output_dir=str(tmp_path), options=LabelOptions(drop_degraded=False))
    c = res.filter_counts["total"]
    assert c["degraded"] == 0 and c["kept"] == per[degraded[0]]["degraded"] > 0
