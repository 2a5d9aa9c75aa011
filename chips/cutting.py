"""Cutting chips: read each source in strips of rows, filter chips, write the image chips under temporary
names and keep each chip's labelled pixels (sparse) until the split decides its label copies.

The label raster is read by a :class:`LabelPass` on another thread; the calling thread reads the
composite's strips in order (GDAL decodes each strip's blocks on ``workers`` threads), waits for their
rows' labels and applies the filters; the pool writes the image chips of the strip before and computes
their stats. int16 composites stay int16 in memory and each chip is converted
to float32 as it is copied out."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterable, Iterator, Sequence
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
    """A chip position that passed the image filters; its image is written to ``tmp_path`` + ``.tif``
    (+ ``.tfw``), a temporary path set by the job that writes it.

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
    tmp_path: str
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
    """Where and how chips are written. ``stage``: a folder under which each writing thread creates its
    files in a folder of its own before they are renamed into ``images``/``labels`` (None: in place)."""

    images: Path
    labels: Path
    epsg: int
    image_descriptions: tuple[str, ...]
    label_nodata: float
    tfw: bool
    writer: str = "fast"
    layout: BandLayout | None = None  # file band order of image chips (None: as read)
    stage: Path | None = None


_THREAD_STAGE = threading.local()


def _stage_dir(out: Out, final: Path) -> str:
    """This thread's staging folder under ``out.stage`` (created once), or ``final`` without one.

    Creating a file costs far more than renaming one (inode allocation: 0.2-0.6 ms here), and creations in
    one folder are serialised by the file system (measured: 487 label files in 0.29 s on 1 or 2 threads, in
    0.17 s on 2 threads writing to a folder each), so each thread creates in its own folder."""
    if out.stage is None:
        return os.fspath(final)
    key = os.fspath(out.stage)
    folders = getattr(_THREAD_STAGE, "folders", None)
    if folders is None:
        folders = _THREAD_STAGE.folders = {}
    if key not in folders or not os.path.isdir(folders[key]):  # (a folder of an earlier export is gone)
        folder = os.path.join(key, f"t{threading.get_ident()}")
        os.makedirs(folder, exist_ok=True)
        folders[key] = folder
    return folders[key]


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


def _write_image(out: Out, name: str, img: np.ndarray, transform: Any) -> str:
    """Write one image chip (+ .tfw world file for the Esri layout) in the export's band layout, in this
    thread's staging folder; returns its path without extension."""
    if out.layout is not None:
        img = out.layout.expand(img)
    stem = Path(_stage_dir(out, out.images), name)
    _write_tif(out, stem.with_name(f"{name}.tif"), img, transform, IMAGE_NODATA, out.image_descriptions)
    if out.tfw:
        esri.write_tfw(stem.with_name(f"{name}.tfw"), tuple(transform))
    return os.fspath(stem)


def _write_label(out: Out, name: str, lab: np.ndarray, transform: Any, tfw_of_image: Path | None = None) -> None:
    """Write one label chip (+ .tfw world file for the Esri layout: a hard link to ``tfw_of_image``, the
    image chip's world file of the same transform, when given); unit type Mg/ha. Created in this thread's
    staging folder, then renamed into ``out.labels``."""
    staged = Path(_stage_dir(out, out.labels), f"{name}.tif")
    _write_tif(out, staged, lab[None], transform, out.label_nodata, ("agbd",), (AGB_UNITS,))
    if out.stage is not None:
        os.replace(staged, out.labels / f"{name}.tif")
    if out.tfw and tfw_of_image is not None:
        _link_or_copy(tfw_of_image, out.labels / f"{name}.tfw")  # creating a file costs ~10x a link here
    elif out.tfw:
        esri.write_tfw(out.labels / f"{name}.tfw", tuple(transform))


def _read_image_strip(c: Any, src: Source, win: Window) -> tuple[np.ndarray, np.ndarray]:
    """Image (bands, h, w) with -9999 for nodata/NaN, and its image-nodata mask (h, w) over the six bands.

    int16 composites (the pipeline's) stay int16 (no NaN is possible; each chip is converted to float32 as
    it is copied out); float32 composites (before composite-engine 3) have NaN and a foreign nodata mapped
    to -9999.
    """
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
    return img, nodata


