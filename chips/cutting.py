"""Cutting chips: read each source in strips of rows, filter chips, write the image chips under temporary
names and keep each chip's labelled pixels (sparse) until the split decides its label copies.

The calling thread reads the strips in order (GDAL decodes each strip's blocks on ``workers`` threads; the
label strip is read on a helper thread) and applies the filters; the pool writes the image chips of the
strip before and computes their stats. int16 composites stay int16 in memory and each chip is converted
to float32 as it is copied out."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
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
JOB_ROWS = 1024  # pixel rows of one strip read


@dataclass
class Candidate:
    """A chip position that passed the image filters; its image is written under ``tmp_name``.

    ``lab_idx``: flat (row-major) indexes of the chip's labelled pixels, ``lab_val`` their AGBD (Mg/ha).
    ``bounds`` in the source CRS, metres. ``stats`` (image band stats) is set by the job that writes the
    image (see :func:`cut_source`); everything else is known when the strip is read.
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


def _write_label(out: Out, name: str, lab: np.ndarray, transform: Any, tfw_of_image: Path | None = None) -> None:
    """Write one label chip (+ .tfw world file for the Esri layout: a hard link to ``tfw_of_image``, the
    image chip's world file of the same transform, when given); unit type Mg/ha."""
    _write_tif(out, out.labels / f"{name}.tif", lab[None], transform, out.label_nodata, ("agbd",), (AGB_UNITS,))
    if out.tfw and tfw_of_image is not None:
        _link_or_copy(tfw_of_image, out.labels / f"{name}.tfw")  # creating a file costs ~10x a link here
    elif out.tfw:
        esri.write_tfw(out.labels / f"{name}.tfw", tuple(transform))


def _read_strip(c: Any, la: Any, src: Source, win: Window,
                lab_pool: ThreadPoolExecutor | None = None) -> tuple[np.ndarray, ...]:
    """Image (bands, h, w) with -9999 for nodata/NaN, label AGBD values, label-valid and image-nodata
    masks (h, w).

    int16 composites (the pipeline's) stay int16 (no NaN is possible; each chip is converted to float32 as
    it is copied out); float32 composites (before composite-engine 3) have NaN and a foreign nodata mapped
    to -9999. The label strip is read on ``lab_pool`` (a helper thread) while the composite strip is read.
    """
    lab_job = lab_pool.submit(la.read, 1, window=win, out_dtype="float32") if lab_pool else None
    raw = c.read(list(src.image_bands), window=win)
    foreign = src.image_nodata is not None and np.isfinite(src.image_nodata) and src.image_nodata != IMAGE_NODATA
    bad = ~np.isfinite(raw) if raw.dtype.kind == "f" else None
    if foreign:
        bad = (raw == src.image_nodata) if bad is None else bad | (raw == src.image_nodata)
    if raw.dtype.kind == "f" or (raw.dtype.kind == "i" and np.iinfo(raw.dtype).min <= IMAGE_NODATA):
        # compared in the strip's type: an int16 strip compared with the Python float is cast to float64
        nodata = (raw[:6] == raw.dtype.type(IMAGE_NODATA)).any(axis=0)
    else:  # an unsigned or narrow type cannot hold -9999
        nodata = np.zeros(raw.shape[1:], dtype=bool)
    img = raw if raw.dtype in (np.int16, np.float32) else raw.astype(np.float32)
    if bad is not None and bad.any():
        img = img.astype(np.float32, copy=False)
        img[bad] = IMAGE_NODATA
        nodata |= bad[:6].any(axis=0)
    agbd = lab_job.result() if lab_job else la.read(1, window=win, out_dtype="float32")
    valid = np.isfinite(agbd) & (agbd >= 0)  # AGBD is never negative: -1 fills count as unlabelled too
    if src.label_nodata is not None and np.isfinite(src.label_nodata):
        valid &= agbd != src.label_nodata
    return img, agbd, valid, nodata


