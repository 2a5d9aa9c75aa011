"""Concurrent reads of remote scenes (compositing.fetch): reads overlap, and the composite is bit-identical
to the sequential path, failures included; through the Earthdata emulator with link latency, several
requests are in flight at once and the COG equals the local composite."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
import rasterio

from compositing.fmask import FmaskRule
from compositing.kernel import BANDS, SceneSource, composite_window
from compositing.reader import AssetReadError, RasterInfo

H = W = 1024


class SlowReader:
    """In-memory AssetReader whose every read waits ``latency_s`` (a round trip); counts reads in flight
    and the pixels read per href; ``fail`` maps an href to the exception its reads raise."""

    def __init__(self, arrays: dict[str, np.ndarray], latency_s: float = 0.01,
                 fail: dict[str, BaseException] | None = None) -> None:
        self.arrays, self.latency_s, self.fail = arrays, latency_s, fail or {}
        self.lock = threading.Lock()
        self.in_flight = self.peak = 0
        self.pixels: dict[str, int] = {}

    def info(self, href: str) -> RasterInfo:
        a = self.arrays[href]
        return RasterInfo(32610, (30.0, 0.0, 0.0, 0.0, -30.0, 0.0), a.shape[1], a.shape[0], str(a.dtype), None)

    def read(self, href: str, window: tuple[int, int, int, int], out: np.ndarray | None = None) -> np.ndarray:
        r, c, h, w = window
        with self.lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            self.pixels[href] = self.pixels.get(href, 0) + h * w
        try:
            time.sleep(self.latency_s)
            if href in self.fail:
                raise self.fail[href]
            arr = self.arrays[href][r:r + h, c:c + w]
            if out is not None:
                out[...] = arr
                return out
            return arr.copy()
        finally:
            with self.lock:
                self.in_flight -= 1


def scenes_and_arrays(n: int, seed: int = 0) -> tuple[list[SceneSource], dict[str, np.ndarray]]:
    """``n`` scenes: clouds in blobs of 256-px blocks (some all clear, some all cloud), fill and nodata
    pixels, one scene offset so that it covers part of the window only."""
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {}
    scenes = []
    for k in range(n):
        cloudy_blocks = rng.random((4, 4)) < [0.0, 0.3, 0.7, 1.0][k % 4]
        fm = np.where(np.kron(cloudy_blocks, np.ones((256, 256), bool)), 2, 0).astype(np.uint8)
        fm[rng.random((H, W)) < 0.05] = 2  # scattered cloud everywhere
        fm[:, :17 * k % 200] = 255  # a fill swath
        hrefs = {"Fmask": f"https://data.example/s{k}.Fmask.tif"}
        arrays[hrefs["Fmask"]] = fm
        for b in BANDS:
            hrefs[b] = f"https://data.example/s{k}.{b}.tif"
            band = rng.integers(0, 10_000, (H, W)).astype(np.int16)
            band[rng.random((H, W)) < 0.01] = -9999
            arrays[hrefs[b]] = band
        row_off = -300 if k == 1 else 0  # the window starts 300 rows above this file
        scenes.append(SceneSource(f"scene-{k}", hrefs, row_off, 0, H, W))
    return scenes, arrays


@pytest.mark.parametrize("prefetch", [1, 3, 8])
def test_concurrent_reads_overlap_and_give_the_same_composite(prefetch: int) -> None:
    scenes, arrays = scenes_and_arrays(7)
    seq_reader = SlowReader(arrays)
    seq = composite_window(seq_reader, scenes, (0, 0, H, W), FmaskRule(), min_observations=2)
    assert seq_reader.peak == 1
    reader = SlowReader(arrays)
    with ThreadPoolExecutor(16) as pool:
        con = composite_window(reader, scenes, (0, 0, H, W), FmaskRule(), min_observations=2, io=pool,
                               prefetch=prefetch)
    assert con.data.dtype == np.int16 and np.array_equal(con.data, seq.data)
    assert con.used == seq.used and con.failures == seq.failures == []
    assert reader.pixels == seq_reader.pixels  # the same blocks are read, no more
    assert reader.peak >= 6, reader.peak  # at least a scene's six band reads at once
    assert reader.in_flight == 0


@pytest.mark.parametrize("fail_fast", [False, True])
def test_a_failing_scene_is_left_out_of_the_window_as_in_the_sequential_path(fail_fast: bool) -> None:
    scenes, arrays = scenes_and_arrays(5, seed=1)
    bad = {scenes[2].hrefs["B05"]: AssetReadError(scenes[2].hrefs["B05"], "cannot read: TIFFReadEncodedTile"),
           scenes[4].hrefs["Fmask"]: AssetReadError(scenes[4].hrefs["Fmask"], "cannot open: not a TIFF")}
    results = []
    with ThreadPoolExecutor(16) as pool:
        for io in (None, pool):
            reader = SlowReader(arrays, fail=bad)
            if fail_fast:
                with pytest.raises(AssetReadError):
                    composite_window(reader, scenes, (0, 0, H, W), FmaskRule(), fail_fast=True, io=io)
            else:
                results.append(composite_window(reader, scenes, (0, 0, H, W), FmaskRule(), io=io))
            assert reader.in_flight == 0  # nothing still reading once the window has returned
    if not fail_fast:
        seq, con = results
        assert np.array_equal(con.data, seq.data) and con.used == seq.used
        assert sorted(f["id"] for f in con.failures) == sorted(f["id"] for f in seq.failures) == ["scene-2", "scene-4"]
        assert {(f["id"], f["asset"]) for f in con.failures} == {("scene-2", "B05"), ("scene-4", "Fmask")}


def test_an_endpoint_down_propagates_and_stops_the_window() -> None:
    from core.reads import EndpointDownError

    scenes, arrays = scenes_and_arrays(6, seed=2)
    down = EndpointDownError("data endpoint down", url="https://data.example/x", host="data.example:443")
    reader = SlowReader(arrays, fail={scenes[0].hrefs["B02"]: down})
    with ThreadPoolExecutor(16) as pool, pytest.raises(EndpointDownError):
        composite_window(reader, scenes, (0, 0, H, W), FmaskRule(), io=pool, prefetch=2)
    assert reader.in_flight == 0


# ----------------------------------------------------------------------------------- through the emulator
def files_in_flight_peak(records: list[dict[str, Any]]) -> int:
    """Most distinct files being read at the same moment (a record's ``t`` is its end, ``duration_s``
    long). GDAL's own parallel ranges of one read are one file: a sequential reader peaks at 1."""
    events = sorted([(r["t"] - r["duration_s"], 1, r["path"]) for r in records] +
                    [(r["t"], -1, r["path"]) for r in records], key=lambda e: (e[0], e[1]))
    open_: dict[str, int] = {}
    peak = 0
    for _, d, path in events:
        open_[path] = open_.get(path, 0) + d
        if not open_[path]:
            del open_[path]
        peak = max(peak, len(open_))
    return peak


