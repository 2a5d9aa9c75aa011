"""The sample world generator: manifest, determinism, idempotence, Fmask/reflectance consistency,
truth and GEDI labels that are learnable but noisy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import h5py
import numpy as np
import pytest
import rasterio
from pyproj import Transformer

from sampleworld import generate_world, preset
from sampleworld import landscape as L
from sampleworld.spec import WorldSpec

ROOT = Path(__file__).resolve().parents[1]




def _read(item: dict, key: str) -> np.ndarray:
    with rasterio.open(item["assets"][key]["href"]) as ds:
        return ds.read(1)


def _pixel(x: np.ndarray, y: np.ndarray, tr: rasterio.Affine) -> tuple[np.ndarray, np.ndarray]:
    return (np.floor((np.asarray(x) - tr.c) / tr.a).astype(int),
            np.floor((np.asarray(y) - tr.f) / tr.e).astype(int))


def _doy(item: dict) -> int:
    return int(item["id"].split(".")[3][4:7])


def test_manifest_has_the_design_keys(world: dict) -> None:
    for k in ("name", "size", "seed", "year", "aoi", "aoi_geojson", "tiles", "season", "hls", "gedi", "truth"):
        assert k in world, k
    assert world["tiles"] == ["10TEK", "10TFK"] and world["season"] == {"start": "2024-06-01", "end": "2024-09-30"}
    assert world["years"] == [2022, 2024, 2025] and world["gedi_years"] == [2022, 2024]
    for k in ("collection_json", "items_json"):
        assert Path(world["hls"][k]).is_file() and Path(world["gedi"][k]).is_file()
    assert world["gedi"]["agbd_error"]["a"] > 0 and world["gedi"]["agbd_error"]["b"] > 0
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in world["gedi"]["granules"])
    assert Path(world["truth"]["agb"]).is_file() and Path(world["truth"]["landcover"]).is_file()
    stored = json.loads((Path(world["hls"]["items_json"]).parents[1] / "world.json").read_text())
    assert stored == world


def test_layout_and_names(world: dict, items: list[dict]) -> None:
    wd = Path(world["hls"]["items_json"]).parents[1]
    assert world["hls"]["n_scenes"] == len(items)
    for it in items:
        for key in ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B09", "B10", "B11", "Fmask",
                    "SAA", "SZA", "VAA", "VZA"):
            href = Path(it["assets"][key]["href"])
            assert href == wd / "hls" / it["id"] / f"{it['id']}.{key}.tif" and href.is_file()
    for g in world["gedi"]["granules"]:
        assert Path(g).parent == wd / "gedi" and Path(g).name.startswith("GEDI04_A_")


def test_scene_mix_per_tile(items: list[dict]) -> None:
    by_tile: dict[str, list[int]] = {}
    for it in (i for i in items if i["properties"]["datetime"].startswith("2024")):
        by_tile.setdefault(it["id"].split(".")[2], []).append(_doy(it))
    assert set(by_tile) == {"T10TEK", "T10TFK"}
    for doys in by_tile.values():
        assert 5 <= len(doys) <= 6
        assert sum(152 <= d <= 273 for d in doys) >= 3  # Jun 1 - Sep 30 2024
        assert any(d < 152 for d in doys) and any(d > 273 for d in doys)
    years = {(it["id"].split(".")[2], it["properties"]["datetime"][:4]) for it in items}
    assert years == {(t, y) for t in ("T10TEK", "T10TFK") for y in ("2022", "2024", "2025")}


def test_gedi_granules_follow_the_real_timeline(world: dict) -> None:
    """No shot in the 2023-24 storage gap or after the record's end (2024-11-27); the spec is checked."""
    import dataclasses

    from core.timeline import GEDI_L4A
    from sampleworld.spec import GediSpec, check_timeline, preset

    for path in world["gedi"]["granules"]:
        with h5py.File(path) as f:
            for beam in (k for k in f if k.startswith("BEAM")):
                t = f[beam]["delta_time"][[0, -1]]
                for s in t:
                    day = (datetime(2018, 1, 1) + timedelta(seconds=float(s))).date()
                    assert GEDI_L4A.covers(day), (path, day)
    for size in ("small", "demo", "benchmark"):
        check_timeline(preset(size))
    gap = dataclasses.replace(preset("small"), gedi=(GediSpec(doy=180, year=2023),))
    with pytest.raises(ValueError, match="outside the GEDI L4A v2.1 record"):
        check_timeline(gap)
    late = dataclasses.replace(preset("small"), gedi=(GediSpec(doy=340, year=2024),))
    with pytest.raises(ValueError, match="2024-11-27"):
        check_timeline(late)


