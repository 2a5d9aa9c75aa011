"""Cutting chips: read each source in strips of rows, filter chips, write them under temporary names."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.windows import Window

from chips import esri
from chips.bandlayout import BandLayout
from chips.geotiff import write_geotiff
from chips.lattice import grid_lattice_origin
from chips.sources import ChipExportError, Source
from chips.stats import chip_band_stats, values_stats
from core.constants import AGB_UNITS, IMAGE_NODATA

if TYPE_CHECKING:
    from chips.params import ChipParams

ESRI_NAME_DIGITS = 12  # as the real ArcGIS export: 000000000000.tif
JOB_ROWS = 1024  # pixel rows read by one worker job


@dataclass
class Chip:
    """One exported chip (index = Esri number). ``bounds`` in the source CRS, metres."""

    index: int
    source: int
    row: int
    col: int
    block: tuple[int, int, int]
    n_labeled: int
    nodata_fraction: float
    bounds: tuple[float, float, float, float]
    split: str = ""
    stats: Any = field(default=None, repr=False)
    label_stats: Any = field(default=None, repr=False)


@dataclass(frozen=True)
class Out:
    images: Path
    labels: Path
    epsg: int
    image_descriptions: tuple[str, ...]
    label_nodata: float
    tfw: bool
    writer: str = "fast"
    layout: BandLayout | None = None  # file band order of image chips (None: as read)


def _write_tif(out: Out, path: Path, arr: np.ndarray, transform: Any, nodata: float,
               descriptions: Sequence[str], units: Sequence[str] = ()) -> None:
    """An uncompressed float32 GeoTIFF chip (band-interleaved), by chips.geotiff or rasterio."""
    if out.writer == "fast":
        write_geotiff(path, arr, out.epsg, tuple(transform)[:6], nodata, descriptions, units)
        return
    with rasterio.open(path, "w", driver="GTiff", width=arr.shape[2], height=arr.shape[1], count=arr.shape[0],
                       dtype="float32", crs=CRS.from_epsg(out.epsg), transform=transform, nodata=nodata,
                       interleave="band") as ds:
        ds.write(arr)
        ds.descriptions = tuple(descriptions)
        if units:
            ds.units = tuple(units)


def _write_chip(out: Out, name: str, img: np.ndarray, lab: np.ndarray, transform: Any) -> None:
    """Write one image/label chip pair (+ .tfw world files for the Esri layout); label unit type Mg/ha."""
    if out.layout is not None:
        img = out.layout.expand(img)
    _write_tif(out, out.images / f"{name}.tif", img, transform, IMAGE_NODATA, out.image_descriptions)
    _write_tif(out, out.labels / f"{name}.tif", lab[None], transform, out.label_nodata, ("agbd",), (AGB_UNITS,))
    if out.tfw:
        esri.write_tfw(out.images / f"{name}.tfw", tuple(transform))
        esri.write_tfw(out.labels / f"{name}.tfw", tuple(transform))


def _read_strip(c: Any, la: Any, src: Source, win: Window, label_nodata: float) -> tuple[np.ndarray, ...]:
    """Image (bands, h, w) with -9999 for nodata/NaN, label values, label-valid and image-nodata masks (h, w)."""
    img = c.read(list(src.image_bands), window=win, out_dtype="float32")
    bad = ~np.isfinite(img)
    if src.image_nodata is not None and np.isfinite(src.image_nodata) and src.image_nodata != IMAGE_NODATA:
        bad |= img == src.image_nodata
    if bad.any():
        img[bad] = IMAGE_NODATA
    agbd = la.read(1, window=win, out_dtype="float32")
    valid = np.isfinite(agbd) & (agbd >= 0)  # AGBD is never negative: -1 fills count as unlabelled too
    if src.label_nodata is not None and np.isfinite(src.label_nodata):
        valid &= agbd != src.label_nodata
    lab = np.where(valid, agbd, np.float32(label_nodata)).astype(np.float32, copy=False)
    nodata = (img[:6] == IMAGE_NODATA).any(axis=0)
    return img, lab, valid, nodata


@dataclass(frozen=True)
class _Cut:
    """A chip kept by a strip job, written under the temporary name ``tmp_name``."""

    row: int
    col: int
    block: tuple[int, int, int]
    n_labeled: int
    nodata_fraction: float
    bounds: tuple[float, float, float, float]
    tmp_name: str
    stats: Any
    label_stats: Any


def _strip_job(si: int, src: Source, sel: np.ndarray, params: ChipParams, out: Out) -> tuple[list[_Cut], int, int]:
    """Read one band of rows of a source (one or more chip rows), filter its chips, write the kept ones
    under temp names.

    Runs in a worker thread with its own dataset handles; one read per job, so each compressed block is
    decoded about once. Returns (kept, n dropped for image nodata, n dropped for too few labelled pixels).
    """
    cs = params.chip_size
    r0, c0 = int(sel[:, 0].min()), int(sel[:, 1].min())
    win = Window(c0, r0, int(sel[:, 1].max()) + cs - c0, int(sel[:, 0].max()) + cs - r0)
    try:
        with rasterio.open(src.composite) as c, rasterio.open(src.label) as la:
            img, lab, valid, nodata = _read_strip(c, la, src, win, out.label_nodata)
    except rasterio.errors.RasterioIOError as exc:
        raise ChipExportError(f"{src.composite} / {src.label}: cannot read rows {r0}..{r0 + win.height}: "
                              f"{exc}") from exc
    kept: list[_Cut] = []
    n_nodata = n_unlab = 0
    for row, col, brow, bcol in sel:
        y, x = int(row) - r0, int(col) - c0
        frac = float(np.count_nonzero(nodata[y:y + cs, x:x + cs])) / (cs * cs)
        if frac > params.max_nodata_fraction:
            n_nodata += 1
            continue
        chip_valid = valid[y:y + cs, x:x + cs]
        n_lab = int(np.count_nonzero(chip_valid))
        if n_lab < params.min_labeled_pixels:
            n_unlab += 1
            continue
        t = src.grid.affine @ rasterio.Affine.translation(int(col), int(row))
        name = f"_tmp_{si}_{int(row)}_{int(col)}"
        chip_img = np.ascontiguousarray(img[:, y:y + cs, x:x + cs])
        chip_lab = np.ascontiguousarray(lab[y:y + cs, x:x + cs])
        _write_chip(out, name, chip_img, chip_lab, t)
        kept.append(_Cut(int(row), int(col), (src.grid.epsg, int(brow), int(bcol)), n_lab, frac,
                         (t.c, t.f + t.e * cs, t.c + t.a * cs, t.f), name, chip_band_stats(chip_img, IMAGE_NODATA),
                         values_stats(chip_lab[chip_valid])))
    return kept, n_nodata, n_unlab


def _row_groups(rows: np.ndarray, cs: int, max_rows: int) -> list[np.ndarray]:
    """Consecutive chip rows grouped so that a group's pixel rows span at most ``max(cs, max_rows)``."""
    groups: list[list[int]] = []
    for r in np.unique(rows):
        if groups and int(r) + cs - groups[-1][0] <= max_rows:
            groups[-1].append(int(r))
        else:
            groups.append([int(r)])
    return [np.array(g) for g in groups]