@pytest.mark.allow_hosts(["127.0.0.1", "127.0.0.2", "127.0.0.3"])
def test_remote_composite_reads_concurrently_and_equals_the_local_one(small_world, world_dir, items, tmp_path) -> None:
    from compositing.composite import composite_tile
    from core.earthdata import close_gdal_files
    from sampleworld.emulator.config import LinkShape
    from sampleworld.serve import patched_env, rewrite_hrefs, serve_world

    tile_items = [it for it in items if ".T10TEK." in it["id"]]
    kw = dict(tile="10TEK", aoi=small_world["aoi"], season=small_world["season"], threads=1)
    local = composite_tile(items=tile_items, output_dir=str(tmp_path / "local"), **kw)
    with serve_world(world_dir, mode="thread", link=LinkShape(latency_s=0.03)) as served, patched_env(served.env):
        remote = [rewrite_hrefs(it, served.emulator, world_dir) for it in tile_items]
        served.emulator.reset_stats()
        res = composite_tile(items=remote, output_dir=str(tmp_path / "remote"), **kw)
        assert served.emulator.wait_idle()
        pixels = [r for r in served.emulator.records("signed") if r["method"] == "GET" and r["status"] == 206
                  and not (r["range"] or "").startswith("bytes=0-")]  # not the header reads of the opens
    close_gdal_files()
    assert res.scenes_used == local.scenes_used and res.scenes_skipped == []
    with rasterio.open(local.path) as a, rasterio.open(res.path) as b:
        assert b.dtypes == a.dtypes and np.array_equal(a.read(), b.read())
    # one window thread, yet several files are read at once (a scene's bands, the next scenes)
    assert files_in_flight_peak(pixels) >= 4, files_in_flight_peak(pixels)
