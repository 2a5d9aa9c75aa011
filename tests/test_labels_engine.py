"""The labels engine end to end on synthetic L4A-layout granules: composites' grids, GeoParquet, label COGs,
re-runs, production versions, a loopback STAC search and HTTP range reads."""

from __future__ import annotations

import http.server
import json
import os
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import rasterio

from core.grid import Grid, mgrs_tile_grid
from labels import LabelsError, composite_grids, prefer_production_version, run_gedi_labels, search_granules
from labels.contracts import LabelOptions
from labels.filters import ShotFilters
from labels.reader import read_granule_shots
from sampleworld.synthetic.granules import RangeFileHandler, synthetic_beam, write_l4a_granule

AOI = [-122.45, 40.05, -122.35, 40.15]
SEASON = "2023-06-01_2023-09-30"
# 2023-06-09 05:14:30 UTC in GEDI delta_time
DT0 = (datetime(2023, 6, 9, 5, 14, 30) - datetime(2018, 1, 1)).total_seconds()
NAME = "GEDI04_A_2023160051430_O25001_02_T01234_02_004_{v}_V002.h5"


def _granule(folder: Path, version: str = "02", seed: int = 0, dt0: float = DT0) -> Path:
    rng = np.random.default_rng(seed)
    beams = {b: synthetic_beam(30000, (-122.5 + 0.01 * i, -122.3 + 0.01 * i), (39.95, 40.25), rng,
                               beam_index=i, delta_time0=dt0) for i, b in enumerate(("BEAM0000", "BEAM0101"))}
    beams["BEAM0110"] = synthetic_beam(2000, (-122.44, -122.40), (40.06, 40.10), rng, fill_frac=1.0, beam_index=6,
                                       delta_time0=dt0)
    return write_l4a_granule(folder / NAME.format(v=version), beams, seed=seed)


def _composite(path: Path, grid: Grid, season: str = SEASON) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", width=grid.width, height=grid.height, count=1, dtype="float32",
                       crs=grid.crs, transform=grid.affine, nodata=-9999.0) as ds:
        ds.write(np.zeros(grid.shape, np.float32), 1)
        ds.update_tags(MGRS_TILE=grid.tile, SEASON=season)
    return path


@pytest.fixture()
def setup(tmp_path: Path) -> dict:
    from pyproj import Transformer

    tile = mgrs_tile_grid("10TEK")
    t = Transformer.from_crs("EPSG:4326", tile.crs, always_xy=True)
    xs, ys = t.transform([AOI[0], AOI[2], AOI[0], AOI[2]], [AOI[1], AOI[1], AOI[3], AOI[3]])
    grid = tile.clip((min(xs), min(ys), max(xs), max(ys)))
    comp = _composite(tmp_path / "comp" / "composites" / "10TEK" / f"{SEASON}.tif", grid)
    return {"granule": _granule(tmp_path / "gedi"), "grid": grid, "composite": comp, "comp_dir": tmp_path / "comp",
            "out": tmp_path / "out"}


def test_label_raster_equals_independent_rasterization(setup: dict) -> None:
    res = run_gedi_labels(aoi=AOI, year=2023, granules=[str(setup["granule"])], composites=[str(setup["composite"])],
                          output_dir=str(setup["out"]))
    grid: Grid = setup["grid"]
    assert set(res.labels) == {"10TEK"} and res.all_nodata == {"10TEK": False}
    assert res.labels["10TEK"] == str(setup["out"] / "labels" / "10TEK" / f"{SEASON}.tif")
    gdf = gpd.read_parquet(res.shots)
    assert len(gdf) == res.n_shots == res.filter_counts["total"]["kept"] > 100
    assert set(gdf["beam"]) == {"BEAM0000", "BEAM0101"}  # BEAM0110 holds only fill shots
    assert {"shot_number", "time", "beam", "lon", "lat", "agbd", "agbd_se", "pft_class", "l4_quality_flag",
            "degrade_flag", "leaf_off_flag", "sensitivity", "granule"} <= set(gdf.columns)
    assert gdf["time"].min() >= datetime(2023, 6, 9, 5, 14, 30).astimezone() - timedelta(days=1)
    # independent reference: project with a fresh pyproj CRS object, then np.add.at
    from pyproj import CRS, Transformer

    x, y = Transformer.from_crs(CRS.from_epsg(4326), CRS.from_epsg(grid.epsg), always_xy=True).transform(
        gdf["lon"].to_numpy(), gdf["lat"].to_numpy())
    inv = ~grid.affine
    cols, rows = inv @ (np.asarray(x), np.asarray(y))
    cols, rows = np.floor(cols).astype(int), np.floor(rows).astype(int)
    ok = (cols >= 0) & (cols < grid.width) & (rows >= 0) & (rows < grid.height)
    s, n = np.zeros(grid.shape), np.zeros(grid.shape, int)
    np.add.at(s, (rows[ok], cols[ok]), gdf["agbd"].to_numpy()[ok].astype(np.float64))
    np.add.at(n, (rows[ok], cols[ok]), 1)
    ref = np.where(n > 0, (s / np.maximum(n, 1)).astype(np.float32), np.float32(-9999.0))
    with rasterio.open(res.labels["10TEK"]) as ds:
        assert Grid.from_raster(ds.name) == grid
        np.testing.assert_array_equal(ds.read(1), ref)
        np.testing.assert_array_equal(ds.read(2), n.astype(np.float32))
        assert json.loads(ds.tags()["GRANULE_IDS"]) == [setup["granule"].name[:-3]]
    assert res.label_stats["10TEK"]["n_labelled_pixels"] == int((n > 0).sum())


