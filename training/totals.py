"""Area totals of biomass and carbon for a map year, and the change between two years, with intervals.

Estimate (Mg AGB): ``T = A * (sum_i p_i + sum_b N_b * m_b)`` over the valid map pixels ``i`` inside the area,
``A`` the pixel area (ha), ``p_i`` the predicted AGB (Mg/ha), ``N_b`` the pixels whose prediction falls in
calibration bin ``b`` and ``m_b`` that bin's mean residual ``label - prediction`` on the calibration split: the
map sum plus a per-bin bias correction (a post-stratified difference estimator); ``bias_correction=False`` drops
the second term. Carbon: ``C = carbon_fraction * T`` (IPCC 2006 AFOLU Vol. 4 default 0.47; its own range is not
propagated). CO2e: ``44/12 * C``.

Interval: ``T +/- z * sqrt(V_random + V_systematic)``, ``z`` the normal quantile of the level.
* ``V_random = A^2 * sum_blocks (sum_{i in block} s_b(i))^2``: each pixel's error has the SD ``s_b`` of its
  bin's calibration residuals; errors are assumed **fully correlated inside square blocks of ``block_m``** and
  independent between blocks. Blocks at 1 pixel would be the (too optimistic) independent-pixel model; one block
  over the whole area the (conservative) fully correlated bound: both are reported as ``sd_bounds``.
* ``V_systematic = A^2 * (sum_b N_b * se_b)^2``: the uncertainty of the bias correction, ``se_b`` the
  cluster-robust standard error of ``m_b`` (clusters = chips), fully correlated over the area.
Assumptions, stated plainly: the calibration residuals (against GEDI-like labels) represent the map's errors
everywhere in the area (spatial exchangeability); their SD includes GEDI's own footprint error, which makes the
random part conservative; a bias of GEDI L4A itself against the true AGB is not seen and not included.

Tiles: pixels of overlapping MGRS tiles are counted once, by the project's one rule (:func:`core.grid.owned_mask`):
the tile whose 100 km MGRS square (and UTM zone) holds the pixel centre, or, when that tile was not mapped, the
first mapped tile in name order that covers it. ``aoi`` (lon/lat geometry) limits the total to pixels whose centres fall inside it.

Change ``D = T2 - T1``: ``V_random(D) = V_random1 + V_random2`` (the two years' random errors independent:
conservative when they are positively correlated, as errors of one model at one place usually are); with the
same calibration, ``V_systematic(D) = A^2 * (sum_b (N2_b - N1_b) * se_b)^2`` (the same bin biases act in both
years and cancel where the bin counts do not change); with different calibrations both systematic parts add.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
import rasterio

from core.contracts import Contract
from training.uncertainty import Calibration

IPCC_CARBON_FRACTION = 0.47  # IPCC 2006 Guidelines, Vol. 4 Ch. 4, Table 4.3 (default carbon fraction of dry matter)
CO2_PER_C = 44.0 / 12.0


class TotalsError(ValueError):
    """Maps or calibration that cannot be totalled."""


@dataclass(frozen=True)
class TotalsOptions(Contract):
    """``carbon_fraction``: Mg C per Mg dry biomass; ``level``: interval level of totals and change;
    ``block_m``: side (m) of the blocks inside which pixel errors are taken as fully correlated;
    ``bias_correction``: add the calibration's per-bin mean residuals to the map sum."""

    carbon_fraction: float = IPCC_CARBON_FRACTION
    level: float = 0.9
    block_m: float = 1000.0
    bias_correction: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.carbon_fraction <= 1:
            raise TotalsError(f"carbon_fraction must be in (0, 1], got {self.carbon_fraction}")
        if not 0.5 <= self.level < 1:
            raise TotalsError(f"level must be in [0.5, 1), got {self.level}")
        if self.block_m <= 0:
            raise TotalsError(f"block_m must be positive, got {self.block_m}")


@dataclass(frozen=True)
class Estimate(Contract):
    """A quantity (Mg) with its standard deviation and interval ``[lower, upper]`` at ``level``."""

    value: float
    sd: float
    lower: float
    upper: float
    level: float

    @classmethod
    def of(cls, value: float, sd: float, level: float) -> Estimate:
        z = NormalDist().inv_cdf(0.5 + level / 2.0)
        return cls(value=value, sd=sd, lower=value - z * sd, upper=value + z * sd, level=level)

    def scaled(self, factor: float) -> Estimate:
        return Estimate(value=self.value * factor, sd=self.sd * factor, lower=self.lower * factor,
                        upper=self.upper * factor, level=self.level)


@dataclass(frozen=True)
class _Accumulator:
    """Running sums over tiles (plain floats and per-bin pixel counts)."""

    pixels: int
    map_sum: float        # sum of p_i (Mg/ha)
    block_var: float      # sum over blocks of (sum s_i)^2
    indep_var: float      # sum of s_i^2
    sd_sum: float         # sum of s_i
    per_bin: tuple[int, ...]
    area_ha: float        # pixel area


