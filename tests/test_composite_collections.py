"""HLS S30 and L30+S30 composites from files named as each collection names them, and southern tiles
written in EPSG:327NN, against an independent NumPy reference."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from pyproj import Transformer

from compositing.composite import build_composites, composite_tile
from compositing.contracts import CompositeOptions, SearchOptions
from core.bands import UnknownCollectionError
from core.constants import HLS_L30, HLS_L30_S30, HLS_S30
from core.grid import Grid, epsg_of, mgrs_tile_grid
from sampleworld.synthetic.scenes import S30_ASSETS, write_scene

L30_SIX = ("B02", "B03", "B04", "B05", "B06", "B07")
S30_SIX = ("B02", "B03", "B04", "B8A", "B11", "B12")
SEASON = {"start": "2021-06-01", "end": "2021-09-30"}


def _aoi(grid: Grid, box: tuple[float, float, float, float]) -> list[float]:
    t = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True)
    xs, ys = t.transform([box[0], box[2], box[0], box[2]], [box[1], box[1], box[3], box[3]])
    return [min(xs), min(ys), max(xs), max(ys)]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """3 L30 and 3 S30 scenes of 10TEK; every S30 asset (red edge B05-B07 too) holds different values."""
    root = tmp_path_factory.mktemp("hls")
    rng = np.random.default_rng(7)
    win = mgrs_tile_grid("10TEK").clip((600_000, 4_436_000, 609_000, 4_446_000))
    items = {HLS_L30: [], HLS_S30: []}
    for k in range(6):
        coll, sensor = (HLS_L30, "L30") if k % 2 == 0 else (HLS_S30, "S30")
        assets = L30_SIX if coll == HLS_L30 else S30_ASSETS
        bands = {a: rng.integers(0, 9000, win.shape).astype(np.int16) for a in assets}
        fm = rng.choice(np.array([0, 0, 0, 2, 8, 255], np.uint8), size=win.shape)
        if k == 1:
            bands["B8A"][:40] = -9999  # a nodata swath in S30's NIR band only
        iid = f"HLS.{sensor}.T10TEK.2021{170 + k:03d}T184447.v2.0"
        items[coll].append(write_scene(root, iid, win, bands, fm, f"2021-06-{19 + k:02d}T18:44:47Z", 5.0))
    files = root / "items.json"
    files.write_text(json.dumps({"type": "FeatureCollection", "features": items[HLS_L30] + items[HLS_S30]}))
    return {"items": items, "items_json": str(files), "aoi": _aoi(win, (601_000, 4_437_000, 608_000, 4_445_000))}


def reference(items: list[dict], grid: Grid) -> np.ndarray:
    """Masked mean (cloud, adjacent, shadow; fill; any band nodata) straight from the files, float64."""
    sums = np.zeros((6, *grid.shape))
    count = np.zeros(grid.shape, np.int64)
    for it in items:
        six = L30_SIX if it["id"].startswith("HLS.L30.") else S30_SIX
        with rasterio.open(it["assets"]["Fmask"]["href"]) as ds:
            c0, r0 = ~ds.transform @ (grid.transform[2], grid.transform[5])
            w = rasterio.windows.Window(round(c0), round(r0), grid.width, grid.height)
            fm = ds.read(1, window=w)
        vals = np.stack([rasterio.open(it["assets"][a]["href"]).read(1, window=w) for a in six]).astype(np.int64)
        ok = (fm != 255) & ((fm & 0b1110) == 0) & (vals != -9999).all(axis=0)
        sums += np.where(ok, vals, 0)
        count += ok
    out = np.full((7, *grid.shape), -9999.0)
    out[:6][:, count > 0] = sums[:, count > 0] / count[count > 0]
    out[6] = count
    return out


def _check(t, items: list[dict]) -> dict:
    grid = Grid.from_dict(t.grid)
    ref = reference(items, grid)
    with rasterio.open(t.path) as ds:
        got = ds.read()
        assert ds.descriptions == (*L30_SIX, "count")
        tags = ds.tags(4)
    np.testing.assert_array_equal(got[6], ref[6])
    assert np.all((got[:6] == -9999) == (ref[:6] == -9999))
    assert np.max(np.abs(got[:6] - ref[:6])) <= 0.5
    assert ref[6].max() >= 1
    return tags


def test_s30_composite_reads_s30_bands_not_red_edge(scenes, tmp_path):
    res = build_composites(items_json=scenes["items_json"], aoi=scenes["aoi"], season=SEASON,
                           output_dir=str(tmp_path), options=CompositeOptions(collection=HLS_S30, chunk_size=256))
    t = res.tiles["10TEK"]
    assert sorted(t.scenes_used) == sorted(it["id"] for it in scenes["items"][HLS_S30])
    # the L30 items of the search file are skipped with the reason, not read as S30
    assert {s["id"] for s in t.scenes_skipped} == {it["id"] for it in scenes["items"][HLS_L30]}
    assert all("not among the composite's collections" in s["reason"] for s in t.scenes_skipped)
    tags = _check(t, scenes["items"][HLS_S30])
    assert tags["SOURCE_ASSETS"] == "HLSS30_2.0:B8A" and tags["COMMON_NAME"] == "NIR_NARROW"
    with rasterio.open(t.path) as ds:
        assert ds.tags()["COLLECTION"] == HLS_S30


def test_l30_plus_s30_is_one_composite_of_both(scenes, tmp_path):
    res = build_composites(items_json=scenes["items_json"], aoi=scenes["aoi"], season=SEASON,
                           output_dir=str(tmp_path),
                           options=CompositeOptions(collection=HLS_L30_S30, chunk_size=256))
    t = res.tiles["10TEK"]
    both = scenes["items"][HLS_L30] + scenes["items"][HLS_S30]
    assert len(t.scenes_used) == 6 and not t.scenes_skipped and t.collection == HLS_L30_S30
    tags = _check(t, both)
    assert tags["SOURCE_ASSETS"] == "HLSL30_2.0:B05 HLSS30_2.0:B8A"
    l30_only = reference(scenes["items"][HLS_L30], Grid.from_dict(t.grid))[6]
    with rasterio.open(t.path) as ds:
        assert ds.read(7).sum() > l30_only.sum()  # more clear observations than L30 alone


def test_s30_read_failure_names_the_s30_asset(scenes, tmp_path):
    item = json.loads(json.dumps(scenes["items"][HLS_S30][0]))
    item["assets"]["B8A"]["href"] = str(tmp_path / "gone.B8A.tif")
    t = composite_tile(tile="10TEK", items=[item, scenes["items"][HLS_S30][1]], aoi=scenes["aoi"], season=SEASON,
                       output_dir=str(tmp_path), options=CompositeOptions(collection=HLS_S30, chunk_size=256))
    (skip,) = t.scenes_skipped
    assert skip["id"] == item["id"] and skip["asset"] == "B8A" and "cannot open" in skip["reason"]


@pytest.mark.parametrize("value", ["HLSL30.v2.0", "HLSS30", "landsat-c2-l2", "HLSL30_2.0,foo", ""])
def test_other_collections_are_refused(value):
    for cls in (CompositeOptions, SearchOptions):
        with pytest.raises(UnknownCollectionError, match="not supported|no HLS collection"):
            cls(collection=value)


def test_collection_option_is_normalised():
    assert CompositeOptions(collection=" HLSL30_2.0 + HLSS30_2.0 ").collection == HLS_L30_S30
    assert SearchOptions(collection="HLSS30_2.0,HLSS30_2.0").collection == HLS_S30


def test_southern_tile_written_in_utm_south_composites_like_utm_north(tmp_path):
    """19LBJ as HLS writes it (EPSG:32619, negative northings) and the same pixels in EPSG:32719."""
    north = mgrs_tile_grid("19LBJ").clip((230_000, -1_152_000, 240_000, -1_140_000))
    a, b, c, d, e, f = north.transform
    south = Grid("EPSG:32719", (a, b, c, d, e, f + 10_000_000.0), north.width, north.height, "19LBJ")
    rng = np.random.default_rng(3)
    arrays = [({x: rng.integers(0, 5000, north.shape).astype(np.int16) for x in L30_SIX},
               rng.choice(np.array([0, 0, 2, 255], np.uint8), size=north.shape)) for _ in range(3)]
    aoi = _aoi(north, (231_000, -1_150_000, 238_000, -1_142_000))
    out = {}
    for name, grid in (("north", north), ("south", south)):
        items = [write_scene(tmp_path / name, f"HLS.L30.T19LBJ.2020{231 + k}T144556.v2.0", grid, bands, fm,
                             f"2020-08-{18 + k}T14:45:56Z", 1.0) for k, (bands, fm) in enumerate(arrays)]
        with rasterio.open(items[0]["assets"]["B02"]["href"]) as ds:
            assert epsg_of(ds.crs) == grid.epsg  # north: HLS's authority-less WKT; south: EPSG:32719
        t = composite_tile(tile="19LBJ", items=items, aoi=aoi, season={"start": "2019-12-01", "end": "2020-09-30"},
                           output_dir=str(tmp_path / f"o-{name}"), threads=1)
        assert len(t.scenes_used) == 3 and not t.scenes_skipped and t.grid["crs"] == "EPSG:32619"
        with rasterio.open(t.path) as ds:
            out[name] = ds.read()
        if name == "north":  # the reference reads pixels by the file's own transform: the north files
            np.testing.assert_array_equal(out[name][6], reference(items, Grid.from_dict(t.grid))[6])
    np.testing.assert_array_equal(out["north"], out["south"])
    assert out["north"][6].max() >= 1


def test_granite_layout_option_writes_a_folder_of_same_size_geotiffs(scenes, tmp_path):
    opts = CompositeOptions(collection=HLS_L30_S30, chunk_size=256, granite_layout=True)
    kw = dict(items_json=scenes["items_json"], aoi=scenes["aoi"], output_dir=str(tmp_path), options=opts)
    t = build_composites(season=SEASON, **kw).tiles["10TEK"]
    assert t.granite_path == str(tmp_path / "composites_granite" / "10TEK" / "2021-06-01_2021-09-30.tif")
    t2 = build_composites(season={"start": "2021-06-15", "end": "2021-09-30"}, **kw).tiles["10TEK"]
    folder = tmp_path / "composites_granite" / "10TEK"
    assert sorted(p.name for p in folder.iterdir()) == ["2021-06-01_2021-09-30.tif", "2021-06-15_2021-09-30.tif"]
    shapes = set()
    for comp, gran in ((t.path, t.granite_path), (t2.path, t2.granite_path)):
        with rasterio.open(comp) as c, rasterio.open(gran) as g:
            assert g.count == 10 and g.descriptions[1:7] == L30_SIX and g.descriptions[0] == "B01"
            np.testing.assert_array_equal(g.read()[1:7], c.read()[:6])
            shapes.add(g.shape)
    assert len(shapes) == 1  # one tile's seasons share its grid: inference_on_dir can concatenate them
    again = build_composites(season=SEASON, **kw).tiles["10TEK"]
    assert again.reused and again.granite_path == t.granite_path
    plain = build_composites(season=SEASON, **{**kw, "output_dir": str(tmp_path / "p"),
                                                "options": CompositeOptions(chunk_size=256)}).tiles["10TEK"]
    assert plain.granite_path is None and not (tmp_path / "p" / "composites_granite").exists()