def test_composites_folder_and_season_from_tags(setup: dict) -> None:
    found = composite_grids(str(setup["comp_dir"]))
    assert [(g["tile"], g["season"]) for g in found] == [("10TEK", SEASON)]
    assert Grid.from_dict(found[0]["grid"]) == setup["grid"]
    # no year/season: the date window is the composites' SEASON tag
    seen: list[tuple[int, int]] = []  # the progress callback: once per granule read
    res = run_gedi_labels(aoi=AOI, granules=[str(setup["granule"])], composites=str(setup["comp_dir"]),
                          output_dir=str(setup["out"]), on_granule=lambda done, total: seen.append((done, total)))
    assert res.season == {"start": "2023-06-01", "end": "2023-09-30"} and res.n_shots > 0
    assert seen == [(1, 1)]


def test_rerun_reuses_outputs(setup: dict) -> None:
    kw = dict(aoi=AOI, year=2023, granules=[str(setup["granule"])], composites=[str(setup["composite"])],
              output_dir=str(setup["out"]))
    first = run_gedi_labels(**kw)
    stamps = {p: os.stat(p).st_mtime_ns for p in (first.shots, first.labels["10TEK"])}
    second = run_gedi_labels(**kw)
    assert second == first
    assert {p: os.stat(p).st_mtime_ns for p in stamps} == stamps
    third = run_gedi_labels(**kw, options=LabelOptions(min_sensitivity=0.95))  # other inputs: recomputed
    assert third.n_shots < first.n_shots and third.filter_counts["total"]["sensitivity"] > 0
    assert os.stat(first.labels["10TEK"]).st_mtime_ns != stamps[first.labels["10TEK"]]


def test_season_outside_granule_fails_and_keeps_the_earlier_labels(setup: dict) -> None:
    good = run_gedi_labels(aoi=AOI, season=SEASON, granules=[str(setup["granule"])], composites=[str(setup["composite"])],
                           output_dir=str(setup["out"]), options=LabelOptions(nodata=-1.0))
    with rasterio.open(good.labels["10TEK"]) as ds:
        assert ds.nodata == -1.0 and (ds.read(1) == -1.0).any() and (ds.read(2) > 0).any()
    before = Path(good.labels["10TEK"]).read_bytes()
    with pytest.raises(LabelsError, match=r"no GEDI shot was kept .*GEDI04_A_\d+.*outside_dates \d+"):
        run_gedi_labels(aoi=AOI, season={"start": "2023-07-01", "end": "2023-07-31"}, granules=[str(setup["granule"])],
                        composites=[str(setup["composite"])], output_dir=str(setup["out"]), options=LabelOptions(nodata=-1.0))
    assert Path(good.labels["10TEK"]).read_bytes() == before  # a failed run destroys nothing


def test_prefer_production_version_02(tmp_path: Path) -> None:
    v1, v2 = _granule(tmp_path, "01"), _granule(tmp_path, "02")
    kept, skipped = prefer_production_version([str(v1), str(v2), "elsewhere/not_gedi.h5"])
    assert kept == [str(v2), "elsewhere/not_gedi.h5"]
    assert skipped[0]["granule"] == v1.name[:-3] and "superseded by production version 02" in skipped[0]["reason"]
    copy = tmp_path / "copy" / v2.name
    copy.parent.mkdir()
    copy.write_bytes(v2.read_bytes())
    kept, skipped = prefer_production_version([str(v2), str(copy), str(v2)])
    assert kept == [str(v2)] and skipped == [{"granule": v2.name[:-3], "reason": f"duplicate of {v2}"}]


