"""HLS L30 v2.0 scenes of the sample world: rendering (reflectance, clouds, Fmask) and writing.

A scene is rendered once on the world window (one Landsat acquisition) and cut into one granule per
MGRS tile, as HLS does; same-zone tiles share the 30 m lattice, so overlapping granules hold the same
pixels. Reflective bands: int16 reflectance x 10000; B10/B11: int16 degrees C x 100; nodata -9999 outside
the swath. Fmask: uint8, 255 outside the swath. Angles SZA/SAA/VZA/VAA: uint16 degrees x 100, fill 40000.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from core.constants import HLS_NODATA
from core.grid import Grid
from sampleworld import landscape as L
from sampleworld.spec import SceneSpec

BAND_ASSETS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B09", "B10", "B11")
ANGLE_ASSETS = ("SAA", "SZA", "VAA", "VZA")
ALL_TIF_ASSETS = BAND_ASSETS + ("Fmask",) + ANGLE_ASSETS
LONG_NAMES = {"B01": "Coastal_Aerosol", "B02": "Blue", "B03": "Green", "B04": "Red", "B05": "NIR_Narrow",
              "B06": "SWIR1", "B07": "SWIR2", "B09": "Cirrus", "B10": "TIRS1", "B11": "TIRS2",
              "SAA": "Solar azimuth angle", "SZA": "Solar zenith angle", "VAA": "View azimuth angle",
              "VZA": "View zenith angle"}
REFL_NODATA = HLS_NODATA
FMASK_FILL = 255
ANGLE_FILL = 40000
CIRRUS, CLOUD, ADJACENT, SHADOW, SNOW, WATER = 0, 1, 2, 3, 4, 5


@dataclass(frozen=True)
class Acquisition:
    """Timing and geometry of one scene: start/end (UTC), mean sun and view angles in degrees."""

    spec: SceneSpec
    start: datetime
    end: datetime
    sun_zenith: float
    sun_azimuth: float
    view_zenith: float
    view_azimuth: float

    def item_id(self, tile: str) -> str:
        return f"HLS.L30.T{tile}.{self.start:%Y%j}T{self.spec.time}.v2.0"


def solar_angles(lon: float, lat: float, when: datetime) -> tuple[float, float]:
    """(zenith, azimuth) of the sun in degrees (NOAA low-precision formulas, ~0.5 deg)."""
    doy = when.timetuple().tm_yday
    gamma = 2 * math.pi / 365 * (doy - 1 + (when.hour - 12) / 24)
    decl = (0.006918 - 0.399912 * math.cos(gamma) + 0.070257 * math.sin(gamma)
            - 0.006758 * math.cos(2 * gamma) + 0.000907 * math.sin(2 * gamma))
    eqtime = 229.18 * (0.000075 + 0.001868 * math.cos(gamma) - 0.032077 * math.sin(gamma)
                       - 0.014615 * math.cos(2 * gamma) - 0.040849 * math.sin(2 * gamma))
    minutes = when.hour * 60 + when.minute + when.second / 60
    ha = math.radians((minutes + eqtime + 4 * lon) / 4 - 180)
    phi = math.radians(lat)
    cosz = math.sin(phi) * math.sin(decl) + math.cos(phi) * math.cos(decl) * math.cos(ha)
    zen = math.acos(max(-1.0, min(1.0, cosz)))
    az = math.degrees(math.atan2(math.sin(ha), math.cos(ha) * math.sin(phi) - math.tan(decl) * math.cos(phi)))
    return math.degrees(zen), (az + 180.0) % 360.0


def acquisition(spec: SceneSpec, year: int, lon: float, lat: float) -> Acquisition:
    """Timing (start = id time, 24 s scene) and mean angles of a scene at (lon, lat)."""
    t = spec.time
    start = datetime(year, 1, 1, int(t[:2]), int(t[2:4]), int(t[4:6]), 423000, tzinfo=UTC)
    start += timedelta(days=spec.doy - 1)
    zen, az = solar_angles(lon, lat, start)
    east_of_nadir = spec.swath_cut >= 0
    return Acquisition(spec, start, start + timedelta(seconds=23.887), zen, az,
                       view_zenith=4.6 if east_of_nadir else 6.1,
                       view_azimuth=102.3 if east_of_nadir else 282.7)


@dataclass(frozen=True)
class RenderedScene:
    """One acquisition on the world window: ``bands`` (asset -> int16), ``fmask`` uint8,
    ``angles`` (asset -> uint16), ``valid`` bool (inside the swath)."""

    bands: dict[str, np.ndarray]
    fmask: np.ndarray
    angles: dict[str, np.ndarray]
    valid: np.ndarray


def render_scene(ls: L.Landscape, acq: Acquisition, rng: np.random.Generator) -> RenderedScene:
    """Top-of-canopy reflectance with per-scene and per-pixel noise, clouds, shadows, snow, haze."""
    spec = acq.spec
    shape = ls.landcover.shape
    refl = L.surface_reflectance(ls, spec.doy)
    gain = 1 + 0.03 * rng.standard_normal(len(refl)).astype(np.float32)
    for (k, v), gk in zip(refl.items(), gain, strict=True):
        noise = 1 + 0.04 * rng.standard_normal(shape, dtype=np.float32)
        refl[k] = v * noise * gk + np.float32(rng.normal(0, 25))

    snow = _snow_mask(ls, spec, rng) if spec.snow else np.zeros(shape, bool)
    if snow.any():
        under = np.isin(ls.landcover, (L.NEEDLELEAF, L.BROADLEAF))
        for k, v in zip(L.REFLECTIVE, (8300, 8200, 8000, 7800, 6600, 900, 700), strict=True):
            val = np.where(under, np.float32(0.55 * v), np.float32(v)) if k not in ("B06", "B07") else v
            refl[k] = np.where(snow, val, refl[k])

    aerosol = _aerosol_levels(shape, spec, rng)
    high = aerosol == 3
    for k, add in (("B01", 900), ("B02", 700), ("B03", 380), ("B04", 200)):
        refl[k] = np.where(high, refl[k] + np.float32(add), refl[k])

    cloud, opacity = _clouds(shape, spec, rng)
    dy, dx = _shadow_offset(acq, height_m=float(rng.uniform(1500, 3000)))
    shadow = L.shift(cloud, dy, dx) & ~cloud
    for k in refl:
        refl[k] = np.where(shadow, refl[k] * np.float32(0.32), refl[k])
        cloud_val = np.float32({"B06": 4300, "B07": 3100}.get(k, 6200 if k != "B05" else 6000))
        refl[k] = refl[k] * (1 - opacity) + cloud_val * opacity
    adjacent = L.dilate(cloud | shadow, 4) & ~(cloud | shadow)

    valid = _swath(shape, spec)
    fmask = _fmask(cloud, adjacent, shadow, snow, ls.landcover == L.WATER, aerosol)
    bands = {k: _to_int16(v, valid) for k, v in refl.items()}
    cirrus = 9 + 2 * (rng.random(shape, dtype=np.float32) < 0.15) + 700 * opacity  # dark, except clouds
    bands["B09"] = _to_int16(cirrus, valid)
    t10, t11 = _thermal(ls, spec.doy, opacity, shadow, snow, rng)
    bands["B10"], bands["B11"] = _to_int16(t10, valid), _to_int16(t11, valid)
    fmask[~valid] = FMASK_FILL
    return RenderedScene(bands, fmask, _angles(shape, acq, valid), valid)


def reproject_scene(scene: RenderedScene, src: Grid, dst: Grid) -> RenderedScene:
    """``scene`` (rendered on ``src``) resampled by nearest neighbour onto ``dst`` in another UTM zone, as
    HLS resamples a Landsat scene onto the MGRS tiles of a neighbouring zone; pixels of ``dst`` outside
    ``src`` are outside the swath (bands -9999, Fmask 255, angles 40000)."""
    from rasterio.warp import Resampling, reproject

    def warp(arrays: dict[str, np.ndarray], fill: int) -> dict[str, np.ndarray]:
        stack = np.stack(list(arrays.values()))
        out = np.full((len(arrays), dst.height, dst.width), fill, stack.dtype)
        reproject(stack, out, src_transform=src.affine, src_crs=src.crs, dst_transform=dst.affine,
                  dst_crs=dst.crs, src_nodata=fill, dst_nodata=fill, resampling=Resampling.nearest)
        return dict(zip(arrays, out, strict=True))

    valid = warp({"valid": scene.valid.astype(np.uint8)}, 0)["valid"].astype(bool)
    return RenderedScene(warp(scene.bands, REFL_NODATA), warp({"f": scene.fmask}, FMASK_FILL)["f"],
                         warp(scene.angles, ANGLE_FILL), valid)


def _to_int16(a: np.ndarray, valid: np.ndarray) -> np.ndarray:
    out = np.clip(np.rint(a), -100, 16000).astype(np.int16)
    out[~valid] = REFL_NODATA
    return out


def _clouds(shape: tuple[int, int], spec: SceneSpec, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Cloud mask (Fmask cloud) and opacity 0-1 (thin unflagged edges around the flagged clouds)."""
    f = L.smooth_field(shape, 80, rng, 5)
    if spec.cloud <= 0:
        return np.zeros(shape, bool), np.zeros(shape, np.float32)
    thr = L._quantile(f, 1 - spec.cloud)
    opacity = np.clip((f - thr + 0.35) / 0.9, 0, 1).astype(np.float32) ** 1.5
    cloud = f > thr
    opacity = np.where(cloud, np.maximum(opacity, np.float32(0.55)), opacity * np.float32(0.5))
    return cloud, opacity.astype(np.float32)