def _read_label_strip(la: Any, src: Source, win: Window) -> tuple[np.ndarray, np.ndarray]:
    """Label AGBD values (Mg/ha) and the label-valid mask (h, w) of a strip."""
    agbd = la.read(1, window=win, out_dtype="float32")
    valid = np.isfinite(agbd) & (agbd >= 0)  # AGBD is never negative: -1 fills count as unlabelled too
    if src.label_nodata is not None and np.isfinite(src.label_nodata):
        valid &= agbd != src.label_nodata
    return agbd, valid


def _windows(positions: np.ndarray, cs: int) -> Iterator[tuple[np.ndarray, int, int, Window]]:
    """(indexes into ``positions``, r0, c0, window) of each band of at most ``JOB_ROWS`` rows (whole chip
    rows), in order."""
    for g in _row_groups(positions[:, 0], cs, JOB_ROWS):
        sel = np.flatnonzero(np.isin(positions[:, 0], g))
        r0, c0 = int(positions[sel, 0].min()), int(positions[sel, 1].min())
        yield sel, r0, c0, Window(c0, r0, int(positions[sel, 1].max()) + cs - c0,
                                  int(positions[sel, 0].max()) + cs - r0)


class LabelPass:
    """The labelled pixels of a source's chip positions, from its label raster alone, computed strip by
    strip by :meth:`run` on another thread while the composite is read; :meth:`wait` blocks until the chip
    rows a reader needs are done. ``n``: labelled pixels of each position (``positions`` order);
    ``pixels``: for the positions with at least ``min_labeled_pixels``, (row, col) -> (flat row-major
    indexes in the chip, AGBD Mg/ha)."""

    def __init__(self, src: Source, positions: np.ndarray, params: ChipParams) -> None:
        self.src, self.positions, self.params = src, positions, params
        self.n = np.zeros(len(positions), dtype=np.int64)
        self.pixels: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._cond = threading.Condition()
        self._through = -1  # every position of a chip row below this is done
        self._error: BaseException | None = None

    def run(self) -> LabelPass:
        """Read the label raster in strips and take every position's labelled pixels (raises, and hands
        to the waiting readers, a read error)."""
        src, cs = self.src, self.params.chip_size
        try:
            with rasterio.Env(GDAL_NUM_THREADS=str(max(1, self.params.workers))), rasterio.open(src.label) as la:
                for sel, r0, c0, win in _windows(self.positions, cs):
                    try:
                        agbd, valid = _read_label_strip(la, src, win)
                    except rasterio.errors.RasterioIOError as exc:
                        raise ChipExportError(f"{src.label}: cannot read rows {r0}..{r0 + win.height}: {exc}") from exc
                    self._take(sel, agbd, valid, r0, c0)
                    with self._cond:
                        self._through = int(self.positions[sel, 0].max()) + 1
                        self._cond.notify_all()
        except BaseException as exc:
            with self._cond:
                self._error = exc
                self._cond.notify_all()
            raise
        with self._cond:
            self._through = np.iinfo(np.int64).max
            self._cond.notify_all()
        return self

    def _take(self, sel: np.ndarray, agbd: np.ndarray, valid: np.ndarray, r0: int, c0: int) -> None:
        cs = self.params.chip_size
        for i in sel:
            row, col = int(self.positions[i, 0]), int(self.positions[i, 1])
            y, x = row - r0, col - c0
            idx = np.flatnonzero(valid[y:y + cs, x:x + cs])  # row-major flat indexes in the chip
            self.n[i] = len(idx)
            if len(idx) >= self.params.min_labeled_pixels:
                self.pixels[(row, col)] = (idx.astype(np.int32), agbd[y:y + cs, x:x + cs].ravel()[idx])

    def wait(self, row: int | None = None) -> None:
        """Block until every position of chip row ``row`` (and above; None: every row) is done; raises the
        pass's error."""
        last = np.iinfo(np.int64).max - 1 if row is None else row
        with self._cond:
            self._cond.wait_for(lambda: self._error is not None or self._through > last)
            if isinstance(self._error, ChipExportError):
                raise ChipExportError(str(self._error)) from self._error
            if self._error is not None:
                raise ChipExportError(f"{self.src.label}: reading the labels failed: {self._error}") from self._error