# ------------------------------------------------------------------ loopback STAC search
def test_search_granules_on_loopback_stac(setup: dict, tmp_path: Path) -> None:
    from sampleworld.stac import collection, feature_collection, gedi_item
    from sampleworld.stac_server import serve_stac

    world = tmp_path / "world"
    (world / "stac").mkdir(parents=True)
    other = _granule(tmp_path / "g2", version="02", seed=1)
    renamed = other.with_name(other.name.replace("2023160051430", "2023280051430").replace("O25001", "O26900"))
    other.rename(renamed)
    ring = [(-123.0, 39.0), (-122.0, 39.0), (-122.0, 41.0), (-123.0, 41.0), (-123.0, 39.0)]
    far = [(10.0, 0.0), (11.0, 0.0), (11.0, 1.0), (10.0, 1.0), (10.0, 0.0)]
    items = [gedi_item(setup["granule"].name, ring, datetime(2023, 6, 9, 5, 14, 30), datetime(2023, 6, 9, 6, 47),
                       str(setup["granule"]), "G1-TEST"),
             gedi_item(renamed.name, ring, datetime(2023, 10, 7, 5, 14, 30), datetime(2023, 10, 7, 6, 47),
                       str(renamed), "G2-TEST"),
             gedi_item("GEDI04_A_2023161051430_O25017_02_T01234_02_004_02_V002.h5", far,
                       datetime(2023, 6, 10, 5, 0), datetime(2023, 6, 10, 6, 0), "/nowhere/x.h5", "G3-TEST")]
    for name, doc in {
        "gedi_collection.json": collection("GEDI_L4A_AGB_Density_V2_1_2056_2.1", "GEDI", "t", [-180, -90, 180, 90],
                                           ["2019-04-18T00:00:00.000Z", None], "ORNL_CLOUD"),
        "hls_collection.json": collection("HLSL30_2.0", "HLS", "t", [-180, -90, 180, 90],
                                          ["2013-04-11T00:00:00.000Z", None], "LPCLOUD"),
        "gedi_items.json": feature_collection(items), "hls_items.json": feature_collection([]),
    }.items():
        (world / "stac" / name).write_text(json.dumps(doc))
    with serve_stac(str(world)) as url:
        hrefs = search_granules(aoi=AOI, season={"start": "2023-06-01", "end": "2023-09-30"}, stac_url=url,
                                output_dir=str(setup["out"]))
        assert hrefs == [str(setup["granule"])]  # the October one and the far one are not found
        assert (setup["out"] / "search" / "gedi_items.json").is_file()
        res = run_gedi_labels(aoi=AOI, year=2023, composites=[str(setup["composite"])], output_dir=str(setup["out"]), options=LabelOptions(stac_url=url))
    assert res.granules_used == [setup["granule"].name[:-3]] and res.n_shots > 0


# ------------------------------------------------------------------ HTTP range reads
class _RangeHandler(RangeFileHandler):
    """Range server that also redirects ``/redir/...`` (like Earthdata's signed URLs) and answers the first
    request of each ``/flaky/...`` path with 503."""

    ranges: list[str] = []
    hits: dict[str, int] = {}

    def do_GET(self) -> None:  # noqa: N802
        hits = type(self).hits
        hits[self.path] = hits.get(self.path, 0) + 1
        if self.path.startswith("/redir/"):  # like an Earthdata data URL redirecting to a signed URL
            self.send_response(302)
            self.send_header("Location", self.path.removeprefix("/redir") + "?signature=x")
            self.end_headers()
            return
        if self.path.startswith("/flaky/") and hits[self.path] == 1:
            self.send_error(503)
            return
        self.send_range(Path(self.translate_path(self.path.removeprefix("/flaky"))), self.headers.get("Range"))


@pytest.fixture()
def http_root(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "srv"
    root.mkdir()
    handler = lambda *a, **k: _RangeHandler(*a, directory=str(root), **k)  # noqa: E731
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}", root
    finally:
        srv.shutdown()
        srv.server_close()


def test_http_range_read_equals_local_read(setup: dict, http_root: tuple[str, Path]) -> None:
    import requests

    url, root = http_root
    rng = np.random.default_rng(5)
    beams = {b: synthetic_beam(200_000, (-123.5, -121.5), (39.0, 41.0), rng, beam_index=i, delta_time0=DT0)
             for i, b in enumerate(("BEAM0000", "BEAM0101"))}
    path = write_l4a_granule(root / NAME.format(v="02"), beams, filler=8)
    from shapely.geometry import box

    area = box(*AOI)
    local = read_granule_shots(str(path), area, ShotFilters())
    remote = read_granule_shots(f"{url}/{path.name}", area, ShotFilters(), session=requests.Session())
    assert remote.counts == local.counts and remote.counts["kept"] > 0
    for k, v in local.columns.items():
        np.testing.assert_array_equal(remote.columns[k], v)
    assert remote.file_size == path.stat().st_size
    assert remote.bytes_read < 0.4 * remote.file_size  # range requests, not the whole granule
    with pytest.raises(ValueError, match="HTTP 404"):
        read_granule_shots(f"{url}/{NAME.format(v='01')}", area, ShotFilters(), session=requests.Session())


