"""Cutting chips: read each source in strips of rows, filter chips, write the image chips under temporary
names and keep each chip's labelled pixels (sparse) until the split decides its label copies."""

from __future__ import annotations

import os
import shutil
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


@dataclass(frozen=True)
class Candidate:
    """A chip position that passed the image filters; its image is written under ``tmp_name``.

    ``lab_idx``: flat (row-major) indexes of the chip's labelled pixels, ``lab_val`` their AGBD (Mg/ha).
    ``bounds`` in the source CRS, metres.
    """

    source: int
    row: int
    col: int
    n_labeled: int
    nodata_fraction: float
    bounds: tuple[float, float, float, float]
    tmp_name: str
    stats: Any = field(repr=False)
    lab_idx: np.ndarray = field(repr=False)
    lab_val: np.ndarray = field(repr=False)


@dataclass
class Chip:
    """One exported chip file pair (index = Esri number) of one split: a candidate's image and the copy of
    its labels for ``split``. ``bounds`` in the source CRS, metres."""

    index: int
    source: int
    row: int
    col: int
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


def _write_image(out: Out, name: str, img: np.ndarray, transform: Any) -> None:
    """Write one image chip (+ .tfw world file for the Esri layout) in the export's band layout."""
    if out.layout is not None:
        img = out.layout.expand(img)
    _write_tif(out, out.images / f"{name}.tif", img, transform, IMAGE_NODATA, out.image_descriptions)
    if out.tfw:
        esri.write_tfw(out.images / f"{name}.tfw", tuple(transform))


def _write_label(out: Out, name: str, lab: np.ndarray, transform: Any) -> None:
    """Write one label chip (+ .tfw world file for the Esri layout); unit type Mg/ha."""
    _write_tif(out, out.labels / f"{name}.tif", lab[None], transform, out.label_nodata, ("agbd",), (AGB_UNITS,))
    if out.tfw:
        esri.write_tfw(out.labels / f"{name}.tfw", tuple(transform))


def _read_strip(c: Any, la: Any, src: Source, win: Window, label_nodata: float) -> tuple[np.ndarray, ...]:
    """Image (bands, h, w) float32 with -9999 for nodata/NaN, label values, label-valid and image-nodata masks (h, w).

    int16 composites (the pipeline's) are read in their own type, masked there (no NaN is possible) and
    converted once; float32 composites (composite-engine 1) have NaN and a foreign nodata mapped to -9999.
    """
    raw = c.read(list(src.image_bands), window=win)
    if raw.dtype.kind == "f":
        bad = ~np.isfinite(raw)
    else:
        bad = np.zeros(raw.shape, bool) if src.image_nodata not in (None, IMAGE_NODATA) else None
    if bad is not None and src.image_nodata is not None and np.isfinite(src.image_nodata) \
            and src.image_nodata != IMAGE_NODATA:
        bad |= raw == src.image_nodata
    nodata = (raw[:6] == IMAGE_NODATA).any(axis=0)
    img = raw.astype(np.float32, copy=False)
    if bad is not None and bad.any():
        img[bad] = IMAGE_NODATA
        nodata |= bad[:6].any(axis=0)
    agbd = la.read(1, window=win, out_dtype="float32")
    valid = np.isfinite(agbd) & (agbd >= 0)  # AGBD is never negative: -1 fills count as unlabelled too
    if src.label_nodata is not None and np.isfinite(src.label_nodata):
        valid &= agbd != src.label_nodata
    lab = np.where(valid, agbd, np.float32(label_nodata)).astype(np.float32, copy=False)
    return img, lab, valid, nodata


