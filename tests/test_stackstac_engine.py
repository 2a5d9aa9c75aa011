"""The stackstac composite engine (``engine="stackstac"``) against the kernel engine and the NumPy reference.

Scenes: test_composite's two overlapping tiles (every Fmask case, nodata swaths in all bands and in one
band, an Fmask fill stripe, an all-cloud scene, a file covering only part of the grid), the small sample
world, a truncated file, and the same scenes served over loopback HTTP.
"""

from __future__ import annotations

import json
import pickle
import shutil
import threading
from dataclasses import replace
from http.server import ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from test_composite import CASES, reference, world  # noqa: F401 - world is a fixture

from compositing.composite import CompositeError, build_composites, composite_tile, group_by_tile
from compositing.contracts import CompositeOptions, TileComposite
from core.grid import Grid
from sampleworld.synthetic.granules import RangeFileHandler

pytestmark = pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")  # stackstac's affine use
SEASON = {"start": "2021-06-01", "end": "2021-09-30"}
TOLERANCE = 0.5  # HLS units, on the six means; the count is exact
SS256 = CompositeOptions(chunk_size=256, engine="stackstac")


def _read(path: str) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read()


def assert_same_composite(a: TileComposite, b: TileComposite) -> None:
    """Two composite_tile results: same grid, scenes, statistics, COG profile and tags, count exact, the same
    nodata pixels, means within TOLERANCE."""
    assert a.grid == b.grid and a.scenes_used == b.scenes_used and a.valid_obs == b.valid_obs
    assert a.masked_bits == b.masked_bits and a.min_observations == b.min_observations
    with rasterio.open(a.path) as x, rasterio.open(b.path) as y:
        assert x.profile == y.profile and x.tags() == y.tags() and x.descriptions == y.descriptions
        assert [x.tags(i) for i in range(1, 8)] == [y.tags(i) for i in range(1, 8)]
        got, want = x.read(), y.read()
    np.testing.assert_array_equal(got[6], want[6])
    np.testing.assert_array_equal(got[:6] == -9999, want[:6] == -9999)
    assert np.max(np.abs(got[:6].astype(np.float64) - want[:6])) <= TOLERANCE


@pytest.mark.parametrize("tile,opts,bits,aerosol,min_obs", [("10TEK", *CASES[0]), ("10TFK", *CASES[3])])
def test_equals_kernel_and_reference_on_every_fmask_case(world, tmp_path, tile, opts, bits, aerosol,  # noqa: F811
                                                         min_obs):
    kw = dict(items_json=world["items_json"], aoi=world["aoi"], season=SEASON, threads=2, tiles=[tile])
    options = CompositeOptions(min_observations=min_obs, chunk_size=256, **opts)
    kernel = build_composites(output_dir=str(tmp_path / "kernel"), options=options, **kw)
    stack = build_composites(output_dir=str(tmp_path / "stackstac"), options=replace(options, engine="stackstac"),
                             **kw)
    assert type(stack) is type(kernel) and list(stack.tiles) == [tile]
    groups = group_by_tile(world["items"])
    for tile, t in stack.tiles.items():
        assert_same_composite(t, kernel.tiles[tile])
        ref = reference(groups[tile], Grid.from_dict(t.grid), bits, aerosol, min_obs)
        got = _read(t.path)
        np.testing.assert_array_equal(got[6], ref[6])
        assert np.max(np.abs(got[:6].astype(np.float64) - ref[:6])) <= TOLERANCE


def test_equals_kernel_on_the_small_world(small_world, tmp_path):
    w = small_world
    items = json.loads(Path(w["hls"]["items_json"]).read_text())["features"]
    tile = w["tiles"][0]
    mine = group_by_tile(items)[tile]
    kw = dict(tile=tile, items=mine, aoi=w["aoi"], season={"start": "2000-01-01", "end": "2100-01-01"}, threads=2)
    kernel = composite_tile(output_dir=str(tmp_path / "kernel"), options=CompositeOptions(chunk_size=256), **kw)
    stack = composite_tile(output_dir=str(tmp_path / "stackstac"), options=SS256, **kw)
    assert len(stack.scenes_used) == len(mine) > 1
    assert_same_composite(stack, kernel)
    assert stack.inputs_key != kernel.inputs_key  # one engine's COG is never reused for the other
    again = composite_tile(output_dir=str(tmp_path / "stackstac"), options=SS256, **kw)
    assert again.reused and again.path == stack.path
    other = composite_tile(output_dir=str(tmp_path / "stackstac"), options=CompositeOptions(chunk_size=256), **kw)
    assert not other.reused and other.inputs_key == kernel.inputs_key


def test_unknown_engine_is_a_clear_error():
    with pytest.raises(ValueError, match=r"engine must be one of \('kernel', 'stackstac'\), got 'odc'"):
        CompositeOptions(engine="odc")


def _copy_scenes(world: dict, root: Path) -> list[dict]:  # noqa: F811
    """The 10TFK items with their files copied under ``root`` (hrefs rewritten)."""
    items = json.loads(json.dumps(group_by_tile(world["items"])["10TFK"]))
    for it in items:
        for a in it["assets"].values():
            dst = root / Path(a["href"]).name
            shutil.copy(a["href"], dst)
            a["href"] = str(dst)
    return items