def test_http_range_file_redirect_retry_and_errors(http_root: tuple[str, Path]) -> None:
    import requests

    from core.http import RetryPolicy
    from labels.sources import HTTPRangeFile

    url, root = http_root
    data = np.random.default_rng(0).bytes(300_000)
    (root / "blob.bin").write_bytes(data)
    f = HTTPRangeFile(f"{url}/redir/blob.bin", requests.Session(), block_size=1 << 12, direct_read=1 << 10)
    assert f.size == len(data)
    f.seek(1000)
    assert f.read(100) == data[1000:1100]  # small read: served from a 4 KiB block
    f.seek(250_000)
    assert f.read(20_000) == data[250_000:270_000]  # large read: fetched exactly
    f.seek(-10, 2)
    assert f.read(100) == data[-10:]
    assert _RangeHandler.hits["/redir/blob.bin"] == 1  # the redirect target is re-used
    assert f.bytes_read == 4096 + 20_000 + len(data) % 4096
    before = f.n_requests
    f.prefetch([(100_000, 5000), (106_000, 1000), (200_000, 10)])  # first two merge: 2 requests
    assert f.n_requests == before + 2
    f.seek(100_500)
    assert f.read(6000) == data[100_500:106_500] and f.n_requests == before + 2  # served from the prefetch
    fast = RetryPolicy(max_attempts=4, backoff_s=0.01, max_backoff_s=0.05, budget_s=10.0)
    g = HTTPRangeFile(f"{url}/flaky/blob.bin", requests.Session(), policy=fast)  # one 503, then fine
    g.seek(5)
    assert g.read(10) == data[5:15] and _RangeHandler.hits["/flaky/blob.bin"] >= 2
    with pytest.raises(OSError, match=r"/nothing.bin: HTTP 404"):
        HTTPRangeFile(f"{url}/nothing.bin", requests.Session())


def test_area_without_any_shot(setup: dict, tmp_path: Path) -> None:
    from pyproj import Transformer

    aoi = [-122.49, 40.20, -122.46, 40.24]  # between the synthetic tracks' ends: no footprint inside
    tile = mgrs_tile_grid("10TEK")
    xs, ys = Transformer.from_crs("EPSG:4326", tile.crs, always_xy=True).transform(
        [aoi[0], aoi[2], aoi[0], aoi[2]], [aoi[1], aoi[1], aoi[3], aoi[3]])
    comp = _composite(tmp_path / "c" / "10TEK" / f"{SEASON}.tif", tile.clip((min(xs), min(ys), max(xs), max(ys))))
    with pytest.raises(LabelsError, match=r"no GEDI shot was kept in the area and season.*GEDI04_A_\w+: (\d+) shots "
                                          r"read, removed: outside_area \1\)"):
        run_gedi_labels(aoi=aoi, year=2023, granules=[str(setup["granule"])], composites=[str(comp)],
                        output_dir=str(tmp_path / "o"))
    assert not (tmp_path / "o" / "labels" / "10TEK").exists()  # no empty label raster
    assert not (tmp_path / "o" / "labels" / "gedi_shots.parquet").exists()


@pytest.mark.parametrize(("crs", "columns"), [
    ("EPSG:4326", None), ("EPSG:4326", ["lon", "lat"]),
    ("EPSG:32610", None),  # not EPSG:4326: geopandas' own reader
])
def test_read_shots_gives_what_geopandas_reads(tmp_path: Path, crs: str, columns: list[str] | None) -> None:
    from geopandas.testing import assert_geodataframe_equal

    from labels.shots import COLUMNS, read_shots, shots_frame, write_shots

    rng = np.random.default_rng(3)
    cols: dict[str, Any] = {k: rng.integers(0, 5, 50) for k in COLUMNS}
    cols.update(shot_number=np.arange(50), delta_time=rng.uniform(1.7e8, 1.8e8, 50), beam=np.full(50, "BEAM0101"),
                lon=rng.uniform(-122.5, -122.0, 50), lat=rng.uniform(45.0, 45.5, 50), agbd=rng.gamma(2, 40, 50),
                agbd_se=np.full(50, np.nan), sensitivity=rng.uniform(0.9, 1, 50))
    gdf = shots_frame(cols, "GEDI04_A_X", "02")
    if crs != "EPSG:4326":
        gdf = gdf.to_crs(crs)
    path = write_shots(gdf, tmp_path / "s.parquet")
    want = gpd.read_parquet(path, columns=None if columns is None else [*columns, "geometry"])
    got = read_shots(path, columns)
    assert_geodataframe_equal(got, want, check_crs=True)
    assert list(got.columns) == list(want.columns) and got.crs.to_json() == want.crs.to_json()
    assert len(got) == 50 and got.crs.to_epsg() == int(crs.split(":")[1])
