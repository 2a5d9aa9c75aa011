"""The synthetic landscape: smooth random fields, land cover, true AGB and surface reflectance.

Everything is float32 numpy on the world window (rows x cols of 30 m pixels). Reflectance is in HLS
units (reflectance x 10000); AGB in Mg/ha. Land-cover codes (``truth/landcover.tif``, uint8, 255 = none):
1 evergreen needleleaf forest, 2 deciduous broadleaf forest, 3 shrub, 4 grass, 5 crop, 6 water, 7 bare.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

NEEDLELEAF, BROADLEAF, SHRUB, GRASS, CROP, WATER, BARE = 1, 2, 3, 4, 5, 6, 7
LANDCOVER_NODATA = 255
LANDCOVER_NAMES = {NEEDLELEAF: "evergreen needleleaf forest", BROADLEAF: "deciduous broadleaf forest",
                   SHRUB: "shrub", GRASS: "grass", CROP: "crop", WATER: "water", BARE: "bare"}
# GEDI L4A pft_class (MODIS MCD12Q1 LC_Type5 codes) of each land-cover class.
PFT_OF_CLASS = {NEEDLELEAF: 1, BROADLEAF: 4, SHRUB: 5, GRASS: 6, CROP: 7, WATER: 0, BARE: 11}

REFLECTIVE = ("B01", "B02", "B03", "B04", "B05", "B06", "B07")


@dataclass(frozen=True)
class Landscape:
    """Static truth of a world window: ``landcover`` uint8, ``agb`` float32 Mg/ha (>= 0, no nodata) and
    the latent fields the reflectance model uses (``terrain``, ``soil`` brightness, crop ``parcel`` phase)."""

    landcover: np.ndarray
    agb: np.ndarray
    terrain: np.ndarray
    soil: np.ndarray
    parcel_phase: np.ndarray


def smooth_field(shape: tuple[int, int], scale_px: float, rng: np.random.Generator,
                 octaves: int = 3) -> np.ndarray:
    """Zero-mean, unit-variance float32 random field with features of about ``scale_px`` pixels.

    Sum of ``octaves`` bilinearly upsampled Gaussian noise grids (spacing halves, weight halves).
    """
    h, w = shape
    out = np.zeros(shape, np.float32)
    weight = 1.0
    s = float(scale_px)
    for _ in range(octaves):
        out += weight * _upsampled_noise(h, w, max(s, 1.5), rng)
        weight *= 0.5
        s /= 2.0
    out -= out.mean(dtype=np.float64)
    sd = float(out.std(dtype=np.float64))
    return out / np.float32(sd if sd > 0 else 1.0)


def _upsampled_noise(h: int, w: int, s: float, rng: np.random.Generator) -> np.ndarray:
    hc, wc = int(math.ceil(h / s)) + 2, int(math.ceil(w / s)) + 2
    coarse = rng.standard_normal((hc, wc), dtype=np.float32)
    phase_y, phase_x = rng.random(2)
    ry = (np.arange(h, dtype=np.float32) / np.float32(s)) + np.float32(phase_y)
    rx = (np.arange(w, dtype=np.float32) / np.float32(s)) + np.float32(phase_x)
    iy, ix = ry.astype(np.int64), rx.astype(np.int64)
    fy, fx = (ry - iy)[:, None], (rx - ix)[None, :]
    rows = coarse[iy, :] * (1 - fy) + coarse[iy + 1, :] * fy
    return (rows[:, ix] * (1 - fx) + rows[:, ix + 1] * fx).astype(np.float32)


def _quantile(a: np.ndarray, q: float) -> np.float32:
    sample = a.ravel()[:: max(1, a.size // 250_000)]
    return np.float32(np.quantile(sample, q))


def make_landscape(shape: tuple[int, int], rng: np.random.Generator) -> Landscape:
    """Land-cover patches from smooth fields and the true AGB field (Mg/ha, forest up to ~400)."""
    terrain = smooth_field(shape, 70, rng, 4)
    use = smooth_field(shape, 90, rng, 3)
    vegtype = smooth_field(shape, 45, rng, 3)
    lc = np.full(shape, SHRUB, np.uint8)
    lc[vegtype < 0] = GRASS
    forest = use < _quantile(use, 0.55)
    lc[forest] = NEEDLELEAF
    lc[forest & (vegtype > _quantile(vegtype, 0.7))] = BROADLEAF
    lc[(use > _quantile(use, 0.84)) & ~forest] = CROP
    lc[terrain > _quantile(terrain, 0.965)] = BARE
    lc[terrain < _quantile(terrain, 0.04)] = WATER

    stand = smooth_field(shape, 28, rng, 3) + 0.45 * smooth_field(shape, 5, rng, 2)
    sig = 1.0 / (1.0 + np.exp(-(1.3 * stand + 0.6)))
    agb = np.zeros(shape, np.float32)
    fmask = lc == NEEDLELEAF
    agb[fmask] = 40 + 360 * sig[fmask]
    bmask = lc == BROADLEAF
    agb[bmask] = 30 + 260 * sig[bmask]
    for cls, base, amp in ((SHRUB, 12, 35), (GRASS, 2, 6), (CROP, 1, 4)):
        m = lc == cls
        agb[m] = base + amp * sig[m]
    texture = 1 + 0.12 * rng.standard_normal(shape, dtype=np.float32)
    agb = np.clip(agb * texture, 0, 450).astype(np.float32)

    soil = smooth_field(shape, 22, rng, 2)
    parcels = rng.random((shape[0] // 16 + 2, shape[1] // 16 + 2), dtype=np.float32)
    off = rng.integers(0, 16, 2)
    yy = (np.arange(shape[0]) + off[0]) // 16
    xx = (np.arange(shape[1]) + off[1]) // 16
    parcel_phase = parcels[yy][:, xx]
    return Landscape(lc, agb, terrain, soil, parcel_phase)


def clear_cut(ls: Landscape, disc: np.ndarray) -> Landscape:
    """``ls`` with the forest inside ``disc`` (bool mask) cut: grass, 2-8 Mg/ha (from the parcel field)."""
    cut = disc & np.isin(ls.landcover, (NEEDLELEAF, BROADLEAF))
    lc = np.where(cut, np.uint8(GRASS), ls.landcover)
    agb = np.where(cut, (2 + 6 * ls.parcel_phase).astype(np.float32), ls.agb).astype(np.float32)
    return Landscape(lc, agb, ls.terrain, ls.soil, ls.parcel_phase)


def greenness(doy: int, peak: float = 185.0, width: float = 55.0) -> float:
    """Leaf-on phenology, 0 (leaf-off) .. 1 (peak), for deciduous vegetation."""
    return float(math.exp(-0.5 * ((doy - peak) / width) ** 2))


def surface_reflectance(ls: Landscape, doy: int) -> dict[str, np.ndarray]:
    """Noise-free surface reflectance (x 10000, float32) of the 7 reflective bands on ``doy``.

    Forest red/SWIR fall and NIR rises with AGB, saturating (``1 - exp(-agb/150)``); deciduous broadleaf,
    grass and crops follow phenology; a smooth soil-brightness field shows through sparse canopies (a
    pixel-wise confounder that neighbouring open land reveals).
    """
    lc, agb = ls.landcover, ls.agb
    sat = (1.0 - np.exp(-agb / np.float32(150.0))).astype(np.float32)
    g = np.float32(greenness(doy))
    crop_g = np.exp(-0.5 * ((doy - (150 + 80 * ls.parcel_phase)) / 30.0) ** 2).astype(np.float32)
    grass_g = np.float32(greenness(doy, peak=130, width=50))
    # (blue, green, red, nir, swir1, swir2) as functions of class; start from shrub.
    blue = np.full(lc.shape, 520, np.float32)
    green = np.full(lc.shape, 780, np.float32)
    red = np.full(lc.shape, 900, np.float32)
    nir = np.full(lc.shape, 2300, np.float32)
    sw1 = np.full(lc.shape, 2700, np.float32)
    sw2 = np.full(lc.shape, 1800, np.float32)

    def put(mask: np.ndarray, vals: tuple) -> None:
        for arr, v in zip((blue, green, red, nir, sw1, sw2), vals, strict=True):
            arr[mask] = v[mask] if isinstance(v, np.ndarray) else v

    shrub = lc == SHRUB
    put(shrub, (520 - 60 * sat, 780 - 80 * sat, 900 - 250 * sat, 2300 + 300 * sat, 2700 - 600 * sat,
                1800 - 500 * sat))
    gm = lc == GRASS
    put(gm, (480, 760 + 120 * grass_g, 1100 - 550 * grass_g, 2100 + 1200 * grass_g, 3000 - 700 * grass_g,
             2300 - 800 * grass_g))
    cm = lc == CROP
    put(cm, (560 - 200 * crop_g, 820 - 120 * crop_g, 1200 - 850 * crop_g, 1900 + 2400 * crop_g,
             2900 - 900 * crop_g, 2200 - 1100 * crop_g))
    nm = lc == NEEDLELEAF
    put(nm, (430 - 220 * sat, 700 - 360 * sat, 650 - 470 * sat, 2200 + 500 * sat, 2300 - 1250 * sat,
             1500 - 1000 * sat))
    bm = lc == BROADLEAF
    leaf = g * sat
    put(bm, (450 - 200 * leaf, 720 - 250 * leaf, 800 - 560 * leaf, 1700 + 1700 * leaf, 2500 - 1100 * leaf,
             1700 - 1050 * leaf))
    put(lc == WATER, (550, 480, 330, 160, 70, 45))
    put(lc == BARE, (1500, 1750, 2050, 2500, 3300, 2900))

    open_frac = np.where(lc == WATER, 0.0, 1.0 - 0.85 * sat).astype(np.float32)
    bright = (1 + 0.18 * ls.soil * open_frac).astype(np.float32)
    out = {"B02": blue, "B03": green, "B04": red, "B05": nir, "B06": sw1, "B07": sw2}
    for k in out:
        out[k] *= bright
    out["B01"] = blue * np.float32(1.06) + np.float32(60)
    return out


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation of a bool mask by a (2r+1) square, separable running-sum (no scipy)."""
    if radius <= 0:
        return mask.copy()
    out = _dilate_axis(mask, radius, 0)
    return _dilate_axis(out, radius, 1)


def _dilate_axis(mask: np.ndarray, r: int, axis: int) -> np.ndarray:
    m = np.moveaxis(mask, axis, 0).astype(np.int32)
    c = np.concatenate([np.zeros((1,) + m.shape[1:], np.int32), np.cumsum(m, axis=0, dtype=np.int32)])
    n = m.shape[0]
    hi = np.minimum(np.arange(n) + r + 1, n)
    lo = np.maximum(np.arange(n) - r, 0)
    res = (c[hi] - c[lo]) > 0
    return np.moveaxis(res, 0, axis)


def shift(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``mask`` moved by (dy, dx) pixels (rows down, cols right), zero-filled at the edges."""
    out = np.zeros_like(mask)
    h, w = mask.shape
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    if abs(dy) < h and abs(dx) < w:
        out[yd, xd] = mask[ys, xs]
    return out
