"""Biomass change between two years' maps: ``compute_change`` is the engine behind the pipeline's change step.

For each MGRS tile mapped in both years: a difference raster ``<output_dir>/<TILE>_change.tif`` (float32
COG, Mg/ha, ``to - from``, nodata -9999 wherever either map is nodata or the pixel is outside the area)
on the maps' grid, and one table row. Per tile and for the whole area: pixels in the area, pixels valid in
both years, pixels nodata in either year, mean AGB of both years and mean change (Mg/ha, over pixels valid
in both), totals (Mg = sum of Mg/ha x pixel area in ha, over the same pixels) and counts of pixels that
lost or gained more than ``loss_threshold`` Mg/ha. The area row counts a ground pixel once where tiles
overlap, by the project's one rule (:func:`core.grid.owned_mask`: the tile whose 100 km MGRS square holds the
pixel, else the first tile in name order that covers it; also across UTM zones); maps named by something
other than an MGRS tile id count every pixel.
Writes ``change.json`` (the result) and ``change.csv`` (the table) in ``output_dir``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio

from core.constants import AGB_UNITS, IMAGE_NODATA
from core.contracts import Contract
from core.files import atomic_path, write_json_atomic
from core.grid import owned_mask

CHANGE_NODATA = IMAGE_NODATA
M2_PER_HA = 10_000.0


class ChangeError(ValueError):
    """Maps that cannot be compared (names the files and what differs)."""


@dataclass(frozen=True)
class ChangeOptions(Contract):
    """``loss_threshold``: Mg/ha; a pixel whose AGB fell (rose) by more counts as loss (gain). Two maps of
    one model differ per pixel by noise too (sd 20-23 Mg/ha between the demo's years where nothing changed):
    keep the threshold well above it."""

    loss_threshold: float = 100.0


@dataclass(frozen=True)
class ChangeStats(Contract):
    """One row of the change table (Mg/ha means over pixels valid in both years; totals in Mg)."""

    n_area: int
    n_valid: int
    n_nodata_from: int
    n_nodata_to: int
    mean_from: float | None
    mean_to: float | None
    mean_change: float | None
    total_from_mg: float
    total_to_mg: float
    total_change_mg: float
    n_loss: int
    n_gain: int
    area_valid_ha: float


@dataclass(frozen=True)
class ChangeResult(Contract):
    """Change ``year_from`` -> ``year_to``: per-tile rasters and rows, and the area row."""

    year_from: int
    year_to: int
    rasters: dict[str, str]
    tiles: dict[str, ChangeStats]
    area: ChangeStats
    loss_threshold: float
    table_csv: str
    table_json: str
    units: str
    notes: list[str]


@dataclass
class _Acc:
    n_area: int = 0
    n_valid: int = 0
    n_nodata_from: int = 0
    n_nodata_to: int = 0
    sum_from: float = 0.0
    sum_to: float = 0.0
    n_loss: int = 0
    n_gain: int = 0
    px_ha: float = 0.09

    def add(self, a: np.ndarray, b: np.ndarray, area: np.ndarray, va: np.ndarray, vb: np.ndarray,
            threshold: float) -> None:
        both = area & va & vb
        d = b[both].astype(np.float64) - a[both]
        self.n_area += int(area.sum())
        self.n_valid += int(both.sum())
        self.n_nodata_from += int((area & ~va).sum())
        self.n_nodata_to += int((area & ~vb).sum())
        self.sum_from += float(a[both].sum(dtype=np.float64))
        self.sum_to += float(b[both].sum(dtype=np.float64))
        self.n_loss += int((d < -threshold).sum())
        self.n_gain += int((d > threshold).sum())

    def stats(self) -> ChangeStats:
        n = self.n_valid

        def mean(v: float) -> float | None:
            return round(v / n, 4) if n else None

        return ChangeStats(
            n_area=self.n_area, n_valid=n, n_nodata_from=self.n_nodata_from, n_nodata_to=self.n_nodata_to,
            mean_from=mean(self.sum_from), mean_to=mean(self.sum_to), mean_change=mean(self.sum_to - self.sum_from),
            total_from_mg=round(self.sum_from * self.px_ha, 2), total_to_mg=round(self.sum_to * self.px_ha, 2),
            total_change_mg=round((self.sum_to - self.sum_from) * self.px_ha, 2), n_loss=self.n_loss,
            n_gain=self.n_gain, area_valid_ha=round(n * self.px_ha, 4))


def _area_mask(aoi: Any, ds: Any) -> np.ndarray:
    """Pixels of ``ds``'s grid whose centre lies in the AOI (all pixels when ``aoi`` is None)."""
    if aoi is None:
        return np.ones((ds.height, ds.width), bool)
    import shapely
    from pyproj import Transformer
    from rasterio.features import geometry_mask

    from core.area import parse_aoi

    geom = parse_aoi(aoi).segmentize(0.005)  # degrees: projected edges follow the curve
    to_grid = Transformer.from_crs("EPSG:4326", ds.crs, always_xy=True)
    projected = shapely.transform(geom, lambda xy: np.column_stack(to_grid.transform(xy[:, 0], xy[:, 1])))
    return geometry_mask([projected], out_shape=(ds.height, ds.width), transform=ds.transform, invert=True)


def _read_pair(path_from: str, path_to: str) -> tuple[np.ndarray, np.ndarray, Any]:
    with rasterio.open(path_from) as a, rasterio.open(path_to) as b:
        same = (a.crs == b.crs and a.shape == b.shape
                and np.allclose(tuple(a.transform)[:6], tuple(b.transform)[:6], atol=1e-6))
        if not same:
            raise ChangeError(f"{path_to} is not on the grid of {path_from} ({b.crs} {b.shape} {b.transform} vs "
                              f"{a.crs} {a.shape} {a.transform}): maps of one tile must share the composite grid")
        arr_a, arr_b = a.read(1), b.read(1)
        va = np.isfinite(arr_a) & (arr_a != (a.nodata if a.nodata is not None else CHANGE_NODATA)) & (arr_a >= 0)
        vb = np.isfinite(arr_b) & (arr_b != (b.nodata if b.nodata is not None else CHANGE_NODATA)) & (arr_b >= 0)
        return np.stack([arr_a, arr_b]), np.stack([va, vb]), a.profile | {"res": a.res}


def _write_cog(dst: Path, data: np.ndarray, profile: dict[str, Any], tags: dict[str, str]) -> None:
    """One float32 band ``agb_change`` (Mg/ha) as a deflate COG with 256 px blocks, written atomically."""
    import rasterio.shutil

    with atomic_path(dst) as tmp:
        gtiff = tmp.with_name(tmp.name + ".gtiff")
        try:
            with rasterio.open(gtiff, "w", driver="GTiff", count=1, dtype="float32", nodata=CHANGE_NODATA,
                               width=profile["width"], height=profile["height"], crs=profile["crs"],
                               transform=profile["transform"], tiled=True, blockxsize=256, blockysize=256) as ds:
                ds.write(data[None])
                ds.set_band_description(1, "agb_change")
                ds.update_tags(**tags)
                ds.update_tags(1, UNITS=AGB_UNITS)
            rasterio.shutil.copy(str(gtiff), str(tmp), driver="COG", COMPRESS="DEFLATE", PREDICTOR="YES",
                                 BLOCKSIZE=256, OVERVIEW_RESAMPLING="AVERAGE")
        finally:
            gtiff.unlink(missing_ok=True)


def _table(rows: Mapping[str, ChangeStats]) -> str:
    buf = io.StringIO()
    fields = list(ChangeStats.__dataclass_fields__)
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["tile", *fields])
    for name, st in rows.items():
        d = st.to_dict()
        w.writerow([name, *("" if d[f] is None else d[f] for f in fields)])
    return buf.getvalue()


