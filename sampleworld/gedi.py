"""GEDI L4A v2.1 granules of the sample world, in the real HDF5 layout (see ``gedi_schema``).

Ground tracks follow an ISS-like circular orbit (inclination 51.6 deg, 92.6 min period, Earth rotating
beneath): the eight beam tracks lie ~600 m apart across track, shots 1/121 s (~60 m) apart along track.
Inside the world window ``agbd`` = true AGB at the footprint's pixel + heteroscedastic Gaussian error
(sd = a + b * truth, clipped at 0); outside it a plausible along-track AGB series. ``agbd``/``agbd_se``
are -9999 on fill shots (no ``_FillValue`` attribute, as in the real files).
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from pyproj import Transformer

from core.constants import AGBD_FILL
from core.files import write_json_atomic
from core.grid import Grid
from core.timeline import GEDI_L4A
from sampleworld import gedi_schema as S
from sampleworld import landscape as L
from sampleworld.resume import done_marker, load_done, save_done
from sampleworld.spec import GediSpec, WorldSpec
from sampleworld.stac import GEDI_COLLECTION, collection, feature_collection, gedi_item

GEDI_EPOCH = datetime(2018, 1, 1, tzinfo=UTC)
SHOT_DT = 1.0 / 121.0          # s between shots of one beam
INCLINATION = math.radians(51.6)
ORBIT_RATE = 2 * math.pi / 5556.0  # rad/s
EARTH_RATE = 7.2921159e-5
R_EARTH = 6_371_000.0
FILL = AGBD_FILL
BEAM_ORDER = ("BEAM0000", "BEAM0001", "BEAM0010", "BEAM0011", "BEAM0101", "BEAM0110", "BEAM1000", "BEAM1011")
CHANNEL = {"BEAM0000": 0, "BEAM0001": 0, "BEAM0010": 1, "BEAM0011": 1, "BEAM0101": 2, "BEAM0110": 3,
           "BEAM1000": 4, "BEAM1011": 5}
PFT_NAMES = {0: "Water", 1: "ENT", 2: "EBT", 3: "DNT", 4: "DBT", 5: "GSW", 6: "GSW", 7: "GSW", 11: "GSW"}
DEGRADE_VALUES = (4, 34, 74)


@dataclass(frozen=True)
class AgbdError:
    """GEDI agbd = max(0, truth + N(0, sd)), sd = ``a + b * truth`` (Mg/ha); ``agbd_se`` = the same
    formula at the predicted value times U(0.85, 1.15). ``v01_alg10_factor``: production-version 01
    granules overstate agbd by this factor where ``selected_algorithm == 10`` (the real v01 defect)."""

    a: float = 8.0
    b: float = 0.22
    v01_alg10_factor: float = 1.6

    def to_dict(self) -> dict[str, Any]:
        return {"model": "agbd = max(0, truth + N(0, sd)); sd = a + b * truth (Mg/ha)", "a": self.a,
                "b": self.b, "agbd_se": "a + b * agbd, times U(0.85, 1.15)",
                "v01_alg10_factor": self.v01_alg10_factor, "truth_sampling": "30 m pixel holding the footprint"}


def granule_name(g: GediSpec, year: int, orbit: int, track: int) -> str:
    start = datetime(year, 1, 1, tzinfo=UTC) + timedelta(days=g.doy - 1)
    stamp = f"{start:%Y%j}{g.time}"
    return f"GEDI04_A_{stamp}_O{orbit:05d}_{1 + g.doy % 4:02d}_T{track:05d}_02_002_{g.prod_version}_V002.h5"


def _ground_track(lon_p: float, lat_p: float, ascending: bool, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """lon/lat (deg, float64) of the nadir track at times ``t`` (s) relative to passing (lon_p, lat_p)."""
    u_p = math.asin(max(-1.0, min(1.0, math.sin(math.radians(lat_p)) / math.sin(INCLINATION))))
    if not ascending:
        u_p = math.pi - u_p
    node = math.radians(lon_p) - math.atan2(math.cos(INCLINATION) * math.sin(u_p), math.cos(u_p))
    u = u_p + ORBIT_RATE * t
    lat = np.arcsin(np.sin(INCLINATION) * np.sin(u))
    lon = node + np.arctan2(math.cos(INCLINATION) * np.sin(u), np.cos(u)) - EARTH_RATE * t
    lon = (np.degrees(lon) + 180.0) % 360.0 - 180.0
    return lon, np.degrees(lat)


def _offset_track(lon: np.ndarray, lat: np.ndarray, offset_m: float) -> tuple[np.ndarray, np.ndarray]:
    """Shift a track sideways by ``offset_m`` (positive = right of the direction of flight)."""
    de = np.gradient(lon) * np.cos(np.radians(lat))
    dn = np.gradient(lat)
    norm = np.hypot(de, dn)
    norm[norm == 0] = 1
    ne, nn = dn / norm, -de / norm
    dlat = np.degrees(offset_m * nn / R_EARTH)
    dlon = np.degrees(offset_m * ne / (R_EARTH * np.cos(np.radians(lat))))
    return lon + dlon, lat + dlat


def write_gedi(out: Path, spec: WorldSpec, grid: Grid, lss: dict[int, L.Landscape], seed: int,
               aoi: list[float], resume: str = "") -> dict[str, Any]:
    """Write every GEDI granule of ``spec`` (each sampling the landscape of its year, ``lss``) plus the GEDI
    STAC collection/items; return the manifest part. Granules finished by an earlier run for the same world
    (``resume`` key) are not rewritten."""

    err = AgbdError()
    paths, items, counts = [], [], []
    for k, g in enumerate(spec.gedi):
        marker = done_marker(out / "gedi", f"granule-{k:03d}")
        done = load_done(marker, resume) if resume else None
        if done is None or not Path(done[0]).exists():
            rng = np.random.default_rng(np.random.SeedSequence([seed, 2, k]))
            path, item, n = write_granule(out / "gedi", spec, grid, lss[spec.year_of(g)], g, err, rng)
            if resume:
                save_done(marker, resume, [str(path), item, n])
        else:
            path, item, n = done
        paths.append(str(path))
        items.append(item)
        counts.append(n)
    items.sort(key=lambda it: (it["properties"]["datetime"], it["id"]))
    c = collection(GEDI_COLLECTION, "GEDI L4A Footprint Level Aboveground Biomass Density, Version 2.1",
                   "Sample world (synthetic) GEDI L4A v2.1 granules in the real HDF5 layout.",
                   [-180.0, -GEDI_L4A.max_abs_lat, 180.0, GEDI_L4A.max_abs_lat],
                   [f"{GEDI_L4A.first}T00:00:00.000Z", f"{GEDI_L4A.last}T23:59:59.999Z"], "ORNL_CLOUD")
    write_json_atomic(out / "stac" / "gedi_collection.json", c)
    write_json_atomic(out / "stac" / "gedi_items.json", feature_collection(items))
    return {"collection_json": str(out / "stac" / "gedi_collection.json"),
            "items_json": str(out / "stac" / "gedi_items.json"), "granules": paths,
            "shots": counts, "agbd_error": err.to_dict()}


def _crossing_point(spec: WorldSpec, grid: Grid, g: GediSpec) -> tuple[float, float]:
    minx, miny, maxx, maxy = grid.bounds
    x = minx + g.crossing_frac * (maxx - minx)
    y = (miny + maxy) / 2
    lon, lat = Transformer.from_crs(spec.epsg, 4326, always_xy=True).transform(x, y)
    return float(lon), float(lat)


def _shot_times(grid: Grid, g: GediSpec) -> tuple[np.ndarray, int]:
    """Shot times (s, relative to the crossing) and the crossing's index."""
    speed = R_EARTH * ORBIT_RATE
    if g.length_km > 0:
        n = int(g.length_km * 1000 / (speed * SHOT_DT))
        k0 = int(n * 0.3)
    else:
        minx, miny, maxx, maxy = grid.bounds
        span = math.hypot(maxx - minx, maxy - miny) + 4000.0
        n = int(span / (speed * SHOT_DT))
        k0 = n // 2
    return (np.arange(n, dtype=np.float64) - k0) * SHOT_DT, k0