def _strip_job(si: int, src: Source, sel: np.ndarray, params: ChipParams, out: Out
               ) -> tuple[list[Candidate], int, int]:
    """Read one band of rows of a source (one or more chip rows), filter its chips, write the kept ones'
    images under temp names and keep their labelled pixels.

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
    kept: list[Candidate] = []
    n_nodata = n_unlab = 0
    for row, col in sel:
        y, x = int(row) - r0, int(col) - c0
        frac = float(np.count_nonzero(nodata[y:y + cs, x:x + cs])) / (cs * cs)
        if frac > params.max_nodata_fraction:
            n_nodata += 1
            continue
        lab_idx = np.flatnonzero(valid[y:y + cs, x:x + cs]).astype(np.int32)
        if len(lab_idx) < params.min_labeled_pixels:  # before the split masks any label
            n_unlab += 1
            continue
        t = src.grid.affine @ rasterio.Affine.translation(int(col), int(row))
        name = f"_tmp_{si}_{int(row)}_{int(col)}"
        chip_img = np.ascontiguousarray(img[:, y:y + cs, x:x + cs])
        _write_image(out, name, chip_img, t)
        kept.append(Candidate(si, int(row), int(col), len(lab_idx), frac, (t.c, t.f + t.e * cs, t.c + t.a * cs, t.f),
                              name, chip_band_stats(chip_img, IMAGE_NODATA),
                              lab_idx, lab[y:y + cs, x:x + cs].ravel()[lab_idx].copy()))
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


def cut_source(si: int, src: Source, positions: np.ndarray, params: ChipParams, out: Out,
               pool: ThreadPoolExecutor, cands: list[Candidate], counters: dict[str, int],
               taken: set[tuple[Any, ...]]) -> None:
    """Cut, filter and write the image chips of one source; appends them to ``cands`` in row-major order.

    Strips are processed in parallel by ``pool``. ``taken`` holds lattice positions already exported (same
    zone and season) from an overlapping tile: those are skipped, so a ground position is exported once.
    """
    gy0, gx0 = grid_lattice_origin(src.grid)
    keys = [(src.grid.epsg, src.season, gy0 + int(r), gx0 + int(c)) for r, c in positions]
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
        for cand in kept:
            taken.add((src.grid.epsg, src.season, gy0 + cand.row, gx0 + cand.col))
            cands.append(cand)




def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _place_image(out: Out, tmp_name: str, names: list[str]) -> None:
    """The candidate's image chip under its copies' names: renamed to the first, hard links (else copies)
    for the others; removed when it has no copy."""
    exts = (".tif", ".tfw") if out.tfw else (".tif",)
    for ext in exts:
        tmp = out.images / f"{tmp_name}{ext}"
        if not names:
            tmp.unlink()
            continue
        first = out.images / f"{names[0]}{ext}"
        os.replace(tmp, first)
        for name in names[1:]:
            _link_or_copy(first, out.images / f"{name}{ext}")


def _write_copy_label(out: Out, name: str, c: Candidate, keep: np.ndarray, chip_size: int, transform: Any) -> None:
    lab = np.full(chip_size * chip_size, np.float32(out.label_nodata), np.float32)
    lab[c.lab_idx[keep]] = c.lab_val[keep]
    _write_label(out, name, lab.reshape(chip_size, chip_size), transform)


def write_copies(out: Out, sources: Sequence[Source], cands: Sequence[Candidate],
                 copies: Sequence[tuple[int, str, np.ndarray]], chip_size: int, first_index: int,
                 pool: ThreadPoolExecutor) -> list[Chip]:
    """Write the label chip of every ``(candidate, split, kept label indexes)`` copy and give it its image.

    Copies are numbered from ``first_index`` in the given order. A label chip holds the candidate's labels
    at ``kept`` and ``out.label_nodata`` elsewhere. Returns the exported chips (one per copy).
    """
    chips: list[Chip] = []
    names: list[list[str]] = [[] for _ in cands]
    jobs = []
    for n, (ci, split, keep) in enumerate(copies):
        c = cands[ci]
        name = f"{first_index + n:0{ESRI_NAME_DIGITS}d}"
        names[ci].append(name)
        t = sources[c.source].grid.affine @ rasterio.Affine.translation(c.col, c.row)
        jobs.append(pool.submit(_write_copy_label, out, name, c, keep, chip_size, t))
        chips.append(Chip(first_index + n, c.source, c.row, c.col, len(keep), c.nodata_fraction, c.bounds, split,
                          stats=c.stats, label_stats=values_stats(c.lab_val[keep])))
    for job in jobs:
        job.result()
    for c, nm in zip(cands, names, strict=True):
        _place_image(out, c.tmp_name, nm)
    return chips