def _shadow_offset(acq: Acquisition, height_m: float) -> tuple[int, int]:
    """Pixel offset (rows down, cols right) of a cloud's shadow: away from the sun, h * tan(zenith)."""
    d = height_m * math.tan(math.radians(min(acq.sun_zenith, 80.0))) / 30.0
    az = math.radians(acq.sun_azimuth)
    return int(round(d * math.cos(az))), int(round(-d * math.sin(az)))


def _snow_mask(ls: L.Landscape, spec: SceneSpec, rng: np.random.Generator) -> np.ndarray:
    patch = L.smooth_field(ls.terrain.shape, 12, rng, 2)
    high = ls.terrain + 0.3 * patch > L._quantile(ls.terrain, 0.72)
    return high & (ls.landcover != L.WATER)


def _aerosol_levels(shape: tuple[int, int], spec: SceneSpec, rng: np.random.Generator) -> np.ndarray:
    """Fmask aerosol level 0-3 per pixel (mostly low; 'high' patches only where ``haze`` > 0)."""
    f = L.smooth_field(shape, 60, rng, 2)
    lv = np.ones(shape, np.uint8)
    lv[f < L._quantile(f, 0.06)] = 0
    lv[f > L._quantile(f, 0.75)] = 2
    if spec.haze > 0:
        lv[f > L._quantile(f, 1 - 0.12 * spec.haze)] = 3
    return lv


