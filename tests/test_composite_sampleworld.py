"""Search + composite on the small sample world through its loopback STAC API (rustac)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import rasterio
from test_composite import reference

from compositing.composite import build_composites, group_by_tile, tile_grid
from compositing.contracts import CompositeOptions, SearchOptions
from compositing.search import search_hls
from core.grid import Grid


def run_hls_composite(*, aoi, year, stac_url, output_dir, max_cloud_cover, chunk_size):
    """The search, then the composites of every tile found (what the hls-composite flow runs)."""
    search = search_hls(aoi=aoi, year=year, output_dir=output_dir,
                        options=SearchOptions(stac_url=stac_url, max_cloud_cover=max_cloud_cover))
    comp = build_composites(items_json=search.items_json, aoi=aoi, season=search.season,
                            output_dir=output_dir, options=CompositeOptions(chunk_size=chunk_size))
    return search, comp


def test_search_and_composite_on_small_world(small_world, stac_url, tmp_path):
    w = small_world
    search, comp = run_hls_composite(aoi=w["aoi"], year=w["year"], stac_url=stac_url, output_dir=str(tmp_path),
                                     max_cloud_cover=80, chunk_size=256)
    assert search.season == comp.season == w["season"]
    assert sorted(comp.tiles) == sorted(w["tiles"]) == ["10TEK", "10TFK"]
    items = json.loads(Path(search.items_json).read_text())["features"]
    all_items = json.loads(Path(w["hls"]["items_json"]).read_text())["features"]
    in_season = [it for it in all_items if w["season"]["start"] <= it["properties"]["datetime"][:10] <= w["season"]["end"]]
    assert {it["id"] for it in items} == {it["id"] for it in in_season
                                         if it["properties"]["eo:cloud_cover"] <= 80}
    assert search.server_cloud_filter is False
    groups = group_by_tile(items)
    for tile, t in comp.tiles.items():
        grid = Grid.from_dict(t.grid)
        assert grid == tile_grid(tile, w["aoi"]) and grid.crs == "EPSG:32610"
        assert sorted(t.scenes_used) == sorted(it["id"] for it in groups[tile])
        with rasterio.open(t.path) as ds:
            got = ds.read()
        ref = reference(groups[tile], grid, (1, 2, 3), False, 1)
        np.testing.assert_array_equal(got[6], ref[6])
        assert np.all((got[:6] == -9999) == (ref[:6] == -9999))
        assert np.max(np.abs(got[:6].astype(np.float64) - ref[:6])) <= 0.5
        assert t.valid_obs["pixels_with_data"] > 0.5 * grid.width * grid.height
    # the overlap: both tiles share the zone lattice and composite the same scenes' pixels
    ek, fk = (Grid.from_dict(comp.tiles[t].grid) for t in ("10TEK", "10TFK"))
    assert (ek.transform[2] - fk.transform[2]) % 30 == 0 and (ek.transform[5] - fk.transform[5]) % 30 == 0
    search2, again = run_hls_composite(aoi=w["aoi"], year=w["year"], stac_url=stac_url, output_dir=str(tmp_path),
                                       max_cloud_cover=80, chunk_size=256)
    assert search2.reused and all(t.reused for t in again.tiles.values())