def test_overlapping_tiles_hold_the_same_pixels(items: list[dict]) -> None:
    by_id = {it["id"]: it for it in items}
    tek = next(i for i in by_id if "T10TEK" in i and "2024236" in i)
    tfk = tek.replace("T10TEK", "T10TFK")
    with rasterio.open(by_id[tek]["assets"]["B04"]["href"]) as a, rasterio.open(by_id[tfk]["assets"]["B04"]["href"]) as b:
        left = max(a.bounds.left, b.bounds.left)
        top = min(a.bounds.top, b.bounds.top)
        wa = a.window(left, top - 3000, left + 3000, top)
        wb = b.window(left, top - 3000, left + 3000, top)
        assert np.array_equal(a.read(1, window=wa), b.read(1, window=wb))


def test_fmask_consistent_with_reflectance(items: list[dict]) -> None:
    seen = {"cloud": 0, "adjacent": 0, "shadow": 0, "snow": 0, "water": 0, "high_aerosol": 0, "fill": 0}
    for it in (i for i in items if "T10TEK" in i["id"]):
        fm, blue, nir, green, swir = (_read(it, k) for k in ("Fmask", "B02", "B05", "B03", "B06"))
        fill = fm == 255
        assert np.array_equal(fill, blue == -9999) and np.array_equal(fill, nir == -9999)
        v = ~fill
        assert ((fm[v] & 1) == 0).all()  # cirrus bit unused
        cloud, adj, shadow = v & (fm & 2 > 0), v & (fm & 4 > 0), v & (fm & 8 > 0)
        snow, water, high = v & (fm & 16 > 0), v & (fm & 32 > 0), v & ((fm >> 6) == 3)
        clear = v & ~cloud & ~adj & ~shadow & ~snow & ~water
        if cloud.any():
            assert np.median(blue[cloud]) > 3000 > np.median(blue[clear])
        if shadow.any():
            assert np.median(nir[shadow]) < 0.6 * np.median(nir[clear])
        if snow.any():
            ndsi = (green[snow] - swir[snow]) / (green[snow] + swir[snow])
            assert np.median(ndsi) > 0.6
        if water.any():
            assert np.median(nir[water]) < 400 < np.median(nir[clear])
        cc = round(100 * (v & ((fm & 0b1010) > 0)).sum() / v.sum())
        assert it["properties"]["eo:cloud_cover"] == cc
        for k, m in (("cloud", cloud), ("adjacent", adj), ("shadow", shadow), ("snow", snow), ("water", water),
                     ("high_aerosol", high), ("fill", fill)):
            seen[k] += int(m.sum())
    assert all(seen.values()), seen


def test_shadows_displaced_away_from_the_sun(items: list[dict]) -> None:
    it = next(i for i in items if "T10TEK" in i["id"] and ".2024124T" in i["id"])
    fm = _read(it, "Fmask")
    with rasterio.open(it["assets"]["Fmask"]["href"]) as ds:
        saa = float(ds.tags()["MEAN_SUN_AZIMUTH_ANGLE"])
    cloud, shadow = (fm & 2) > 0, (fm & 8) > 0
    cy, cx = np.argwhere(cloud).mean(axis=0)
    sy, sx = np.argwhere(shadow).mean(axis=0)
    # sun in the south-east (azimuth 90-180): shadows lie north-west of their clouds
    assert 90 < saa < 180 and sy < cy and sx < cx


def test_truth_rasters(world: dict) -> None:
    with rasterio.open(world["truth"]["agb"]) as a, rasterio.open(world["truth"]["landcover"]) as c:
        agb, lc = a.read(1), c.read(1)
        assert a.dtypes[0] == "float32" and a.nodata == -9999 and c.dtypes[0] == "uint8" and c.nodata == 255
        assert a.crs.to_epsg() == 32610 and a.transform == c.transform
    assert 0 <= agb.min() and 300 < agb.max() <= 450
    assert set(np.unique(lc)) == set(L.LANDCOVER_NAMES)
    means = {k: agb[lc == k].mean() for k in L.LANDCOVER_NAMES}
    assert means[L.NEEDLELEAF] > means[L.SHRUB] > means[L.GRASS] and means[L.WATER] == 0