@dataclass(frozen=True)
class AreaTotal(Contract):
    """Totals of one map year (see the module docstring for the method and its assumptions)."""

    year: str
    maps: list[str]
    pixels: int
    pixel_area_ha: float
    area_ha: float
    map_sum_mg: float
    bias_adjustment_mg: float
    agb_mg: Estimate
    carbon_mg: Estimate
    co2e_mg: Estimate
    mean_agb_mg_ha: float
    sd_random_mg: float
    sd_systematic_mg: float
    sd_bounds: dict[str, float]
    pixels_per_bin: list[int]
    carbon_fraction: float
    block_m: float
    calibration: str
    calibration_digest: str
    method: str = "map sum + per-bin bias correction; block-correlated random + systematic bias error"


@dataclass(frozen=True)
class TotalChange(Contract):
    """Change ``to_year - from_year`` of the totals (Mg), with its interval."""

    from_year: str
    to_year: str
    agb_mg: Estimate
    carbon_mg: Estimate
    co2e_mg: Estimate
    sd_random_mg: float
    sd_systematic_mg: float
    same_calibration: bool
    method: str = "difference of totals; random parts independent between years; shared bin biases"


def _aoi_mask(aoi: Any, transform: Any, shape: tuple[int, int], crs: Any) -> np.ndarray | None:
    if aoi is None:
        return None
    from rasterio.features import geometry_mask
    from rasterio.warp import transform_geom
    from shapely.geometry import mapping

    from core.area import parse_aoi

    geom = transform_geom("EPSG:4326", crs, mapping(parse_aoi(aoi)))
    return geometry_mask([geom], out_shape=shape, transform=transform, invert=True)


def _map_tile(path: str) -> str:
    with rasterio.open(path) as ds:
        return ds.tags().get("MGRS_TILE", "")