@dataclass(frozen=True)
class _Keep:
    """A chip position of a strip that passed the filters (decided by the reading thread)."""

    row: int
    col: int
    n_nodata: int  # image-nodata pixels of the six bands


def _filter(sel: np.ndarray, strip: tuple[np.ndarray, ...], r0: int, c0: int, params: ChipParams,
            counters: dict[str, int]) -> list[_Keep]:
    """The positions of ``sel`` that pass the image-nodata and labelled-pixel filters (counters updated)."""
    _, _, valid, nodata = strip
    cs = params.chip_size
    kept = []
    for row, col in sel:
        y, x = int(row) - r0, int(col) - c0
        n_bad = int(np.count_nonzero(nodata[y:y + cs, x:x + cs]))
        if n_bad / (cs * cs) > params.max_nodata_fraction:
            counters["image_nodata"] += 1
            continue
        if int(np.count_nonzero(valid[y:y + cs, x:x + cs])) < params.min_labeled_pixels:  # before the split
            counters["unlabeled"] += 1
            continue
        kept.append(_Keep(int(row), int(col), n_bad))
    return kept


def _candidates(si: int, src: Source, keep: list[_Keep], strip: tuple[np.ndarray, ...], r0: int, c0: int,
                cs: int) -> list[Candidate]:
    """The kept chips of a strip read at (r0, c0) as candidates with their labelled pixels (no stats yet)."""
    _, agbd, valid, _ = strip
    cands = []
    for k in keep:
        y, x = k.row - r0, k.col - c0
        t = src.grid.affine @ rasterio.Affine.translation(k.col, k.row)
        idx = np.flatnonzero(valid[y:y + cs, x:x + cs]).astype(np.int32)  # row-major flat indexes in the chip
        cands.append(Candidate(si, k.row, k.col, len(idx), k.n_nodata / (cs * cs),
                               (t.c, t.f + t.e * cs, t.c + t.a * cs, t.f), f"_tmp_{si}_{k.row}_{k.col}", None,
                               idx, agbd[y:y + cs, x:x + cs].ravel()[idx]))
    return cands


def _write_images(src: Source, cands: list[Candidate], keep: list[_Keep], img: np.ndarray, r0: int, c0: int,
                  cs: int, out: Out) -> None:
    """Write the image chips of ``cands`` (from the strip image ``img`` read at (r0, c0)) under their temp
    names and set their stats. Runs in a pool thread."""
    for c, k in zip(cands, keep, strict=True):
        y, x = c.row - r0, c.col - c0
        t = src.grid.affine @ rasterio.Affine.translation(c.col, c.row)
        chip_img = img[:, y:y + cs, x:x + cs].astype(np.float32, order="C")  # one copy (and int16 -> float32)
        _write_image(out, c.tmp_name, chip_img, t)
        has_nodata = k.n_nodata > 0 if len(img) == 6 else None  # the strip's mask covers the six bands
        c.stats = chip_band_stats(chip_img, IMAGE_NODATA, has_nodata=has_nodata)