def test_reflectance_predicts_agb_but_not_trivially(world: dict, items: list[dict]) -> None:
    it = next(i for i in items if "T10TEK" in i["id"] and _doy(i) == 236)
    x = np.stack([_read(it, k).astype(np.float32) for k in ("B02", "B03", "B04", "B05", "B06", "B07")], -1)
    fm = _read(it, "Fmask")
    with rasterio.open(world["truth"]["agb"]) as ds, rasterio.open(it["assets"]["B02"]["href"]) as b:
        win = ds.window(*b.bounds)
        agb = ds.read(1, window=win)
    ok = (fm != 255) & ((fm & 0b1110) == 0) & (agb > 0)
    a = np.c_[x[ok] / 1000, np.ones(ok.sum())]
    coef, *_ = np.linalg.lstsq(a, agb[ok], rcond=None)
    r2 = 1 - ((agb[ok] - a @ coef) ** 2).mean() / agb[ok].var()
    assert 0.35 < r2 < 0.9, r2


def test_gedi_labels(world: dict) -> None:
    with rasterio.open(world["truth"]["agb"]) as ds:
        truth, tr = ds.read(1), ds.transform
    to_utm = Transformer.from_crs(4326, 32610, always_xy=True)
    res, tv, n_aoi, beams = [], [], 0, []
    x0, y0, x1, y1 = world["aoi"]
    for p in world["gedi"]["granules"]:
        with h5py.File(p) as f:
            beams.append(sorted(k for k in f if k.startswith("BEAM")))
            for b in beams[-1]:
                g = f[b]
                lon, lat, agbd = g["lon_lowestmode"][:], g["lat_lowestmode"][:], g["agbd"][:]
                q = (g["l4_quality_flag"][:] == 1) & (agbd != -9999)
                n_aoi += int(((lon >= x0) & (lon <= x1) & (lat >= y0) & (lat <= y1)).sum())
                x, y = to_utm.transform(lon[q], lat[q])
                col, row = _pixel(x, y, tr)
                ins = (row >= 0) & (row < truth.shape[0]) & (col >= 0) & (col < truth.shape[1])
                t = truth[row[ins], col[ins]]
                res.append(agbd[q][ins] - t)
                tv.append(t)
    res, tv = np.concatenate(res), np.concatenate(tv)
    assert n_aoi > 3000 and res.size > 1000
    assert abs(np.median(res[tv > 50])) < 10
    sd_low, sd_high = res[tv < 50].std(), res[tv > 200].std()
    assert sd_high > 2 * sd_low  # heteroscedastic
    assert len(beams[0]) == 8 and len(beams[1]) == 6


def test_gedi_flags_and_pft_follow_the_landscape(world: dict) -> None:
    with rasterio.open(world["truth"]["landcover"]) as ds:
        lc, tr = ds.read(1), ds.transform
    to_utm = Transformer.from_crs(4326, 32610, always_xy=True)
    with h5py.File(world["gedi"]["granules"][0]) as f:
        g = f["BEAM0101"]
        x, y = to_utm.transform(g["lon_lowestmode"][:], g["lat_lowestmode"][:])
        col, row = _pixel(x, y, tr)
        ins = (row >= 0) & (row < lc.shape[0]) & (col >= 0) & (col < lc.shape[1])
        pft = g["land_cover_data/pft_class"][:][ins]
        expect = np.vectorize(L.PFT_OF_CLASS.get)(lc[row[ins], col[ins]])
        assert (pft == expect).all()
        fill = g["agbd"][:] == -9999
        assert (g["l4_quality_flag"][:][fill] == 0).all() and (g["agbd_se"][:][fill] == -9999).all()
    with h5py.File(world["gedi"]["granules"][2]) as f:  # production version 01, everything degraded
        assert (f["BEAM0010/agbd"][:] == -9999).all()
        assert all((f[b]["degrade_flag"][:] > 0).all() for b in f if b.startswith("BEAM"))


def _tiny(tmp: Path, **kw: object) -> dict:
    spec = preset("small")
    return generate_world(tmp, size="small", seed=3, scenes=spec.scenes[2:4], gedi=spec.gedi[:1], aoi_px=120,
                          **kw)


def test_same_seed_gives_identical_arrays(tmp_path: Path) -> None:
    """Also across the process pool: each scene has its own random stream."""
    a, b = _tiny(tmp_path / "a"), _tiny(tmp_path / "b", workers=2)
    ia = json.loads(Path(a["hls"]["items_json"]).read_text())["features"]
    ib = json.loads(Path(b["hls"]["items_json"]).read_text())["features"]
    assert [i["id"] for i in ia] == [i["id"] for i in ib]
    for key in ("B04", "Fmask"):
        assert np.array_equal(_read(ia[0], key), _read(ib[0], key))
    with rasterio.open(a["truth"]["agb"]) as x, rasterio.open(b["truth"]["agb"]) as y:
        assert np.array_equal(x.read(1), y.read(1))
    with h5py.File(a["gedi"]["granules"][0]) as x, h5py.File(b["gedi"]["granules"][0]) as y:
        assert np.array_equal(x["BEAM0000/agbd"][:], y["BEAM0000/agbd"][:])
        assert np.array_equal(x["BEAM0000/shot_number"][:], y["BEAM0000/shot_number"][:])