def compute_change(*, maps_from: Mapping[str, str], maps_to: Mapping[str, str], year_from: int, year_to: int,
                   output_dir: str, aoi: Any = None, options: ChangeOptions = ChangeOptions()) -> ChangeResult:
    """Difference rasters and the change table of two years' maps (``{tile: map COG}`` each, Mg/ha).

    ``aoi`` (lon/lat bbox, GeoJSON or file) limits the statistics and rasters to the area; None: whole maps.
    """
    out = Path(output_dir)
    common = sorted(set(maps_from) & set(maps_to))
    if not common:
        raise ChangeError(f"no tile mapped in both {year_from} ({sorted(maps_from)}) and {year_to} ({sorted(maps_to)})")
    notes = [f"tile {t} mapped in only one of the years: not compared"
             for t in sorted(set(maps_from) ^ set(maps_to))]
    rasters, rows, area = {}, {}, _Acc()
    for tile in common:
        arrs, valid, prof = _read_pair(maps_from[tile], maps_to[tile])
        res = float(prof["res"][0])
        with rasterio.open(maps_from[tile]) as ds:
            in_area = _area_mask(aoi, ds)
        acc = _Acc(px_ha=res * res / M2_PER_HA)
        acc.add(arrs[0], arrs[1], in_area, valid[0], valid[1], options.loss_threshold)
        rows[tile] = acc.stats()
        diff = np.where(in_area & valid[0] & valid[1], arrs[1] - arrs[0], CHANGE_NODATA).astype(np.float32)
        dst = out / f"{tile}_change.tif"
        _write_cog(dst, diff, prof, {"YEAR_FROM": str(year_from), "YEAR_TO": str(year_to), "UNITS": AGB_UNITS,
                                     "QUANTITY": "above-ground biomass change (to - from)",
                                     "MAP_FROM": maps_from[tile], "MAP_TO": maps_to[tile], "MGRS_TILE": tile})
        rasters[tile] = str(dst)
        area.px_ha = acc.px_ha
        owned = owned_mask(prof["transform"], in_area.shape, prof["crs"], tile, common)
        area.add(arrs[0], arrs[1], in_area if owned is None else in_area & owned, valid[0], valid[1],
                 options.loss_threshold)
    result = ChangeResult(year_from=year_from, year_to=year_to, rasters=rasters, tiles=rows, area=area.stats(),
                          loss_threshold=options.loss_threshold, table_csv=str(out / "change.csv"),
                          table_json=str(out / "change.json"), units=AGB_UNITS, notes=notes)
    with atomic_path(out / "change.csv") as tmp:
        tmp.write_text(_table({**rows, "area": result.area}))
    write_json_atomic(out / "change.json", result.to_dict())
    return result
