"""Composite engine vs an independent NumPy reference, on generated HLS-format scenes.

Two overlapping MGRS tiles (10TEK, 10TFK, same UTM zone) with an AOI in their overlap; every Fmask case
(each bit, aerosol levels, fill), nodata swaths in all bands and in a single band, files that cover only
part of the tile (aligned windows, as the sample world writes them), several spatial chunks.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from pyproj import Transformer

from compositing.composite import (
    CompositeError,
    build_composites,
    chunk_windows,
    composite_tile,
    group_by_tile,
    tile_grid,
)
from compositing.contracts import CompositeOptions
from compositing.kernel import _band_windows
from core.grid import Grid, mgrs_tile_grid
from sampleworld.synthetic.scenes import write_scene

BANDS = ("B02", "B03", "B04", "B05", "B06", "B07")
# every Fmask case: clear, each bit alone, combinations, each aerosol level, fill
FMASK_VALUES = np.array([0, 1, 2, 4, 8, 16, 32, 64, 128, 192, 192 | 16, 64 | 32, 2 | 8, 1 | 64, 255, 0, 0, 64],
                        dtype=np.uint8)


def _aoi_lonlat(grid: Grid, box: tuple[float, float, float, float]) -> list[float]:
    t = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True)
    xs, ys = t.transform([box[0], box[2], box[0], box[2]], [box[1], box[1], box[3], box[3]])
    return [min(xs), min(ys), max(xs), max(ys)]


def _scene_arrays(rng: np.random.Generator, h: int, w: int, k: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    fm = rng.choice(FMASK_VALUES, size=(h, w)).astype(np.uint8)
    bands = {b: rng.integers(-200, 12000, size=(h, w)).astype(np.int16) for b in BANDS}
    if k % 3 == 0:  # a nodata swath in every band (Fmask stays valid: only the band value rules it out)
        for b in BANDS:
            bands[b][:, : w // 4] = -9999
    if k % 3 == 1:  # a nodata swath in one band only: the whole observation is invalid there
        bands["B05"][h // 2:, :] = -9999
        fm[: h // 5, :] = 255  # and an Fmask fill stripe
    if k == 2:  # a completely cloudy scene: no band block needs reading
        fm[:] = 2
    return bands, fm


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("hls")
    rng = np.random.default_rng(42)
    ek, fk = mgrs_tile_grid("10TEK"), mgrs_tile_grid("10TFK")
    aoi = _aoi_lonlat(ek, (601_000, 4_436_500, 608_000, 4_446_000))
    items = []
    for tile, full in (("10TEK", ek), ("10TFK", fk)):
        # files cover an aligned window of the tile around the AOI (and deliberately not all of it for one)
        files_box = (596_000, 4_430_000, 612_000, 4_452_000)
        for k in range(6):
            win = full.clip(files_box if k != 4 else (596_000, 4_441_000, 612_000, 4_452_000))
            bands, fm = _scene_arrays(rng, win.height, win.width, k)
            iid = f"HLS.L30.T{tile}.2021{160 + 3 * k:03d}T184447.v2.0"
            items.append(write_scene(root, iid, win, bands, fm, f"2021-06-{10 + k:02d}T18:44:47Z", 10.0 * k))
    items_json = root / "items.json"
    items_json.write_text(json.dumps({"type": "FeatureCollection", "features": items}))
    return {"root": root, "aoi": aoi, "items": items, "items_json": str(items_json)}


def _assets_of(item: dict) -> list[str]:
    """The six assets the reference reads: L30 B02..B07, S30 B02 B03 B04 B8A B11 B12 (by the item id)."""
    return list(BANDS) if item["id"].startswith("HLS.L30.") else ["B02", "B03", "B04", "B8A", "B11", "B12"]


def reference(items: list[dict], grid: Grid, masked_bits: tuple[int, ...], high_aerosol: bool,
              min_obs: int) -> np.ndarray:
    """Masked mean straight from the files: float64, explicit bit tests, no engine code."""
    h, w = grid.shape
    sums = np.zeros((6, h, w))
    count = np.zeros((h, w), dtype=np.int64)
    for it in items:
        with rasterio.open(it["assets"]["Fmask"]["href"]) as ds:
            fm = ds.read(1)
            ft = ds.transform
        r0 = round((grid.transform[5] - ft.f) / ft.e)
        c0 = round((grid.transform[2] - ft.c) / ft.a)
        full = np.full((h, w), 255, dtype=np.uint8)
        vals = np.full((6, h, w), -9999, dtype=np.int64)
        # paste the file into the grid (file may be larger or smaller than the grid)
        rs, cs = max(r0, 0), max(c0, 0)
        re_, ce = min(r0 + h, fm.shape[0]), min(c0 + w, fm.shape[1])
        dst = (slice(rs - r0, re_ - r0), slice(cs - c0, ce - c0))
        full[dst] = fm[rs:re_, cs:ce]
        for i, b in enumerate(_assets_of(it)):
            with rasterio.open(it["assets"][b]["href"]) as ds:
                vals[i][dst] = ds.read(1)[rs:re_, cs:ce]
        ok = full != 255
        for bit in masked_bits:
            ok &= ((full >> bit) & 1) == 0
        if high_aerosol:
            ok &= (full >> 6) != 3
        ok &= np.all(vals != -9999, axis=0)
        sums += np.where(ok, vals, 0)
        count += ok
    out = np.full((7, h, w), -9999.0)
    has = count >= min_obs
    out[:6][:, has] = sums[:, has] / count[has]
    out[6] = count
    return out


CASES = [  # (options, masked bits, high aerosol, min_observations)
    ({}, (1, 2, 3), False, 1),
    ({"mask_snow": True}, (1, 2, 3, 4), False, 1),
    ({"mask_water": True, "mask_high_aerosol": True}, (1, 2, 3, 5), True, 2),
    ({"mask_snow": True, "mask_water": True, "mask_high_aerosol": True}, (1, 2, 3, 4, 5), True, 3),
]


@pytest.mark.parametrize("opts,bits,aerosol,min_obs", CASES)
def test_matches_numpy_reference_on_two_overlapping_tiles(world, tmp_path, opts, bits, aerosol, min_obs):
    res = build_composites(items_json=world["items_json"], aoi=world["aoi"],
                           season={"start": "2021-06-01", "end": "2021-09-30"}, output_dir=str(tmp_path),
                           options=CompositeOptions(min_observations=min_obs, chunk_size=256, **opts), threads=2)
    assert sorted(res.tiles) == ["10TEK", "10TFK"]
    groups = group_by_tile(world["items"])
    for tile, t in res.tiles.items():
        grid = Grid.from_dict(t.grid)
        assert grid == tile_grid(tile, world["aoi"])
        assert t.path == str(tmp_path / "composites" / tile / "2021-06-01_2021-09-30.tif")
        with rasterio.open(t.path) as ds:
            got = ds.read()
            assert ds.dtypes[0] == "int16" and ds.nodata == -9999  # means rounded to whole HLS units
            assert Grid.from_raster(t.path) == grid
        ref = reference(groups[tile], grid, bits, aerosol, min_obs)
        np.testing.assert_array_equal(got[6], ref[6])  # count: exact
        assert np.all((got[:6] == -9999) == (ref[:6] == -9999))
        assert np.max(np.abs(got[:6].astype(np.float64) - ref[:6])) <= 0.5
        assert 0 < t.valid_obs["pixels_with_data"] < grid.width * grid.height or min_obs == 1
        assert t.valid_obs["max"] == int(ref[6].max())
    # the two tiles composite the same pixels of the overlap from different files: both are checked above,
    # and each tile's grid is its own tile's lattice
    assert res.tiles["10TEK"].grid["tile"] == "10TEK"


def test_tags_sidecar_and_rerun_skip(world, tmp_path):
    kw = dict(items_json=world["items_json"], aoi=world["aoi"], season={"start": "2021-06-01", "end": "2021-09-30"},
              output_dir=str(tmp_path), options=CompositeOptions(chunk_size=256), threads=2, tiles=["10TEK"])
    first = build_composites(**kw).tiles["10TEK"]
    assert first.reused is False
    with rasterio.open(first.path) as ds:
        tags = ds.tags()
        assert tags["MGRS_TILE"] == "10TEK" and tags["COLLECTION"] == "HLSL30_2.0"
        assert json.loads(tags["SCENE_IDS"]) == first.scenes_used
        assert tags["MASKED_BITS"] == "1:cloud,2:adjacent,3:shadow"
        assert tags["SCALE_FACTOR"] == "0.0001" and "SOFTWARE_VERSION" in tags
        assert ds.descriptions == ("B02", "B03", "B04", "B05", "B06", "B07", "count")
        assert [ds.tags(i)["BAND_NAME"] for i in range(1, 7)] == ["Blue", "Green", "Red", "NIR_Narrow", "SWIR1",
                                                                  "SWIR2"]
        assert ds.tags(4)["COMMON_NAME"] == "NIR_NARROW" and ds.tags(4)["SOURCE_ASSETS"] == "HLSL30_2.0:B05"
        assert [ds.tags(i)["WAVELENGTH_UM"] for i in range(1, 7)] == ["0.49", "0.56", "0.665", "0.864", "1.61", "2.2"]
        assert ds.scales[:6] == (0.0001,) * 6
        assert ds.profile["blockxsize"] == 256 and ds.profile["compress"] == "zstd"
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert ds.overviews(1) == [2] and max(ds.width, ds.height) > 256
        full = ds.read()
    with rasterio.open(first.path, overview_level=0) as ov:  # built while the windows ran, not by GDAL
        np.testing.assert_array_equal(ov.read(), _overview_reference(full, 2))
    side = json.loads(Path(first.sidecar).read_text())
    assert side["scenes_used"] == first.scenes_used and side["grid"] == first.grid
    mtime = os.stat(first.path).st_mtime_ns
    again = build_composites(**kw).tiles["10TEK"]
    assert again.reused is True and os.stat(first.path).st_mtime_ns == mtime
    changed = build_composites(**{**kw, "options": CompositeOptions(chunk_size=256, mask_snow=True)}).tiles["10TEK"]
    assert changed.reused is False and os.stat(first.path).st_mtime_ns != mtime
    assert not [p for p in Path(first.path).parent.iterdir() if ".tmp-" in p.name]


def _overview_reference(full: np.ndarray, f: int) -> np.ndarray:
    """Per band, the mean of the non-nodata pixels of each f x f cell (edge cells: what exists), rounded
    half to even; -9999 where a cell has none. float64 with NaN for nodata, no engine code."""
    b, h, w = full.shape
    x = np.full((b, -(-h // f) * f, -(-w // f) * f), np.nan)
    x[:, :h, :w] = np.where(full == -9999, np.nan, full)
    cells = x.reshape(b, x.shape[1] // f, f, x.shape[2] // f, f).transpose(0, 1, 3, 2, 4).reshape(
        b, x.shape[1] // f, x.shape[2] // f, f * f)
    n = np.isfinite(cells).sum(axis=-1)
    mean = np.nansum(cells, axis=-1) / np.maximum(n, 1)
    return np.where(n > 0, np.rint(mean), -9999).astype(np.int16)


@pytest.mark.parametrize("levels", [1, 2, 3])
def test_overview_levels_equal_cell_means(levels):
    from compositing.output import overview_levels

    rng = np.random.default_rng(levels)
    vals = rng.integers(-100, 16000, size=(2, 37, 29)).astype(np.int16)  # odd sizes: partial edge cells
    vals[:, rng.random((37, 29)) < 0.4] = -9999
    vals[:, :8, :8] = -9999  # a cell with no valid pixel at every level
    got = overview_levels(vals, levels, -9999)
    assert [g.shape for g in got] == [(2, -(-37 // 2 ** k), -(-29 // 2 ** k)) for k in range(1, levels + 1)]
    for k, g in enumerate(got, start=1):
        np.testing.assert_array_equal(g, _overview_reference(vals, 2 ** k))


def test_corrupt_asset_is_skipped_with_reason_or_fails(world, tmp_path):
    items = [json.loads(json.dumps(it)) for it in world["items"] if "T10TEK" in it["id"]]
    bad = items[1]
    src = Path(bad["assets"]["B04"]["href"])
    cog = tmp_path / ("cog-" + src.name)
    rasterio.shutil.copy(src, cog, driver="COG", BLOCKSIZE=256, COMPRESS="DEFLATE", OVERVIEWS="NONE")
    trunc = tmp_path / src.name
    trunc.write_bytes(cog.read_bytes()[: cog.stat().st_size // 2])  # COG: headers first, so it still opens
    with rasterio.open(trunc) as ds:  # the failure happens when blocks are read, not on open
        assert ds.width > 256
    bad["assets"]["B04"]["href"] = str(trunc)
    missing = items[3]
    missing["assets"]["B06"]["href"] = str(tmp_path / "does-not-exist.B06.tif")
    season = {"start": "2021-06-01", "end": "2021-09-30"}
    t = composite_tile(tile="10TEK", items=items, aoi=world["aoi"], season=season, output_dir=str(tmp_path / "o"),
                       options=CompositeOptions(chunk_size=256), threads=2)
    skipped = {s["id"]: s for s in t.scenes_skipped}
    assert set(skipped) == {bad["id"], missing["id"]}
    assert skipped[bad["id"]]["asset"] == "B04" and "cannot read window" in skipped[bad["id"]]["reason"]
    assert skipped[missing["id"]]["asset"] == "B06" and "cannot open" in skipped[missing["id"]]["reason"]
    assert bad["id"] not in t.scenes_used and len(t.scenes_used) == len(items) - 2
    # the result equals a composite of the good scenes only (a failing scene is removed from every chunk)
    good = [it for it in items if it["id"] not in skipped]
    with rasterio.open(t.path) as ds:
        np.testing.assert_array_equal(ds.read(7), reference(good, Grid.from_dict(t.grid), (1, 2, 3), False, 1)[6])
        full = ds.read()
    with rasterio.open(t.path, overview_level=0) as ov:  # recomputed windows: their overviews too
        np.testing.assert_array_equal(ov.read(), _overview_reference(full, 2))
    with pytest.raises(CompositeError, match=r"tile 10TEK: .*does-not-exist"):
        composite_tile(tile="10TEK", items=[items[0], missing], aoi=world["aoi"], season=season, output_dir=str(tmp_path / "f"),
                       options=CompositeOptions(on_read_error="fail", chunk_size=256), threads=2)
    with pytest.raises(CompositeError, match=rf"10TEK.*{trunc.name}"):
        composite_tile(tile="10TEK", items=[bad], aoi=world["aoi"], season=season, output_dir=str(tmp_path / "g"),
                       options=CompositeOptions(on_read_error="fail", chunk_size=256), threads=2)
    with pytest.raises(CompositeError, match="tile 10TEK: no readable scene"):
        composite_tile(tile="10TEK", items=[bad, missing], aoi=world["aoi"], season=season,
                       output_dir=str(tmp_path / "h"), options=CompositeOptions(chunk_size=256), threads=2)


def test_scene_on_another_grid_or_crs_is_skipped_and_recorded(world, tmp_path):
    """One odd scene costs that scene, not the tile (on_read_error='skip'); 'fail' names it."""
    items = [json.loads(json.dumps(it)) for it in world["items"] if "T10TEK" in it["id"]]
    fk_href = next(it for it in world["items"] if "T10TFK" in it["id"])["assets"]["Fmask"]["href"]
    items[1]["assets"]["Fmask"]["href"] = fk_href  # same zone, but a file of another scene grid window
    wrong = mgrs_tile_grid("11TKE").clip((200_000, 4_440_000, 203_000, 4_443_000))
    other = write_scene(tmp_path / "z11", "HLS.L30.T10TEK.2021190T184447.v2.0", wrong,
                        {b: np.zeros(wrong.shape, np.int16) for b in BANDS}, np.zeros(wrong.shape, np.uint8),
                        "2021-06-10T18:44:47Z", 0)  # a scene of tile 10TEK written in zone 11
    kw = dict(tile="10TEK", aoi=world["aoi"], season="2021-06-01/2021-09-30", threads=1)
    t = composite_tile(items=[*items, other], output_dir=str(tmp_path / "o"),
                       options=CompositeOptions(chunk_size=256), **kw)
    skipped = {s["id"]: s for s in t.scenes_skipped}
    assert set(skipped) == {items[1]["id"], other["id"]}
    assert "different grid than the scene's other assets" in skipped[items[1]["id"]]["reason"]
    assert skipped[other["id"]]["asset"] == "B02"
    assert "CRS EPSG:32611 is not the tile's EPSG:32610" in skipped[other["id"]]["reason"]
    good = [it for i, it in enumerate(items) if i != 1]
    with rasterio.open(t.path) as ds:
        np.testing.assert_array_equal(ds.read(7), reference(good, Grid.from_dict(t.grid), (1, 2, 3), False, 1)[6])
    side = json.loads(Path(t.sidecar).read_text())
    assert {s["id"] for s in side["scenes_skipped"]} == set(skipped)
    with pytest.raises(CompositeError, match=r"tile 10TEK: scene .* EPSG:32611 is not the tile's EPSG:32610"):
        composite_tile(items=[items[0], other], output_dir=str(tmp_path / "f"),
                       options=CompositeOptions(chunk_size=256, on_read_error="fail"), **kw)
    with pytest.raises(CompositeError, match="no readable scene.*EPSG:32611"):
        composite_tile(items=[other], output_dir=str(tmp_path / "g"), options=CompositeOptions(chunk_size=256), **kw)


WINDOW_CASES = [  # (clear blocks pattern, r0, c0, shape, expected windows)
    ("all clear", 0, 0, (512, 512), [(0, 0, 512, 512)]),
    ("none clear", 0, 0, (512, 512), []),
    ("one block", 0, 0, (512, 512), [(256, 256, 256, 256)]),
    ("unaligned start", 100, 200, (300, 300), [(0, 56, 156, 244)]),
]


@pytest.mark.parametrize("name,r0,c0,shape,expected", WINDOW_CASES)
def test_band_windows_read_only_blocks_with_clear_pixels(name, r0, c0, shape, expected):
    clear = np.zeros(shape, bool)
    if name == "all clear":
        clear[:] = True
    elif name == "one block":
        clear[300, 300] = True
    elif name == "unaligned start":
        clear[10, 100] = True  # file row 110, col 300: block row 0, block col 1 -> cols 56.. of the window
    assert _band_windows(clear, r0, c0, 256) == expected


def test_chunk_windows_align_to_the_tile_lattice():
    grid = mgrs_tile_grid("10TEK").window_bounds(1000, 2000, 700, 600)
    wins = chunk_windows(grid, 512)
    assert wins[0] == (0, 0, 24, 48)  # 1000 -> 1024 and 2000 -> 2048 are the first lattice edges
    assert sum(h * w for _, _, h, w in wins) == 700 * 600
    with pytest.raises(ValueError, match="multiple of 256"):
        chunk_windows(grid, 300)


def test_dask_cluster_gives_the_same_composite(world, tmp_path):
    """Chunks on a Dask LocalCluster (worker processes: the reader and scenes are pickled) == local threads."""
    from distributed import LocalCluster

    kw = dict(items_json=world["items_json"], aoi=world["aoi"], season={"start": "2021-06-01", "end": "2021-09-30"},
              options=CompositeOptions(chunk_size=256), tiles=["10TFK"])
    local = build_composites(output_dir=str(tmp_path / "local"), threads=2, **kw).tiles["10TFK"]
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None) as cluster:
        remote = build_composites(output_dir=str(tmp_path / "dask"), dask_address=cluster.scheduler_address,
                                  **kw).tiles["10TFK"]
    assert remote.scenes_used == local.scenes_used and remote.grid == local.grid
    with rasterio.open(local.path) as a, rasterio.open(remote.path) as b:
        np.testing.assert_array_equal(a.read(), b.read())


class CountingFakeReader:
    """In-memory AssetReader: arrays keyed by href; records every band read (no files, no GDAL)."""

    def __init__(self, arrays: dict[str, np.ndarray], grid: Grid) -> None:
        self.arrays, self.grid, self.reads = arrays, grid, []

    def info(self, href):
        from compositing.reader import RasterInfo

        a = self.arrays[href]
        return RasterInfo(self.grid.epsg, self.grid.transform, a.shape[1], a.shape[0], str(a.dtype), None)

    def read(self, href, window, out=None):
        r, c, h, w = window
        self.reads.append((href, window))
        return self.arrays[href][r:r + h, c:c + w].copy()


def test_band_blocks_under_cloud_or_fill_are_not_read(tmp_path):
    from compositing.composite import prepare_scenes
    from compositing.fmask import FmaskRule
    from compositing.kernel import composite_window
    from compositing.reader import AssetReader

    grid = mgrs_tile_grid("10TEK").window_bounds(0, 0, 512, 512)
    fm = np.full((512, 512), 2, np.uint8)  # all cloud ...
    fm[300, 400] = 0  # ... but one clear pixel, in block (1, 1)
    arrays = {"s.Fmask": fm, **{f"s.{b}": np.full((512, 512), 100 + i, np.int16) for i, b in enumerate(BANDS)},
              "t.Fmask": np.full((512, 512), 255, np.uint8)}  # a scene that is all fill
    arrays.update({f"t.{b}": np.zeros((512, 512), np.int16) for b in BANDS})
    items = [{"id": f"HLS.L30.T10TEK.2021160T18444{k}.v2.0", "assets": {a: {"href": f"{p}.{a}"} for a in (*BANDS, "Fmask")}}
             for k, p in enumerate("st")]
    reader = CountingFakeReader(arrays, grid)
    assert isinstance(reader, AssetReader)
    sources, skipped = prepare_scenes(reader, items, grid, fail_fast=True)
    reader.reads.clear()
    res = composite_window(reader, sources, (0, 0, 512, 512), FmaskRule())
    band_reads = [(h, w) for h, w in reader.reads if not h.endswith("Fmask")]
    assert band_reads == [(f"s.{b}", (256, 256, 256, 256)) for b in BANDS]  # one block per band, scene t none
    assert res.data[6].sum() == 1 and res.data[6][300, 400] == 1
    assert [res.data[i][300, 400] for i in range(6)] == [100.0 + i for i in range(6)]
    assert res.data[0][0, 0] == -9999 and res.used == [s.id for s in sources]


@pytest.mark.parametrize("crs,expected", [
    ("hls:32610", 32610), ("hls:32619", 32619), ("EPSG:32606", 32606), ("EPSG:32706", 32706),
    ("EPSG:3857", 3857), ("EPSG:4326", 4326),
])
def test_file_crs_identification(crs, expected):
    """HLS's authority-less UTM WKT (fast path) and authority CRSs (general path) give the right EPSG."""
    from pyproj import CRS

    from compositing.reader import _epsg_of_wkt
    from sampleworld.synthetic.scenes import hls_wkt

    wkt = hls_wkt(int(crs[4:])) if crs.startswith("hls:") else CRS.from_user_input(crs).to_wkt()
    assert _epsg_of_wkt(wkt) == expected


