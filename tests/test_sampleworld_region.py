"""The ``region`` sample world: MGRS tiles of two UTM zones, each granule on its own zone's tile grid."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from pyproj import Transformer

from core.grid import Grid, epsg_of, mgrs_tile_grid
from sampleworld.spec import WorldSpec, preset
from sampleworld.world import generate_world


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> dict:
    spec = preset("region")
    return generate_world(tmp_path_factory.mktemp("region"), size="region", aoi_px=160, scenes=spec.scenes[:1],
                          gedi=spec.gedi[:1], workers=1)


def test_region_preset_spans_two_zones() -> None:
    spec = preset("region")
    zones = {int(t[:2]) for t in spec.tiles}
    assert len(spec.tiles) >= 4 and zones == {10, 11} and not spec.full_tiles
    assert WorldSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_granules_on_their_own_zone_grid_with_the_same_ground_values(region: dict) -> None:
    items = json.loads(Path(region["hls"]["items_json"]).read_text())["features"]
    by_tile = {it["id"].split(".")[2][1:]: it for it in items}
    assert sorted(by_tile) == ["10TGK", "10TGL", "11TKE", "11TKF"]
    for tile, it in by_tile.items():
        with rasterio.open(it["assets"]["B04"]["href"]) as ds:
            assert epsg_of(ds.crs) == 32600 + int(tile[:2])
            Grid(f"EPSG:{epsg_of(ds.crs)}", tuple(ds.transform)[:6], ds.width, ds.height).offset_in(mgrs_tile_grid(tile))
    # nearest resampling: a zone-11 pixel holds the zone-10 pixel under its centre (same rendered scene)
    with rasterio.open(by_tile["11TKE"]["assets"]["B04"]["href"]) as z11, \
            rasterio.open(by_tile["10TGK"]["assets"]["B04"]["href"]) as z10:
        a11, a10 = z11.read(1), z10.read(1)
        rows, cols = np.nonzero(a11 != -9999)
        pick = np.random.default_rng(0).choice(rows.size, 300, replace=False)
        xs, ys = rasterio.transform.xy(z11.transform, rows[pick], cols[pick])
        x10, y10 = Transformer.from_crs(32611, 32610, always_xy=True).transform(xs, ys)
        r10, c10 = rasterio.transform.rowcol(z10.transform, x10, y10)
        r10, c10 = np.asarray(r10), np.asarray(c10)
        inside = (r10 >= 0) & (r10 < a10.shape[0]) & (c10 >= 0) & (c10 < a10.shape[1])
        assert inside.sum() > 100
        same = a11[rows[pick], cols[pick]][inside] == a10[r10[inside], c10[inside]]
        assert same.mean() > 0.99, same.mean()