def _strips(src: Source, positions: np.ndarray, params: ChipParams
            ) -> Iterator[tuple[np.ndarray, tuple[np.ndarray, ...], int, int]]:
    """(positions, strip arrays, r0, c0) for each band of at most ``JOB_ROWS`` rows (whole chip rows),
    read in order through one pair of dataset handles: GDAL decodes the blocks of a read on
    ``params.workers`` threads and its block cache keeps the block row two strips share, so every
    compressed block is decoded once; the label strip is read on a helper thread meanwhile."""
    cs = params.chip_size
    with rasterio.Env(GDAL_NUM_THREADS=str(max(1, params.workers))), rasterio.open(src.composite) as c, \
            rasterio.open(src.label) as la, ThreadPoolExecutor(1, thread_name_prefix="label-read") as lab_pool:
        for g in _row_groups(positions[:, 0], cs, JOB_ROWS):
            sel = positions[np.isin(positions[:, 0], g)]
            r0, c0 = int(sel[:, 0].min()), int(sel[:, 1].min())
            win = Window(c0, r0, int(sel[:, 1].max()) + cs - c0, int(sel[:, 0].max()) + cs - r0)
            try:
                strip = _read_strip(c, la, src, win, lab_pool)
            except rasterio.errors.RasterioIOError as exc:
                raise ChipExportError(f"{src.composite} / {src.label}: cannot read rows {r0}..{r0 + win.height}: "
                                      f"{exc}") from exc
            yield sel, strip, r0, c0


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
               taken: set[tuple[Any, ...]]) -> list[Future[None]]:
    """Cut and filter the chips of one source; appends them to ``cands`` in row-major order (with their
    labelled pixels) and returns the pool jobs writing their images (and setting their stats).

    This thread reads the strips in order, applies the filters and takes each kept chip's labelled
    pixels; ``pool`` writes the images of the strip before (one job per chip row) meanwhile, and the
    caller can plan the split before the last images are written. At most two strips (up to ``JOB_ROWS``
    rows each, ~50 MB of a 3660 px wide 7-band int16 strip) are held: before a strip is read, the jobs of
    the one two back are finished. ``taken`` holds lattice positions already exported (same zone and season)
    from an overlapping tile: those are skipped, so a ground position is exported once.
    """
    gy0, gx0 = grid_lattice_origin(src.grid)
    keys = [(src.grid.epsg, src.season, gy0 + int(r), gx0 + int(c)) for r, c in positions]
    fresh = np.array([k not in taken for k in keys], dtype=bool)
    counters["duplicate_overlap"] += int((~fresh).sum())
    positions = positions[fresh]
    if len(positions) == 0:
        return []
    cs = params.chip_size
    jobs: list[Future[None]] = []
    by_strip: list[list[Future[None]]] = []
    for k, (sel, strip, r0, c0) in enumerate(_strips(src, positions, params)):
        keep = sorted(_filter(sel, strip, r0, c0, params, counters), key=lambda c: c.row)  # by chip row (stable)
        taken.update((src.grid.epsg, src.season, gy0 + c.row, gx0 + c.col) for c in keep)
        mine = _candidates(si, src, keep, strip, r0, c0, cs)
        cands += mine
        rows = [[i for i, c in enumerate(keep) if c.row == r] for r in sorted({c.row for c in keep})]
        by_strip.append([pool.submit(_write_images, src, [mine[i] for i in row], [keep[i] for i in row], strip[0],
                                     r0, c0, cs, out) for row in rows])
        jobs += by_strip[-1]
        del strip
        if k >= 1:
            wait(by_strip[k - 1])
    return jobs


def _link_or_copy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _place_image(out: Out, tmp_name: str, names: list[str]) -> None:
    """The candidate's image chip under its copies' names: renamed to the first, hard links (else copies)
    for the others; removed when it has no copy."""
    exts = (".tif", ".tfw") if out.tfw else (".tif",)
    folder = os.fspath(out.images)
    for ext in exts:
        tmp = os.path.join(folder, f"{tmp_name}{ext}")
        if not names:
            os.unlink(tmp)
            continue
        first = os.path.join(folder, f"{names[0]}{ext}")
        os.replace(tmp, first)
        for name in names[1:]:
            _link_or_copy(first, os.path.join(folder, f"{name}{ext}"))


def _write_copy_label(out: Out, name: str, c: Candidate, keep: np.ndarray, chip_size: int, transform: Any
                      ) -> np.ndarray:
    """Write the label chip of one copy (a pool job); returns its label stats row."""
    lab = np.full(chip_size * chip_size, np.float32(out.label_nodata), np.float32)
    lab[c.lab_idx[keep]] = c.lab_val[keep]
    _write_label(out, name, lab.reshape(chip_size, chip_size), transform, out.images / f"{c.tmp_name}.tfw")
    return values_stats(c.lab_val[keep])


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
                          stats=c.stats))
    for chip, job in zip(chips, jobs, strict=True):
        chip.label_stats = job.result()
    for c, nm in zip(cands, names, strict=True):
        _place_image(out, c.tmp_name, nm)
    return chips