def test_unreadable_scene_is_skipped_like_the_kernel_or_fails(world, tmp_path):  # noqa: F811
    items = _copy_scenes(world, tmp_path)
    bad = Path(items[3]["assets"]["B04"]["href"])
    cog = tmp_path / "cog.tif"
    rasterio.shutil.copy(bad, cog, driver="COG", BLOCKSIZE=256, COMPRESS="DEFLATE", OVERVIEWS="NONE")
    bad.write_bytes(cog.read_bytes()[: cog.stat().st_size // 2])  # COG: headers first, so it still opens
    kw = dict(tile="10TFK", items=items, aoi=world["aoi"], season=SEASON, threads=2)
    kernel = composite_tile(output_dir=str(tmp_path / "kernel"), options=CompositeOptions(chunk_size=256), **kw)
    stack = composite_tile(output_dir=str(tmp_path / "stackstac"), options=SS256, **kw)
    skipped = [s for s in stack.scenes_skipped if s["id"] == items[3]["id"]]
    assert len(skipped) == 1 and skipped[0]["asset"] == "B04" and skipped[0]["reason"]
    assert [s["id"] for s in kernel.scenes_skipped] == [items[3]["id"]]
    assert_same_composite(stack, kernel)
    with pytest.raises(CompositeError, match=rf"scene {items[3]['id']} asset B04 .*on_read_error='fail'\)$"):
        composite_tile(output_dir=str(tmp_path / "fail"), options=replace(SS256, on_read_error="fail"), **kw)


def test_http_hrefs_give_the_same_composite(world, tmp_path):  # noqa: F811
    """Assets over loopback HTTP (``vrt:///vsicurl/...`` views; one href carries a query string, so stackstac
    reads that file itself through its WarpedVRT): same composite as the local files."""
    items = _copy_scenes(world, tmp_path)
    server = ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: RangeFileHandler(*a, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        remote = json.loads(json.dumps(items))
        for it in remote:
            for a in it["assets"].values():
                a["href"] = f"http://127.0.0.1:{server.server_port}/{Path(a['href']).name}"
        remote[1]["assets"]["Fmask"]["href"] += "?v=2"
        kw = dict(tile="10TFK", aoi=world["aoi"], season=SEASON, threads=2,
                  options=CompositeOptions(chunk_size=512, engine="stackstac"))
        local = composite_tile(items=items, output_dir=str(tmp_path / "local"), **kw)
        http = composite_tile(items=remote, output_dir=str(tmp_path / "http"), **kw)
    finally:
        server.shutdown()
    assert http.scenes_used == local.scenes_used and not http.scenes_skipped and len(local.scenes_used) == 6
    np.testing.assert_array_equal(_read(http.path), _read(local.path))


def test_earthdata_settings_are_applied_where_read_and_never_pickled(monkeypatch):
    """The layered env carries only the href; the settings (core.earthdata.gdal_options, tested with the
    emulator in test_earthdata_reads) are computed in the reading process and never enter the pickle."""
    from compositing import stackstac_engine
    from compositing.stackstac_engine import gdal_env

    href = "https://data.lpdaac.earthdatacloud.nasa.gov/lp-prod-protected/HLSL30.020/x/x.B04.tif"
    calls = []

    def fake_options(url: str, *, for_read: bool = False) -> dict:
        calls.append((url, for_read))
        return {"GDAL_HTTP_HEADERS": "Authorization: Bearer secret-token-123"}

    monkeypatch.setattr(stackstac_engine, "gdal_options", fake_options)
    env = gdal_env(remote=href, gdal_cache_mb=32)
    blob = pickle.dumps(env)
    assert b"secret-token-123" not in blob and not calls
    again = pickle.loads(blob)
    read_opts = again.read.options
    assert read_opts["GDAL_CACHEMAX"] == 32 * 1024 * 1024 and "secret-token-123" in read_opts["GDAL_HTTP_HEADERS"]
    assert (href, True) in calls
    assert again.open.options["GDAL_DISABLE_READDIR_ON_OPEN"] == "EMPTY_DIR"
    local = pickle.loads(pickle.dumps(gdal_env(remote=None, gdal_cache_mb=32)))
    assert "GDAL_HTTP_HEADERS" not in local.read.options


def test_flow_parameters_select_the_engine(world):  # noqa: F811
    from pydantic import ValidationError

    from flows.params import BiomassPipelineParams, HlsCompositeParams, HlsOptions

    assert HlsOptions().engine == "kernel"
    p = HlsCompositeParams(aoi=world["aoi"], year=2021, output_dir="out", engine="stackstac")
    assert p.engine == "stackstac" and p.model_dump(mode="json")["engine"] == "stackstac"
    pipeline = BiomassPipelineParams.model_validate({"aoi": world["aoi"], "year": 2021, "output_dir": "out",
                                                      "hls": {"engine": "stackstac"}})
    again = HlsCompositeParams(aoi=world["aoi"], year=2021, output_dir="out", **pipeline.hls.model_dump())
    assert again.composite_options() == CompositeOptions(engine="stackstac")
    with pytest.raises(ValidationError, match="engine"):
        HlsOptions(engine="odc")

