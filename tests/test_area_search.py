"""Areas read for what they mean: an area split at the antimeridian is searched as two boxes (HLS and GEDI),
the composite tiles then come from both sides; invalid areas are refused before anything is searched."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from compositing.composite import tile_grid
from compositing.contracts import SearchOptions
from compositing.search import search_hls
from core.area import AoiError, parse_aoi, search_bboxes
from labels.search import search_granules
from sampleworld.stac import collection, feature_collection, gedi_item

# Fiji: one area drawn across the antimeridian, given split at +-180 (RFC 7946 3.1.9)
EAST = [[179.6, -16.7], [180.0, -16.7], [180.0, -16.3], [179.6, -16.3], [179.6, -16.7]]
WEST = [[-180.0, -16.7], [-179.6, -16.7], [-179.6, -16.3], [-180.0, -16.3], [-180.0, -16.7]]
SPLIT = {"type": "MultiPolygon", "coordinates": [[EAST], [WEST]]}
SEASON = {"start": "2021-01-01", "end": "2021-03-31"}
POLICY = {"backoff_s": 0.01, "max_backoff_s": 0.05, "timeout_s": 5}


def _hls(tile: str, k: int, ring: list[list[float]]) -> dict:
    iid = f"HLS.L30.T{tile}.2021{10 + k:03d}T220000.v2.0"
    return {"type": "Feature", "stac_version": "1.0.0", "id": iid, "collection": "HLSL30_2.0",
            "properties": {"datetime": f"2021-01-{10 + k:02d}T22:00:00Z", "eo:cloud_cover": 10.0},
            "geometry": {"type": "Polygon", "coordinates": [ring]},
            "bbox": [min(p[0] for p in ring), min(p[1] for p in ring), max(p[0] for p in ring), max(p[1] for p in ring)],
            "links": [], "assets": {"B02": {"href": f"https://example.invalid/{iid}.B02.tif"}}}


@pytest.fixture(scope="module")
def stac(tmp_path_factory: pytest.TempPathFactory):
    from sampleworld.stac_server import serve_stac

    east = [[179.0, -17.2], [180.0, -17.2], [180.0, -16.2], [179.0, -16.2], [179.0, -17.2]]
    west = [[-180.0, -17.2], [-179.0, -17.2], [-179.0, -16.2], [-180.0, -16.2], [-180.0, -17.2]]
    decoy = [[0.2, -17.2], [1.0, -17.2], [1.0, -16.2], [0.2, -16.2], [0.2, -17.2]]  # same latitudes, lon 0
    hls = [_hls("60KYG", 1, east), _hls("60KYG", 2, east), _hls("01KBB", 3, west), _hls("31KBB", 4, decoy)]
    gedi = [gedi_item(f"GEDI04_A_2021{20 + k:03d}101010_O{12000 + k:05d}_02_T01234_02_002_02_V002.h5",
                      [tuple(p) for p in ring], datetime(2021, 1, 20 + k, 10), datetime(2021, 1, 20 + k, 11),
                      f"/data/{k}.h5", f"G{k}") for k, ring in enumerate((east, west, decoy))]
    world = tmp_path_factory.mktemp("fiji")
    (world / "stac").mkdir()
    for name, doc in {"hls_collection.json": collection("HLSL30_2.0", "HLS", "t", [-180, -90, 180, 90],
                                                        ["2013-04-11T00:00:00.000Z", None], "LPCLOUD"),
                      "gedi_collection.json": collection("GEDI_L4A_AGB_Density_V2_1_2056_2.1", "GEDI", "t",
                                                         [-180, -90, 180, 90], ["2019-04-18T00:00:00.000Z", None],
                                                         "ORNL_CLOUD"),
                      "hls_items.json": feature_collection(hls), "gedi_items.json": feature_collection(gedi)}.items():
        (world / "stac" / name).write_text(json.dumps(doc))
    with serve_stac(world) as url:
        yield url


def test_split_area_gives_two_boxes() -> None:
    assert search_bboxes(parse_aoi(SPLIT)) == [(-180.0, -16.7, -179.6, -16.3), (179.6, -16.7, 180.0, -16.3)]
    assert search_bboxes(parse_aoi([10, 50, 11, 51])) == [(10.0, 50.0, 11.0, 51.0)]


def test_hls_search_of_a_split_area_finds_both_sides_only(stac: str, tmp_path) -> None:
    res = search_hls(aoi=SPLIT, season=SEASON, output_dir=str(tmp_path), retries=POLICY,
                     options=SearchOptions(stac_url=stac))
    assert res.tiles == ["01KBB", "60KYG"] and res.n_items == 3
    assert res.n_returned == 3 and res.dropped_aoi == 0  # the decoy at lon 0 was never asked for
    for tile in res.tiles:  # the composites then come from both sides: each tile's grid meets the area
        g = tile_grid(tile, SPLIT)
        assert g.tile == tile and g.width > 0 and g.height > 0


def test_gedi_search_of_a_split_area_finds_both_sides_only(stac: str) -> None:
    hrefs = search_granules(aoi=SPLIT, season=SEASON, stac_url=stac, retries=POLICY)
    assert hrefs == ["/data/0.h5", "/data/1.h5"]


@pytest.mark.parametrize(("aoi", "message"), [
    ({"type": "Polygon", "coordinates": [[[179.6, -16.7], [-179.6, -16.7], [-179.6, -16.3], [179.6, -16.3],
                                          [179.6, -16.7]]]}, "crosses the antimeridian without being split"),
    ({"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}, r"Self-intersection\[0.5 0.5\]"),
])
def test_bad_areas_are_refused_before_searching(tmp_path, aoi, message) -> None:
    with pytest.raises(AoiError, match=message):
        search_hls(aoi=aoi, season=SEASON, output_dir=str(tmp_path), options=SearchOptions(stac_url="http://127.0.0.1:9"))
    assert not (tmp_path / "search").exists()