def _rename_chip(out: Out, tmp_name: str, name: str) -> None:
    for folder in (out.images, out.labels):
        os.replace(folder / f"{tmp_name}.tif", folder / f"{name}.tif")
        if out.tfw:
            os.replace(folder / f"{tmp_name}.tfw", folder / f"{name}.tfw")


def cut_source(si: int, src: Source, positions: np.ndarray, params: ChipParams, out: Out,
                pool: ThreadPoolExecutor, chips: list[Chip], counters: dict[str, int],
                taken: set[tuple[Any, ...]]) -> None:
    """Cut, filter and write the chips of one source; appends them to ``chips`` numbered in row-major order.

    Strips are processed in parallel by ``pool``. ``taken`` holds lattice positions already exported (same
    zone and season) from an overlapping tile: those are skipped, so a ground position is exported once.
    """
    gy0, gx0 = grid_lattice_origin(src.grid)
    keys = [(src.grid.epsg, src.season, gy0 + int(r), gx0 + int(c)) for r, c, _, _ in positions]
    fresh = np.array([k not in taken for k in keys], dtype=bool)
    counters["duplicate_overlap"] += int((~fresh).sum())
    positions = positions[fresh]
    # Jobs of up to JOB_ROWS pixel rows (~100 MB of a 3660 px wide 7-band strip) keep memory bounded.
    groups = _row_groups(positions[:, 0], params.chip_size, JOB_ROWS)
    jobs: list[Future[Any]] = [pool.submit(_strip_job, si, src, positions[np.isin(positions[:, 0], g)], params, out)
                               for g in groups]
    for job in jobs:
        kept, n_nodata, n_unlab = job.result()
        counters["image_nodata"] += n_nodata
        counters["unlabeled"] += n_unlab
        for cut in kept:
            idx = counters["next"]
            counters["next"] += 1
            _rename_chip(out, cut.tmp_name, f"{idx:0{ESRI_NAME_DIGITS}d}")
            taken.add((src.grid.epsg, src.season, gy0 + cut.row, gx0 + cut.col))
            chips.append(Chip(idx, si, cut.row, cut.col, cut.block, cut.n_labeled, cut.nodata_fraction,
                              cut.bounds, stats=cut.stats, label_stats=cut.label_stats))