def write_granule(folder: Path, spec: WorldSpec, grid: Grid, ls: L.Landscape, g: GediSpec, err: AgbdError,
                  rng: np.random.Generator) -> tuple[Path, dict[str, Any], int]:
    """One granule file; returns (path, STAC item, number of shots)."""
    lon_p, lat_p = _crossing_point(spec, grid, g)
    t, k0 = _shot_times(grid, g)
    year = spec.year_of(g)
    day0 = datetime(year, 1, 1, tzinfo=UTC) + timedelta(days=g.doy - 1)
    pass_time = day0.replace(hour=int(g.time[:2]), minute=int(g.time[2:4]), second=int(g.time[4:6]))
    start = pass_time  # the file name's time is the first shot's time
    t_cross = (start - GEDI_EPOCH).total_seconds() + k0 * SHOT_DT
    orbit = 160 + int((day0 - datetime(2019, 4, 1, tzinfo=UTC)).days * 15.55) + int(g.time[:2]) // 2
    track = int(rng.integers(1, 4500))
    name = granule_name(g, year, orbit, track)
    lon_c, lat_c = _ground_track(lon_p, lat_p, g.ascending, t)
    beams = {}
    for b in g.beams:
        off = (BEAM_ORDER.index(b) - 3.5) * 600.0
        lon, lat = _offset_track(lon_c, lat_c, off)
        beams[b] = beam_data(b, lon, lat, t + t_cross, orbit, spec, grid, ls, g, err, rng)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    tmp = folder / f"{name}.tmp"
    _write_h5(tmp, name, g, beams, start)
    tmp.replace(path)
    n = sum(len(d["shot_number"]) for d in beams.values())
    ring = _track_ring(beams)
    end = GEDI_EPOCH + timedelta(seconds=float(max(d["delta_time"][-1] for d in beams.values())))
    concept = f"G{2_900_000_000 + track * 1000 + g.doy}-SAMPLEWORLD"
    return path, gedi_item(name, ring, start, end, str(path), concept), n