@dataclass(frozen=True)
class _Keep:
    """A chip position of a strip that passed the filters (decided by the reading thread)."""

    row: int
    col: int
    n_nodata: int  # image-nodata pixels of the six bands


def _filter(sel: np.ndarray, positions: np.ndarray, n_lab: np.ndarray, nodata: np.ndarray, r0: int, c0: int,
            params: ChipParams, counters: dict[str, int]) -> list[_Keep]:
    """The positions ``positions[sel]`` that pass the image-nodata and then the labelled-pixel filter
    (``n_lab``: labelled pixels per position); counters updated."""
    cs = params.chip_size
    kept = []
    for i in sel:
        row, col = int(positions[i, 0]), int(positions[i, 1])
        n_bad = int(np.count_nonzero(nodata[row - r0:row - r0 + cs, col - c0:col - c0 + cs]))
        if n_bad / (cs * cs) > params.max_nodata_fraction:
            counters["image_nodata"] += 1
            continue
        if int(n_lab[i]) < params.min_labeled_pixels:  # before the split
            counters["unlabeled"] += 1
            continue
        kept.append(_Keep(row, col, n_bad))
    return kept


def candidate(si: int, src: Source, row: int, col: int, cs: int, pixels: tuple[np.ndarray, np.ndarray],
              nodata_fraction: float = 0.0) -> Candidate:
    """A candidate chip at (row, col) of source ``si`` with its labelled pixels (no image written yet)."""
    t = src.grid.affine @ rasterio.Affine.translation(col, row)
    idx, val = pixels
    return Candidate(si, row, col, len(idx), nodata_fraction, (t.c, t.f + t.e * cs, t.c + t.a * cs, t.f), "",
                     None, idx, val)


def _write_images(src: Source, cands: list[Candidate], keep: list[_Keep], img: np.ndarray, r0: int, c0: int,
                  cs: int, out: Out) -> None:
    """Write the image chips of ``cands`` (from the strip image ``img`` read at (r0, c0)) under their temp
    names and set their stats. Runs in a pool thread."""
    for c, k in zip(cands, keep, strict=True):
        y, x = c.row - r0, c.col - c0
        t = src.grid.affine @ rasterio.Affine.translation(c.col, c.row)
        chip_img = img[:, y:y + cs, x:x + cs].astype(np.float32, order="C")  # one copy (and int16 -> float32)
        c.tmp_path = _write_image(out, f"_tmp_{c.source}_{c.row}_{c.col}", chip_img, t)
        has_nodata = k.n_nodata > 0 if len(img) == 6 else None  # the strip's mask covers the six bands
        c.stats = chip_band_stats(chip_img, IMAGE_NODATA, has_nodata=has_nodata)


def _image_strips(src: Source, positions: np.ndarray, params: ChipParams
                  ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, int, int]]:
    """(indexes into ``positions``, image, image-nodata mask, r0, c0) for each band of at most ``JOB_ROWS``
    rows, read in order through one dataset handle: GDAL decodes the blocks of a read on ``params.workers``
    threads and its block cache keeps the block row two strips share, so every compressed block is decoded
    once."""
    cs = params.chip_size
    with rasterio.Env(GDAL_NUM_THREADS=str(max(1, params.workers))), rasterio.open(src.composite) as c:
        for sel, r0, c0, win in _windows(positions, cs):
            try:
                img, nodata = _read_image_strip(c, src, win)
            except rasterio.errors.RasterioIOError as exc:
                raise ChipExportError(f"{src.composite}: cannot read rows {r0}..{r0 + win.height}: {exc}") from exc
            yield sel, img, nodata, r0, c0