def _tile_sums(path: str, cal: Calibration, block_m: float, aoi: Any, tiles: list[str]) -> _Accumulator:
    """Sums of one map (band 1 = AGB Mg/ha) over its valid pixels inside the AOI that its tile owns among
    ``tiles`` (:func:`core.grid.owned_mask`), read in strips of whole blocks (bounded memory)."""
    from affine import Affine
    from rasterio.windows import Window

    from core.grid import owned_mask

    with rasterio.open(path) as ds:
        nodata, crs, tile = ds.nodata, ds.crs, ds.tags().get("MGRS_TILE", "")
        if crs is None or not crs.is_projected:
            raise TotalsError(f"{path}: a projected CRS in metres is needed for areas, got {crs}")
        block = max(1, int(round(block_m / abs(ds.transform.a))))
        step = block * max(1, 1024 // block)
        acc = [0, 0.0, 0.0, 0.0, 0.0, np.zeros(len(cal.bins), np.int64)]
        for r0 in range(0, ds.height, step):
            win = Window(0, r0, ds.width, min(step, ds.height - r0))
            agb = ds.read(1, window=win).astype(np.float64)
            valid = np.isfinite(agb) & ((agb != nodata) if nodata is not None else True)
            t = ds.transform
            tr = Affine(t.a, t.b, t.c, t.d, t.e, t.f + t.e * r0)
            for mask in (owned_mask(tr, agb.shape, crs, tile, tiles), _aoi_mask(aoi, tr, agb.shape, crs)):
                if mask is not None:
                    valid &= mask
            _add_strip(acc, agb, valid, cal, block)
        area = abs(ds.transform.a * ds.transform.e) / 10_000.0
    return _Accumulator(pixels=int(acc[0]), map_sum=acc[1], block_var=acc[2], indep_var=acc[3], sd_sum=acc[4],
                        per_bin=tuple(int(v) for v in acc[5]), area_ha=area)


def _add_strip(acc: list[Any], agb: np.ndarray, valid: np.ndarray, cal: Calibration, block: int) -> None:
    """Add one strip (rows a multiple of ``block``, except the last) to the running sums ``acc``."""
    idx = cal.bin_index(np.where(valid, agb, 0.0))
    sd = np.where(valid, np.asarray([b.residual_sd for b in cal.bins], np.float64)[idx], 0.0)
    h, w = sd.shape
    pad = np.zeros((math.ceil(h / block) * block, math.ceil(w / block) * block))
    pad[:h, :w] = sd
    block_sums = pad.reshape(pad.shape[0] // block, block, pad.shape[1] // block, block).sum(axis=(1, 3))
    acc[0] += int(valid.sum())
    acc[1] += float(agb[valid].sum())
    acc[2] += float(np.sum(block_sums**2))
    acc[3] += float(np.sum(sd**2))
    acc[4] += float(sd.sum())
    acc[5] += np.bincount(idx[valid], minlength=len(cal.bins))


def area_totals(*, maps: list[str], calibration: str, year: str | int, aoi: Any = None,
                options: TotalsOptions = TotalsOptions()) -> AreaTotal:
    """Totals (Mg AGB, Mg C, Mg CO2e) with intervals over the maps of one year (see module docstring)."""
    if not maps:
        raise TotalsError(f"no map to total for year {year}")
    cal = Calibration.read(calibration)
    tiles = [_map_tile(m) for m in maps]
    parts = [_tile_sums(m, cal, options.block_m, aoi, tiles) for m in maps]
    areas = {round(p.area_ha, 9) for p in parts}
    if len(areas) != 1:
        raise TotalsError(f"maps of year {year} have different pixel areas {sorted(areas)} ha: {maps}")
    a = parts[0].area_ha
    per_bin = np.sum([p.per_bin for p in parts], axis=0)
    m = np.asarray([b.residual_mean for b in cal.bins])
    se = np.asarray([b.mean_se for b in cal.bins])
    map_sum = a * sum(p.map_sum for p in parts)
    bias = a * float(per_bin @ m) if options.bias_correction else 0.0
    sd_rand = a * math.sqrt(sum(p.block_var for p in parts))
    sd_sys = a * float(per_bin @ se)
    agb = Estimate.of(map_sum + bias, math.hypot(sd_rand, sd_sys), options.level)
    pixels = sum(p.pixels for p in parts)
    bounds = {"independent_pixels": math.hypot(a * math.sqrt(sum(p.indep_var for p in parts)), sd_sys),
              "fully_correlated": a * sum(p.sd_sum for p in parts) + sd_sys}
    carbon = agb.scaled(options.carbon_fraction)
    return AreaTotal(year=str(year), maps=[str(x) for x in maps], pixels=pixels, pixel_area_ha=a,
                     area_ha=a * pixels, map_sum_mg=map_sum, bias_adjustment_mg=bias, agb_mg=agb, carbon_mg=carbon,
                     co2e_mg=carbon.scaled(CO2_PER_C), mean_agb_mg_ha=agb.value / (a * pixels) if pixels else 0.0,
                     sd_random_mg=sd_rand, sd_systematic_mg=sd_sys, sd_bounds=bounds,
                     pixels_per_bin=[int(v) for v in per_bin], carbon_fraction=options.carbon_fraction,
                     block_m=options.block_m, calibration=str(calibration), calibration_digest=cal.digest())


def total_change(before: AreaTotal, after: AreaTotal, *, level: float | None = None) -> TotalChange:
    """Change ``after - before`` with its interval (see module docstring); ``level`` defaults to ``after``'s."""
    if abs(before.pixel_area_ha - after.pixel_area_ha) > 1e-9:
        raise TotalsError(f"years {before.year} and {after.year} have different pixel areas")
    level = level if level is not None else after.agb_mg.level
    same = before.calibration_digest == after.calibration_digest
    if same:
        cal = Calibration.read(after.calibration)
        se = np.asarray([b.mean_se for b in cal.bins])
        diff = np.asarray(after.pixels_per_bin) - np.asarray(before.pixels_per_bin)
        sd_sys = after.pixel_area_ha * abs(float(diff @ se))
    else:
        sd_sys = math.hypot(before.sd_systematic_mg, after.sd_systematic_mg)
    sd_rand = math.hypot(before.sd_random_mg, after.sd_random_mg)
    agb = Estimate.of(after.agb_mg.value - before.agb_mg.value, math.hypot(sd_rand, sd_sys), level)
    if abs(before.carbon_fraction - after.carbon_fraction) > 1e-12:
        raise TotalsError(f"years {before.year} and {after.year} use different carbon fractions")
    carbon = agb.scaled(after.carbon_fraction)
    return TotalChange(from_year=before.year, to_year=after.year, agb_mg=agb, carbon_mg=carbon,
                       co2e_mg=carbon.scaled(CO2_PER_C), sd_random_mg=sd_rand, sd_systematic_mg=sd_sys,
                       same_calibration=same)


def totals_table(totals: list[AreaTotal], changes: list[TotalChange], path: str | Path) -> Path:
    """Write a CSV of the totals and changes (Mg; interval bounds at each row's level), atomically."""
    from core.files import atomic_path

    header = "kind,year,from_year,to_year,quantity,value_mg,sd_mg,lower_mg,upper_mg,level\n"
    rows = []
    for t in totals:
        for name, e in (("agb", t.agb_mg), ("carbon", t.carbon_mg), ("co2e", t.co2e_mg)):
            rows.append(f"total,{t.year},,,{name},{e.value:.6g},{e.sd:.6g},{e.lower:.6g},{e.upper:.6g},{e.level:g}")
    for c in changes:
        for name, e in (("agb", c.agb_mg), ("carbon", c.carbon_mg), ("co2e", c.co2e_mg)):
            rows.append(f"change,,{c.from_year},{c.to_year},{name},{e.value:.6g},{e.sd:.6g},{e.lower:.6g},"
                        f"{e.upper:.6g},{e.level:g}")
    with atomic_path(path) as tmp:
        tmp.write_text(header + "\n".join(rows) + "\n")
    return Path(path)