@pytest.mark.parametrize("sums,count,min_obs,expected", [
    ([7, -3, 0, 5 * 16000 + 3], [3, 2, 0, 5], 1, [2, -2, -9999, 16001]),  # 2.33, -1.5 (tie: even), 16000.6
    ([7, -3, 0, 5], [3, 2, 0, 1], 2, [2, -2, -9999, -9999]),
    ([5, 7, -5, -7], [2, 2, 2, 2], 1, [2, 4, -2, -4]),  # ties to even
    ([600 * 32767, -600 * 32768, 2 * 32767 - 1, 3], [600, 600, 2, 1], 1, [32767, -32768, 32766, 3]),
    ([1_000_001, -1_000_001, 0, 0], [2000, 2000, 1, 1], 1, [500, -500, 0, 0]),  # 500.0005: not a tie
])
def test_finalize_table(sums, count, min_obs, expected):
    """Means are rounded to the nearest integer (ties to even): at most 0.5 HLS units from the exact mean."""
    from compositing.kernel import finalize

    s = np.array(sums, np.int32).reshape(1, 1, 4).repeat(6, 0)
    out = finalize(s, np.array([count], np.uint16), min_obs)
    assert out.dtype == np.int16
    np.testing.assert_array_equal(out[0, 0], np.array(expected, np.int16))
    np.testing.assert_array_equal(out[6, 0], count)