def _row_groups(rows: np.ndarray, cs: int, max_rows: int) -> list[np.ndarray]:
    """Consecutive chip rows grouped so that a group's pixel rows span at most ``max(cs, max_rows)``."""
    groups: list[list[int]] = []
    for r in np.unique(rows):
        if groups and int(r) + cs - groups[-1][0] <= max_rows:
            groups[-1].append(int(r))
        else:
            groups.append([int(r)])
    return [np.array(g) for g in groups]


def fresh_positions(src: Source, positions: np.ndarray, taken: set[tuple[Any, ...]]) -> np.ndarray:
    """Bool per position: its lattice position (zone, season, global row/col) is not in ``taken`` (not
    already exported from an overlapping tile)."""
    gy0, gx0 = grid_lattice_origin(src.grid)
    return np.array([(src.grid.epsg, src.season, gy0 + int(r), gx0 + int(c)) not in taken for r, c in positions],
                    dtype=bool).reshape(-1)


def take(src: Source, rows_cols: Iterable[tuple[int, int]], taken: set[tuple[Any, ...]]) -> None:
    """Mark chip positions of ``src`` as exported in ``taken`` (see :func:`fresh_positions`)."""
    gy0, gx0 = grid_lattice_origin(src.grid)
    taken.update((src.grid.epsg, src.season, gy0 + r, gx0 + c) for r, c in rows_cols)


def cut_source(si: int, src: Source, positions: np.ndarray, labelled: LabelPass, params: ChipParams,
               out: Out, pool: ThreadPoolExecutor, cands: list[Candidate], counters: dict[str, int],
               taken: set[tuple[Any, ...]]) -> list[Future[None]]:
    """Cut and filter the chips of one source (``labelled``: the :class:`LabelPass` of ``positions``,
    running on another thread: each strip waits for its rows); appends
    them to ``cands`` in row-major order and returns the pool jobs writing their images (and setting their
    stats).

    This thread reads the composite's strips in order and applies the filters; ``pool`` writes the images
    of the strip before (one job per chip row) meanwhile. At most two strips (up to ``JOB_ROWS`` rows each,
    ~50 MB of a 3660 px wide 7-band int16 strip) are held: before a strip is read, the jobs of the one two
    back are finished. ``taken`` holds lattice positions already exported (same zone and season) from an
    overlapping tile: those are skipped, so a ground position is exported once.
    """
    fresh = fresh_positions(src, positions, taken)
    counters["duplicate_overlap"] += int((~fresh).sum())
    keep_idx = np.flatnonzero(fresh)
    if len(keep_idx) == 0:
        return []
    positions = positions[keep_idx]
    cs = params.chip_size
    jobs: list[Future[None]] = []
    by_strip: list[list[Future[None]]] = []
    for k, (sel, img, nodata, r0, c0) in enumerate(_image_strips(src, positions, params)):
        labelled.wait(int(positions[sel, 0].max()))
        keep = sorted(_filter(sel, positions, labelled.n[keep_idx], nodata, r0, c0, params, counters),
                      key=lambda c: c.row)
        take(src, ((c.row, c.col) for c in keep), taken)
        mine = [candidate(si, src, c.row, c.col, cs, labelled.pixels[(c.row, c.col)], c.n_nodata / (cs * cs))
                for c in keep]
        cands += mine
        rows = [[i for i, c in enumerate(keep) if c.row == r] for r in sorted({c.row for c in keep})]
        by_strip.append([pool.submit(_write_images, src, [mine[i] for i in row], [keep[i] for i in row], img,
                                     r0, c0, cs, out) for row in rows])
        jobs += by_strip[-1]
        del img, nodata
        if k >= 1:
            wait(by_strip[k - 1])
    return jobs


def _link_or_copy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _place_image(out: Out, tmp_path: str, names: list[str]) -> None:
    """The candidate's image chip under its copies' names: renamed to the first, hard links (else copies)
    for the others; removed when it has no copy."""
    exts = (".tif", ".tfw") if out.tfw else (".tif",)
    folder = os.fspath(out.images)
    for ext in exts:
        tmp = f"{tmp_path}{ext}"
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
    _write_label(out, name, lab.reshape(chip_size, chip_size), transform, Path(f"{c.tmp_path}.tfw"))
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
        _place_image(out, c.tmp_path, nm)
    return chips