def _track_ring(beams: dict[str, dict[str, np.ndarray]]) -> list[tuple[float, float]]:
    lon = np.concatenate([d["lon_lowestmode"] for d in beams.values()])
    lat = np.concatenate([d["lat_lowestmode"] for d in beams.values()])
    x0, x1, y0, y1 = float(lon.min()), float(lon.max()), float(lat.min()), float(lat.max())
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]


def beam_data(beam: str, lon: np.ndarray, lat: np.ndarray, dtime: np.ndarray, orbit: int, spec: WorldSpec,
              grid: Grid, ls: L.Landscape, g: GediSpec, err: AgbdError, rng: np.random.Generator
              ) -> dict[str, np.ndarray]:
    """Every dataset of one beam (top level and sub-group paths as in ``gedi_schema``)."""
    n = lon.size
    truth, lc, inside = _sample_truth(lon, lat, spec, grid, ls, rng)
    pft = np.vectorize(L.PFT_OF_CLASS.get, otypes=[np.uint8])(lc) if n else np.zeros(0, np.uint8)
    water = pft == 0
    coverage = int(beam[4:], 2) < 4
    sens = (1.0 - rng.beta(2.0, 20.0 if coverage else 32.0, n)).astype(np.float32)
    l2 = (rng.random(n) > 0.08).astype(np.uint8)
    fill = water | (rng.random(n) < 0.03) | (beam in g.fill_beams)
    alg = np.where(rng.random(n) < 0.85, 1, 2).astype(np.uint8)
    alg[rng.random(n) < 0.04] = 10
    sd = err.a + err.b * truth
    agbd = np.maximum(0.0, truth + sd * rng.standard_normal(n)).astype(np.float32)
    if g.prod_version == "01":
        agbd = np.where(alg == 10, agbd * np.float32(err.v01_alg10_factor), agbd).astype(np.float32)
    se = ((err.a + err.b * agbd) * rng.uniform(0.85, 1.15, n)).astype(np.float32)
    degrade = np.zeros(n, np.uint8)
    runs = rng.random(n // 200 + 1) < (1.0 if g.all_degraded else g.degraded_frac)
    degrade_run = np.repeat(runs, 200)[:n]
    degrade[degrade_run] = rng.choice(np.array(DEGRADE_VALUES, np.uint8), int(degrade_run.sum()))
    l4 = ((l2 == 1) & (sens >= 0.9) & ~fill & (agbd < 1500)).astype(np.uint8)
    agbd[fill] = FILL
    se[fill] = FILL
    leaf_off = np.where(pft == 4, np.uint8(0 if 120 <= g.doy <= 290 else 1), np.uint8(0))
    leaf_off[water] = 255
    beam_no = int(beam[4:], 2)
    idx = np.arange(1, n + 1, dtype=np.uint64)
    sub = 1 + g.doy % 4
    shot = np.uint64(orbit) * np.uint64(10**13) + np.uint64(beam_no * 10**11 + sub * 10**8) + idx
    stratum = np.array([f"{PFT_NAMES.get(int(p), 'GSW')}_NAm" if p else "" for p in pft], dtype=object)
    elev = (350 + 420 * _terrain_at(truth.size, inside, spec, grid, ls, lon, lat)).astype(np.float32)
    d: dict[str, np.ndarray] = {
        "agbd": agbd, "agbd_se": se, "lat_lowestmode": lat.astype(np.float64),
        "lon_lowestmode": lon.astype(np.float64), "delta_time": dtime.astype(np.float64),
        "shot_number": shot, "sensitivity": sens, "l2_quality_flag": l2, "l4_quality_flag": l4,
        "degrade_flag": degrade, "beam": np.full(n, beam_no, np.uint16), "channel": np.full(n, CHANNEL[beam], np.uint8),
        "algorithm_run_flag": (~fill).astype(np.uint8), "selected_algorithm": alg, "elev_lowestmode": elev,
        "predict_stratum": stratum, "master_int": np.floor(dtime).astype(np.uint32),
        "master_frac": (dtime - np.floor(dtime)).astype(np.float64),
        "land_cover_data/pft_class": pft, "land_cover_data/leaf_off_flag": leaf_off,
        "land_cover_data/region_class": np.where(water, 0, 7).astype(np.uint8),
        "land_cover_data/leaf_on_doy": np.full(n, 121, np.int16),
        "land_cover_data/leaf_off_doy": np.full(n, 290, np.int16),
        "land_cover_data/landsat_treecover": np.where(np.isin(pft, (1, 4)), 55 + 35 * (truth / 450), 3.0),
        "land_cover_data/landsat_water_persistence": np.where(water, 100, 0).astype(np.uint8),
        "land_cover_data/leaf_on_cycle": np.ones(n, np.uint8),
        "land_cover_data/urban_focal_window_size": np.full(n, 3, np.uint8),
        "land_cover_data/urban_proportion": np.zeros(n, np.uint8),
    }
    _derived(d, rng)
    return d


def _derived(d: dict[str, np.ndarray], rng: np.random.Generator) -> None:
    """Datasets that follow from the primary ones (sqrt-space predictions, per-algorithm copies)."""
    n = d["agbd"].size
    fill = d["agbd"] == FILL
    a_t = np.where(fill, FILL, np.sqrt(np.maximum(d["agbd"], 0))).astype(np.float32)
    se_t = np.where(fill, FILL, 0.9 + 0.3 * rng.random(n)).astype(np.float32)
    d["agbd_t"], d["agbd_t_se"] = a_t, se_t
    lo = np.where(fill, FILL, np.maximum(0, a_t - 1.645 * se_t) ** 2).astype(np.float32)
    hi = np.where(fill, FILL, (a_t + 1.645 * se_t) ** 2).astype(np.float32)
    d["agbd_pi_lower"], d["agbd_pi_upper"] = lo, hi
    for a in ("a1", "a2"):
        jit = rng.normal(1.0, 0.03, n)
        d[f"agbd_prediction/agbd_{a}"] = np.where(fill, FILL, d["agbd"] * jit).astype(np.float32)
        d[f"agbd_prediction/agbd_se_{a}"] = d["agbd_se"].copy()
        d[f"geolocation/lat_lowestmode_{a}"] = d["lat_lowestmode"] + rng.normal(0, 2e-6, n)
        d[f"geolocation/lon_lowestmode_{a}"] = d["lon_lowestmode"] + rng.normal(0, 2e-6, n)
        d[f"geolocation/elev_lowestmode_{a}"] = d["elev_lowestmode"] + rng.normal(0, 0.3, n).astype(np.float32)
        d[f"geolocation/sensitivity_{a}"] = d["sensitivity"].copy()
    d["agbd_prediction/agbd_t_a1"], d["agbd_prediction/agbd_t_se_a1"] = a_t.copy(), se_t.copy()
    d["geolocation/stale_return_flag"] = np.zeros(n, np.uint8)
    d["predictor_limit_flag"] = np.zeros(n, np.uint8)
    d["response_limit_flag"] = np.zeros(n, np.uint8)
    d["selected_mode"] = np.where(fill, 0, 1 + (rng.random(n) < 0.2)).astype(np.uint8)
    d["selected_mode_flag"] = np.where(fill, 0, 1).astype(np.uint8)
    d["solar_elevation"] = np.full(n, -20.0, np.float32) + rng.normal(0, 0.01, n).astype(np.float32)
    d["surface_flag"] = np.ones(n, np.uint8)
    xv = np.zeros((n, 4), np.float32)
    xv[:, 0] = np.where(fill, FILL, 10 + np.sqrt(np.maximum(d["agbd"], 0)) / 2)
    xv[:, 1] = np.where(fill, FILL, 10 + np.sqrt(np.maximum(d["agbd"], 0)) / 1.6)
    d["xvar"] = xv


def _sample_truth(lon: np.ndarray, lat: np.ndarray, spec: WorldSpec, grid: Grid, ls: L.Landscape,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Truth AGB (Mg/ha, float32) and land cover at each footprint; outside the window a synthetic
    along-track series (forest/shrub/grass runs, ~10 % water)."""
    n = lon.size
    x, y = Transformer.from_crs(4326, spec.epsg, always_xy=True).transform(lon, lat)
    a = grid.affine
    col = np.floor((np.asarray(x) - a.c) / a.a).astype(np.int64)
    row = np.floor((np.asarray(y) - a.f) / a.e).astype(np.int64)
    inside = (col >= 0) & (col < grid.width) & (row >= 0) & (row < grid.height)
    seg = max(1, n // 150 + 1)
    seg_class = rng.choice(np.array([L.NEEDLELEAF, L.BROADLEAF, L.SHRUB, L.GRASS, L.CROP, L.WATER], np.uint8),
                           seg, p=[0.3, 0.15, 0.2, 0.15, 0.1, 0.1])
    lc = np.repeat(seg_class, 150)[:n]
    level = np.repeat(rng.uniform(0, 1, seg), 150)[:n]
    base = {L.NEEDLELEAF: 250, L.BROADLEAF: 180, L.SHRUB: 30, L.GRASS: 5, L.CROP: 3, L.WATER: 0}
    truth = np.vectorize(base.get, otypes=[np.float32])(lc) * (0.4 + 1.2 * level) if n else np.zeros(0, np.float32)
    truth = truth.astype(np.float32)
    truth[inside] = ls.agb[row[inside], col[inside]]
    lc = lc.astype(np.uint8)
    lc[inside] = ls.landcover[row[inside], col[inside]]
    return truth, lc, inside


def _terrain_at(n: int, inside: np.ndarray, spec: WorldSpec, grid: Grid, ls: L.Landscape, lon: np.ndarray,
                lat: np.ndarray) -> np.ndarray:
    out = np.zeros(n, np.float32)
    if inside.any():
        x, y = Transformer.from_crs(4326, spec.epsg, always_xy=True).transform(lon[inside], lat[inside])
        a = grid.affine
        col = np.clip(((np.asarray(x) - a.c) / a.a).astype(np.int64), 0, grid.width - 1)
        row = np.clip(((np.asarray(y) - a.f) / a.e).astype(np.int64), 0, grid.height - 1)
        out[inside] = ls.terrain[row, col]
    return out


def _attr(v: Any) -> Any:
    if isinstance(v, tuple) and v and v[0] == "array":
        return np.array(v[2], dtype=v[1])
    if isinstance(v, tuple) and v and v[0] in ("int64", "float64"):
        return np.dtype(v[0]).type(v[1])
    return v


def _write_h5(path: Path, name: str, g: GediSpec, beams: dict[str, dict[str, np.ndarray]], start: datetime) -> None:
    str_dt = h5py.string_dtype("utf-8")
    with h5py.File(path, "w", libver=("earliest", "v110")) as f:
        f.attrs["short_name"] = "GEDI_L4A"
        _write_ancillary(f.create_group("ANCILLARY"))
        for b in BEAM_ORDER:
            if b not in beams:
                continue
            grp = f.create_group(b)
            grp.attrs["description"] = "Coverage beam" if int(b[4:], 2) < 4 else "Full power beam"
            for sub, attrs in S.GROUP_ATTRS.items():
                sg = grp.create_group(sub)
                for k, v in attrs.items():
                    sg.attrs[k] = _attr(v)
            data = beams[b]
            for dname, dtype, trail, attrs in S.BEAM_DATASETS:
                arr = data[dname]
                n = arr.shape[0]
                chunks = (14200,) + ((1,) if trail else ())
                ds = grp.create_dataset(dname, data=arr, dtype=str_dt if dtype == "str" else np.dtype(dtype),
                                        maxshape=(None,) + tuple(None for _ in trail), chunks=chunks if n else None,
                                        compression="gzip", compression_opts=4)
                for k, v in attrs.items():
                    ds.attrs[k] = _attr(v)
            for link in S.SHOT_NUMBER_LINKS:
                grp[link] = grp["shot_number"]
        meta = f.create_group("METADATA").create_group("DatasetIdentification")
        for k, v in S.DATASET_IDENTIFICATION.items():
            meta.attrs[k] = v
        meta.attrs["fileName"] = name
        meta.attrs["VersionID"] = g.prod_version
        meta.attrs["creationDate"] = (start + timedelta(days=40)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        meta.attrs["uuid"] = str(uuid.uuid5(uuid.NAMESPACE_URL, name))


def _write_ancillary(anc: h5py.Group) -> None:
    s = h5py.string_dtype("utf-8")
    pft = np.array([(1, "ENT"), (3, "DNT"), (2, "EBT"), (4, "DBT"), (5, "GSW"), (6, "GSW"), (11, "GSW")],
                   dtype=[("pft_class", "u1"), ("pft_name", s)])
    anc.create_dataset("pft_lut", data=pft)
    reg = np.array([(1, "Eu"), (2, "NAs"), (5, "SAs"), (3, "Au"), (4, "Af"), (6, "SA"), (7, "NAm")],
                   dtype=[("region_class", "u1"), ("region_name", s)])
    anc.create_dataset("region_lut", data=reg)
    md_dt = [("predict_stratum", s), ("model_group", "u1"), ("model_name", s), ("model_id", "u1"),
             ("x_transform", s), ("y_transform", s), ("bias_correction_name", s), ("fit_stratum", s),
             ("rh_index", "u1", (8,)), ("predictor_id", "u1", (8,)), ("predictor_max_value", "<f4", (8,)),
             ("vcov", "<f8", (5, 5)), ("par", "<f8", (5,)), ("rse", "<f4"), ("dof", "<u4"),
             ("response_max_value", "<f4"), ("bias_correction_value", "<f4"), ("npar", "u1")]
    rows = []
    for i, strat in enumerate(("ENT_NAm", "DBT_NAm", "GSW_NAm")):
        rows.append((strat, 4, strat, i + 1, "sqrt", "sqrt", "Snowdon", strat, [50, 98, 0, 0, 0, 0, 0, 0],
                     [1, 2, 0, 0, 0, 0, 0, 0], [11.0, 11.4, 0, 0, 0, 0, 0, 0], np.eye(5) * 0.5,
                     [-110.0 + 5 * i, 4.0, 6.0, 0, 0], 2.5, 400, 800.0, 1.02, 3))
    anc.create_dataset("model_data", data=np.array(rows, dtype=md_dt))