def test_generate_is_idempotent_and_refuses_another_spec(tmp_path: Path) -> None:
    m = _tiny(tmp_path)
    b04 = Path(json.loads(Path(m["hls"]["items_json"]).read_text())["features"][0]["assets"]["B04"]["href"])
    before = b04.stat().st_mtime_ns
    assert _tiny(tmp_path) == m and b04.stat().st_mtime_ns == before
    with pytest.raises(ValueError, match="different sample world"):
        generate_world(tmp_path, size="small", seed=4)


def test_interrupted_run_resumes_without_rewriting_finished_granules(tmp_path: Path) -> None:
    m = _tiny(tmp_path)
    (tmp_path / "world.json").unlink()  # as if the run had stopped before the end
    items = json.loads(Path(m["hls"]["items_json"]).read_text())["features"]
    files = [Path(items[0]["assets"]["B04"]["href"]), Path(m["gedi"]["granules"][0])]
    before = [f.stat().st_mtime_ns for f in files]
    assert _tiny(tmp_path) == m
    assert [f.stat().st_mtime_ns for f in files] == before


def test_spec_round_trip_and_bad_input() -> None:
    for size in ("small", "demo", "benchmark"):
        s = preset(size)
        assert WorldSpec.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    with pytest.raises(ValueError, match="unknown sample world size"):
        preset("huge")
    with pytest.raises(ValueError, match="unknown WorldSpec fields"):
        generate_world("/nonexistent-never-written", size="small", colour="red")


def test_presets_meet_their_briefs() -> None:
    demo, bench = preset("demo"), preset("benchmark")
    assert demo.tiles == ("10TEK",) and demo.aoi_px == 1344 and demo.year == 2023
    assert demo.years == [2022, 2023, 2024] and demo.gedi_years == [2022, 2024]  # 2023: GEDI stored on the ISS
    for y in demo.years:
        assert sum(152 <= s.doy <= 273 for s in demo.scenes if demo.year_of(s) == y) >= 4
    assert sum(demo.year_of(g) == 2022 for g in demo.gedi) == 3 == sum(demo.year_of(g) == 2024 for g in demo.gedi)
    assert [d.year for d in demo.disturbances] == [2023]
    assert bench.full_tiles and len(bench.scenes) >= 24 and sum(152 <= s.doy <= 273 for s in bench.scenes) >= 20
    assert any(g.length_km >= 4000 and len(g.beams) == 8 for g in bench.gedi)


def test_cli_generate_reuses_a_finished_world(world: dict) -> None:
    wd = Path(world["hls"]["items_json"]).parents[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "sampleworld", "generate", str(wd), "--size", "small", "--seed", "0"],
                       capture_output=True, text=True, env=env, timeout=120, check=True)
    assert json.loads(r.stdout.strip().splitlines()[-1])["name"] == world["name"]


def test_clear_cuts_change_the_truth_from_their_year_on() -> None:
    """The demo world's clear-cut: forest in the disc becomes grass (2-8 Mg/ha) from 2023 on, nothing else."""
    from sampleworld.world import landscapes_by_year

    spec = preset("demo")
    (cut,) = spec.disturbances
    base = L.make_landscape((200, 240), np.random.default_rng(0))
    spec = spec.__class__(**{**spec.__dict__, "disturbances": (cut.__class__(2023, (0.5, 0.5), 40),)})
    lss = landscapes_by_year(spec, base)
    assert sorted(lss) == [2022, 2023, 2024] and lss[2022] is base
    rows, cols = np.ogrid[:200, :240]
    disc = (rows - 100) ** 2 + (cols - 120) ** 2 <= 40**2
    forest = np.isin(base.landcover, (L.NEEDLELEAF, L.BROADLEAF))
    for y in (2023, 2024):
        ls = lss[y]
        assert (ls.landcover[disc & forest] == L.GRASS).all() and (ls.agb[disc & forest] <= 8).all()
        assert np.array_equal(ls.agb[~(disc & forest)], base.agb[~(disc & forest)])
    assert (disc & forest).sum() > 100 and base.agb[disc & forest].mean() > 100