def test_tile_writer_overviews_with_windows_out_of_order_and_rewritten(tmp_path):
    """Overviews are computed while windows arrive in any order; a window written again (a recomputed
    window) has its rows' overviews recomputed; the COG's overviews equal the cell means of its pixels."""
    from compositing.output import TileWriter

    grid = mgrs_tile_grid("10TEK").window_bounds(100, 40, 700, 600)
    wins = chunk_windows(grid, 256)
    rng = np.random.default_rng(3)
    first = rng.integers(-100, 9000, size=(7, 700, 600)).astype(np.int16)
    first[:6, rng.random((700, 600)) < 0.2] = -9999
    final = first.copy()
    redo = [wins[0], wins[len(wins) // 2]]
    for r, c, h, w in redo:
        final[:, r:r + h, c:c + w] = rng.integers(0, 50, size=(7, h, w))
    writer = TileWriter(tmp_path / "s.tif", grid, 7, -9999)
    try:
        for i in rng.permutation(len(wins)):
            r, c, h, w = wins[i]
            writer.write(wins[i], first[:, r:r + h, c:c + w])
        assert writer.next_row == 700  # every overview row was computed before the end
        writer.invalidate(redo)
        assert writer.next_row == 0
        for r, c, h, w in reversed(redo):
            writer.write((r, c, h, w), final[:, r:r + h, c:c + w])
        writer.to_cog(tmp_path / "out.tif")
    finally:
        writer.remove()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tif"]
    with rasterio.open(tmp_path / "out.tif") as ds:
        assert ds.overviews(1) == [2, 4] and ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        np.testing.assert_array_equal(ds.read(), final)
    for level, f in enumerate((2, 4)):
        with rasterio.open(tmp_path / "out.tif", overview_level=level) as ov:
            np.testing.assert_array_equal(ov.read(), _overview_reference(final, f))