def _fmask(cloud: np.ndarray, adjacent: np.ndarray, shadow: np.ndarray, snow: np.ndarray,
           water: np.ndarray, aerosol: np.ndarray) -> np.ndarray:
    fm = (aerosol.astype(np.uint8) << 6)
    fm |= cloud.astype(np.uint8) << CLOUD
    fm |= adjacent.astype(np.uint8) << ADJACENT
    fm |= shadow.astype(np.uint8) << SHADOW
    fm |= (snow & ~cloud).astype(np.uint8) << SNOW
    fm |= (water & ~cloud & ~snow).astype(np.uint8) << WATER
    return fm.astype(np.uint8)


def _swath(shape: tuple[int, int], spec: SceneSpec) -> np.ndarray:
    """Inside-swath mask: the swath edge runs ~12 degrees off north (descending Landsat orbit)."""
    if spec.swath_cut == 0:
        return np.ones(shape, bool)
    h, w = shape
    rows = np.arange(h, dtype=np.float32)[:, None]
    cols = np.arange(w, dtype=np.float32)[None, :]
    slope = math.tan(math.radians(12.0))
    if spec.swath_cut > 0:  # east part outside
        edge = w * (1 - spec.swath_cut) + slope * (rows - h / 2)
        return cols < edge
    edge = w * (-spec.swath_cut) + slope * (rows - h / 2)
    return cols >= edge


def _thermal(ls: L.Landscape, doy: int, opacity: np.ndarray, shadow: np.ndarray, snow: np.ndarray,
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Brightness temperature, degrees C x 100: season, cover (forest/water cooler), clouds cold."""
    air = 12 + 13 * math.sin(2 * math.pi * (doy - 110) / 365)
    lc = ls.landcover
    t = np.full(lc.shape, air + 6, np.float32)
    t[np.isin(lc, (L.NEEDLELEAF, L.BROADLEAF))] = air + 1
    t[lc == L.WATER] = air - 3
    t[lc == L.BARE] = air + 12
    t = np.where(snow, np.float32(-4), t) - 3 * shadow + 0.15 * rng.standard_normal(lc.shape, dtype=np.float32)
    t = t * (1 - opacity) + np.float32(-25) * opacity
    return t * 100, t * 100 - 120


def _angles(shape: tuple[int, int], acq: Acquisition, valid: np.ndarray) -> dict[str, np.ndarray]:
    h, w = shape
    cols = np.linspace(-0.5, 0.5, w, dtype=np.float32)[None, :]
    rows = np.linspace(-0.5, 0.5, h, dtype=np.float32)[:, None]
    out = {"SZA": acq.sun_zenith + 0.15 * rows + 0.05 * cols, "SAA": acq.sun_azimuth + 0.3 * cols + 0 * rows,
           "VZA": acq.view_zenith + 0.8 * cols + 0 * rows, "VAA": acq.view_azimuth + 0.05 * rows + 0 * cols}
    res = {}
    for k, v in out.items():
        a = np.rint(np.asarray(v, np.float32) * 100).astype(np.uint16)
        a[~valid] = ANGLE_FILL
        res[k] = a
    return res
