"""Training-chip exporter (issue 5): composites + AGBD label rasters -> Esri and TerraTorch chip layouts.

Entry point :func:`export_chips`. Inputs are the pipeline's float32 COGs on one grid per tile:
composites ``composites/<TILE>/<SEASON>.tif`` (bands B02..B07 in HLS units x10000, then ``count``;
nodata -9999) and labels ``labels/<TILE>/<SEASON>.tif`` (``agbd`` Mg/ha, ``shot_count``; nodata -9999 or
-1). Output ``<output_dir>/<export_name>/`` (see docs/chips.md and the "Chips export contract" in
docs/DESIGN.md): ``esri/`` (real files), ``terratorch/`` (hard links to them), ``split.json``,
``chips_export.json`` (written last; a re-run with the same inputs and parameters returns it unchanged).

Each composite/label pair is read once, in bands of rows (up to ``JOB_ROWS`` pixel rows, whole chip rows),
by a small thread pool; each worker cuts its chips from memory, filters them and writes them with
``training.geotiff`` (one buffered write per file) under temporary names, renamed to their export number
in row-major order. Image chips keep every pixel of their window (NaN becomes -9999);
label chips are the ``agbd`` band with every invalid pixel (nodata tag, NaN or negative, e.g. granite-style -1
fills under a -9999 tag) set to ``label_nodata``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.windows import Window

from compositing.grid import Grid, epsg_of
from compositing.io_utils import atomic_path, read_json, write_json_atomic
from training import esri
from training.chip_grid import (
    SPLITS,
    ChipLayout,
    ChipLayoutError,
    assign_blocks,
    check_fractions,
    chip_positions,
    grid_lattice_origin,
)
from training.chip_stats import StatsAccumulator, chip_band_stats, values_stats
from training.geotiff import write_geotiff
from training.terratorch_layout import (
    HLS_BANDS,
    LINK_MODES,
    chip_stem,
    place,
    terratorch_config,
    write_config,
)

log = logging.getLogger(__name__)

EXPORT_VERSION = 1
BANDS = ("B02", "B03", "B04", "B05", "B06", "B07")
BAND_NAMES = ("Blue", "Green", "Red", "NIR_Narrow", "SWIR1", "SWIR2")
ESRI_BAND_NAMES = ("Blue", "Green", "Red", "NearInfrared", "ShortWaveInfrared_1", "ShortWaveInfrared_2")
WAVELENGTHS_UM = (0.49, 0.56, 0.665, 0.864, 1.61, 2.20)
IMAGE_NODATA = -9999.0
LABEL_NODATA_CHOICES = (-9999.0, -1.0)
LAYOUTS = ("esri", "terratorch")
CHIP_WRITERS = ("fast", "rasterio")  # training.geotiff (default) or a rasterio dataset per chip
ESRI_NAME_DIGITS = 12
JOB_ROWS = 1024  # pixel rows read by one worker job  # as the real ArcGIS export: 000000000000.tif


class ChipExportError(ValueError):
    """Bad chip-export input (names the file and what is wrong) or parameters."""


@dataclass(frozen=True)
class ChipParams:
    """Export parameters. Pixels for sizes; ``label_nodata`` None = the label rasters' own nodata tag.

    ``max_nodata_fraction``: largest share of chip pixels where any of the six bands is -9999 (image
    nodata). ``min_labeled_pixels``: fewest pixels with a valid AGBD. ``split_block_chips``: chips per edge
    of a split block; ``split_gap_px``: unchipped guard pixels between blocks (>= 1, so chips of different
    splits never touch).
    """

    chip_size: int = 224
    stride: int | None = None
    min_labeled_pixels: int = 1
    max_nodata_fraction: float = 0.5
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    split_block_chips: int = 4
    split_gap_px: int = 1
    seed: int = 0
    extra_bands: tuple[str, ...] = ()
    label_nodata: float | None = None
    layouts: tuple[str, ...] = LAYOUTS
    terratorch_links: str = "hardlink"
    workers: int = 2
    chip_writer: str = "fast"

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_nodata_fraction <= 1.0:
            raise ChipExportError(f"max_nodata_fraction must be in [0, 1], got {self.max_nodata_fraction}")
        if self.min_labeled_pixels < 0:
            raise ChipExportError(f"min_labeled_pixels must be >= 0, got {self.min_labeled_pixels}")
        if self.label_nodata is not None and float(self.label_nodata) not in LABEL_NODATA_CHOICES:
            raise ChipExportError(f"label_nodata must be -9999 or -1 (or None), got {self.label_nodata}")
        bad = [x for x in self.layouts if x not in LAYOUTS]
        if bad or not self.layouts:
            raise ChipExportError(f"layouts must be a non-empty subset of {LAYOUTS}, got {self.layouts}")
        if self.terratorch_links not in LINK_MODES:
            raise ChipExportError(f"terratorch_links must be one of {LINK_MODES}, got {self.terratorch_links}")
        if self.chip_writer not in CHIP_WRITERS:
            raise ChipExportError(f"chip_writer must be one of {CHIP_WRITERS}, got {self.chip_writer!r}")
        if self.workers < 1:
            raise ChipExportError(f"workers must be >= 1, got {self.workers}")
        try:
            check_fractions(self.split_fractions)
            self.layout  # noqa: B018 - validates sizes
        except ChipLayoutError as exc:
            raise ChipExportError(str(exc)) from exc

    @property
    def layout(self) -> ChipLayout:
        return ChipLayout(self.chip_size, self.stride or self.chip_size, self.split_block_chips, self.split_gap_px)


@dataclass(frozen=True)
class Source:
    """One composite + label raster pair of a tile and season, already checked to share ``grid``."""

    tile: str
    season: str
    composite: str
    label: str
    grid: Grid
    image_bands: tuple[int, ...]  # 1-based band indexes in the composite: six bands, then extras
    extra_names: tuple[str, ...]
    image_nodata: float | None
    label_nodata: float | None


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


# ---------------------------------------------------------------- inputs


def _as_path_list(value: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], kind: str) -> list[Path]:
    """A list of rasters from a list of paths, a ``<kind>/`` folder, or a flow output_dir."""
    if isinstance(value, str | os.PathLike):
        p = Path(value)
        if p.is_dir():
            base = p / kind if (p / kind).is_dir() else p
            files = sorted(base.glob("*/*.tif"))
            if not files:
                raise ChipExportError(f"no {kind} rasters (<TILE>/<SEASON>.tif) under {base}")
            return files
        return [p]
    return [Path(v) for v in value]


def _tile_season(path: Path, tags: dict[str, str]) -> tuple[str, str]:
    tile = tags.get("MGRS_TILE") or path.parent.name
    season = tags.get("SEASON") or path.stem
    return tile.upper().removeprefix("T") if len(tile) == 6 else tile.upper(), season


def _resolve_extra(path: Path, ds: Any, extra: Sequence[str]) -> tuple[tuple[int, ...], tuple[str, ...]]:
    descs = [(d or "").lower() for d in ds.descriptions]
    idx: list[int] = []
    names: list[str] = []
    for e in extra:
        s = str(e)
        if s.isdigit() and 1 <= int(s) <= ds.count:
            i = int(s)
        elif s.lower() in descs:
            i = descs.index(s.lower()) + 1
        elif s.lower() == "count" and ds.count == 7:
            i = 7  # the contract's 7th composite band
        else:
            raise ChipExportError(f"{path}: extra band {s!r} not found (bands: {list(ds.descriptions)})")
        idx.append(i)
        names.append(descs[i - 1] or f"band{i}" if s.isdigit() else s)
    return tuple(idx), tuple(names)


def _check_composite(path: Path, ds: Any) -> None:
    if ds.count < 6:
        raise ChipExportError(f"{path}: composite needs >= 6 bands (B02..B07), has {ds.count}")
    if ds.dtypes[0] != "float32":
        raise ChipExportError(f"{path}: composite must be float32, is {ds.dtypes[0]}")
    for i, (desc, b, name) in enumerate(zip(ds.descriptions[:6], BANDS, BAND_NAMES, strict=True)):
        d = (desc or "").lower()
        if d and b.lower() not in d and name.lower() not in d:
            raise ChipExportError(f"{path}: band {i + 1} is {desc!r}, expected {b} ({name})")


def _open_pair(comp: Path, lab: Path, extra: Sequence[str], tile: str, season: str) -> Source:
    with rasterio.open(comp) as c, rasterio.open(lab) as la:
        _check_composite(comp, c)
        if la.count < 1 or la.dtypes[0] != "float32":
            raise ChipExportError(f"{lab}: label raster must be float32 with band 1 = agbd (Mg/ha)")
        ec, el = epsg_of(c.crs), epsg_of(la.crs)
        if ec is None:
            raise ChipExportError(f"{comp}: CRS has no EPSG equivalent")
        same = (ec == el and c.width == la.width and c.height == la.height
                and np.allclose(tuple(c.transform)[:6], tuple(la.transform)[:6], atol=1e-6))
        if not same:
            raise ChipExportError(f"{lab}: not on the grid of {comp} (EPSG {el} vs {ec}, "
                                  f"{la.height}x{la.width} vs {c.height}x{c.width}, {la.transform} vs {c.transform})")
        extra_idx, extra_names = _resolve_extra(comp, c, extra)
        grid = Grid(f"EPSG:{ec}", tuple(c.transform)[:6], c.width, c.height, tile)
        return Source(tile, season, str(comp.resolve()), str(lab.resolve()), grid,
                      (1, 2, 3, 4, 5, 6, *extra_idx), extra_names, c.nodata, la.nodata)


def discover_sources(composites: Any, labels: Any, extra_bands: Sequence[str] = ()) -> list[Source]:
    """Pair composites with label rasters by (tile, season) (tags MGRS_TILE/SEASON, else folder/stem)."""
    comps = _as_path_list(composites, "composites")
    labs = _as_path_list(labels, "labels")
    by_key: dict[tuple[str, str], Path] = {}
    for lab in labs:
        if not lab.is_file():
            raise ChipExportError(f"label raster not found: {lab}")
        with rasterio.open(lab) as ds:
            key = _tile_season(lab, ds.tags())
        if key in by_key:
            raise ChipExportError(f"two label rasters for tile {key[0]} season {key[1]}: {by_key[key]}, {lab}")
        by_key[key] = lab
    sources = []
    for comp in comps:
        if not comp.is_file():
            raise ChipExportError(f"composite not found: {comp}")
        with rasterio.open(comp) as ds:
            tile, season = _tile_season(comp, ds.tags())
        lab = by_key.pop((tile, season), None)
        if lab is None:
            raise ChipExportError(f"{comp}: no label raster for tile {tile} season {season}")
        sources.append(_open_pair(comp, lab, extra_bands, tile, season))
    for (tile, season), lab in by_key.items():
        log.warning("label raster %s (tile %s, season %s) has no composite; ignored", lab, tile, season)
    if not sources:
        raise ChipExportError("no composite/label pairs to export")
    return sorted(sources, key=lambda s: (s.season, s.tile))


def _fingerprint(sources: Sequence[Source], params: ChipParams, label_nodata: float) -> dict[str, Any]:
    files = []
    for s in sources:
        for p in (s.composite, s.label):
            st = os.stat(p)
            files.append([p, st.st_size, st.st_mtime_ns])
    fp = {"version": EXPORT_VERSION, "params": asdict(params), "label_nodata": label_nodata, "files": files}
    return json.loads(json.dumps(fp))  # as it reads back from chips_export.json (tuples -> lists)


# ---------------------------------------------------------------- cutting and writing


@dataclass(frozen=True)
class _Out:
    images: Path
    labels: Path
    epsg: int
    image_descriptions: tuple[str, ...]
    label_nodata: float
    tfw: bool
    writer: str = "fast"


def _write_tif(out: _Out, path: Path, arr: np.ndarray, transform: Any, nodata: float,
               descriptions: Sequence[str]) -> None:
    """An uncompressed float32 GeoTIFF chip (band-interleaved), by training.geotiff or rasterio."""
    if out.writer == "fast":
        write_geotiff(path, arr, out.epsg, tuple(transform)[:6], nodata, descriptions)
        return
    with rasterio.open(path, "w", driver="GTiff", width=arr.shape[2], height=arr.shape[1], count=arr.shape[0],
                       dtype="float32", crs=CRS.from_epsg(out.epsg), transform=transform, nodata=nodata,
                       interleave="band") as ds:
        ds.write(arr)
        ds.descriptions = tuple(descriptions)


def _write_chip(out: _Out, name: str, img: np.ndarray, lab: np.ndarray, transform: Any) -> None:
    """Write one image/label chip pair (+ .tfw world files for the Esri layout)."""
    _write_tif(out, out.images / f"{name}.tif", img, transform, IMAGE_NODATA, out.image_descriptions)
    _write_tif(out, out.labels / f"{name}.tif", lab[None], transform, out.label_nodata, ("agbd",))
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


def _strip_job(si: int, src: Source, sel: np.ndarray, params: ChipParams, out: _Out) -> tuple[list[_Cut], int, int]:
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


def _rename_chip(out: _Out, tmp_name: str, name: str) -> None:
    for folder in (out.images, out.labels):
        os.replace(folder / f"{tmp_name}.tif", folder / f"{name}.tif")
        if out.tfw:
            os.replace(folder / f"{tmp_name}.tfw", folder / f"{name}.tfw")


def _cut_source(si: int, src: Source, positions: np.ndarray, params: ChipParams, out: _Out,
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


def _drop_cross_zone(chips: list[Chip], res: float) -> list[Chip]:
    """Chips of a later UTM zone that share or touch a chip of another split in an earlier zone.

    Footprints are compared in the earliest zone's CRS (bounding boxes of densified reprojected edges,
    grown by one pixel: conservative). Same-zone chips never conflict (block lattice + guard gap).
    """
    zones = sorted({c.block[0] for c in chips})
    if len(zones) < 2:
        return []
    from pyproj import Transformer
    from shapely import STRtree, box

    ref = zones[0]
    boxes: dict[int, Any] = {}
    for c in chips:
        b = c.bounds
        if c.block[0] != ref:
            tr = Transformer.from_crs(f"EPSG:{c.block[0]}", f"EPSG:{ref}", always_xy=True)
            b = tr.transform_bounds(*b, densify_pts=21)
        boxes[c.index] = box(b[0] - res, b[1] - res, b[2] + res, b[3] + res)
    dropped: list[Chip] = []
    accepted = [c for c in chips if c.block[0] == ref]
    for zone in zones[1:]:
        tree = STRtree([boxes[c.index] for c in accepted])
        mine = [c for c in chips if c.block[0] == zone]
        for c in mine:
            hits = tree.query(boxes[c.index], predicate="intersects")
            if any(accepted[int(h)].split != c.split for h in hits):
                dropped.append(c)
        gone = {c.index for c in dropped}
        accepted += [c for c in mine if c.index not in gone]
    return dropped


def _assign_splits(chips: list[Chip], params: ChipParams, res: float) -> tuple[list[Chip], list[Chip], dict]:
    """Set ``chip.split`` by spatial block; returns (kept chips, cross-zone drops, block table)."""
    sizes: dict[tuple[int, int, int], int] = {}
    for c in chips:
        sizes[c.block] = sizes.get(c.block, 0) + 1
    blocks = assign_blocks(sizes, params.split_fractions, params.seed)
    for c in chips:
        c.split = blocks[c.block]
    dropped = _drop_cross_zone(chips, res)
    gone = {c.index for c in dropped}
    table = [{"epsg": k[0], "block_row": k[1], "block_col": k[2], "split": v, "n_chips": sizes[k]}
             for k, v in sorted(blocks.items())]
    return [c for c in chips if c.index not in gone], dropped, {"blocks": table}


def _label_nodata(sources: Sequence[Source], requested: float | None) -> float:
    if requested is not None:
        return float(requested)
    tags = {s.label_nodata for s in sources}
    val = sources[0].label_nodata
    if val is None or not np.isfinite(val) or float(val) not in LABEL_NODATA_CHOICES:
        log.warning("label raster %s has nodata tag %s; label chips use -9999", sources[0].label, val)
        return -9999.0
    if len(tags) > 1:
        log.warning("label rasters carry different nodata tags %s; label chips use %s", tags, val)
    return float(val)


# ---------------------------------------------------------------- metadata


def _band_lists(sources: Sequence[Source]) -> tuple[list[str], list[str], list[str], list[float | None]]:
    extra = list(sources[0].extra_names)
    for s in sources:
        if list(s.extra_names) != extra:
            raise ChipExportError(f"{s.composite}: extra bands {s.extra_names} differ from {extra}")
    ids = list(BANDS) + extra
    names = list(BAND_NAMES) + extra
    esri_names = list(ESRI_BAND_NAMES) + extra
    wl: list[float | None] = [*WAVELENGTHS_UM, *([None] * len(extra))]
    return ids, names, esri_names, wl


def _write_esri(root: Path, kept: list[Chip], sources: Sequence[Source], params: ChipParams,
                all_stats: StatsAccumulator, lab_stats: StatsAccumulator, meta: dict[str, Any],
                next_index: int) -> None:
    ids, names, esri_names, wl = _band_lists(sources)
    g = sources[0].grid
    info = esri.EsriExportInfo(
        n_tiles=len(kept), next_tile_index=next_index, chip_size=params.chip_size, res=g.resolution,
        epsg=g.epsg, image_sensor="HLS_L30", image_band_names=esri_names, n_image_rasters=len(sources),
        image_stats=all_stats.band_stats(esri_names), label_sensor="GEDI_L4A_AGBD",
        label_band_names=["AGBD"], n_label_rasters=len(sources), label_stats=lab_stats.band_stats(["AGBD"]))
    names_sorted = [f"{c.index:0{ESRI_NAME_DIGITS}d}.tif" for c in sorted(kept, key=lambda c: c.index)]
    esri.write_map_txt(root / "map.txt", names_sorted)
    esri.write_stats_txt(root / "stats.txt", len(kept), len(ids), params.chip_size, params.chip_size)
    esri.dump_esri_json(root / "esri_accumulated_stats.json", esri.accumulated_stats(info))
    project = {
        "AGB_ExportVersion": EXPORT_VERSION,
        "AGB_BandIds": ids,
        "AGB_BandNames": names,
        "AGB_WavelengthsMicrons": wl,
        "AGB_ImageUnits": "HLS surface reflectance x 10000 (scale 0.0001)",
        "AGB_ImageNodata": IMAGE_NODATA,
        "AGB_LabelQuantity": "above-ground biomass density (GEDI L4A agbd, mean of shots per pixel)",
        "AGB_LabelUnits": "Mg/ha",
        "AGB_LabelNodata": meta["label_nodata"],
        "AGB_Split": meta["split_summary"],
        "AGB_TrainStats": meta["stats"]["train"],
        "AGB_SpatialReferences": sorted({s.grid.epsg for s in sources}),
        "AGB_SourceComposites": [s.composite for s in sources],
        "AGB_SourceLabels": [s.label for s in sources],
    }
    esri.dump_esri_json(root / "esri_model_definition.emd", esri.model_definition(info, project))


def _write_terratorch(tt: Path, final_tt: Path, store: _Out, kept: list[Chip], sources: Sequence[Source],
                      params: ChipParams, train_stats: dict[str, Any], move: bool) -> dict[str, str]:
    """Split folders of image/label files paired by stem; returns {chip index: stem}."""
    width = max(5, len(str(max((c.index for c in kept), default=0))))
    stems: dict[int, str] = {}
    for split in SPLITS:
        (tt / f"{split}_images").mkdir(parents=True)
        (tt / f"{split}_labels").mkdir(parents=True)
    for c in kept:
        stem = chip_stem(sources[c.source].tile, c.index, width)
        stems[c.index] = stem
        name = f"{c.index:0{ESRI_NAME_DIGITS}d}.tif"
        for kind, folder, suffix in (("images", store.images, "img"), ("labels", store.labels, "label")):
            dst = tt / f"{c.split}_{kind}" / f"{stem}_tile_{suffix}.tif"
            if move:
                os.replace(folder / name, dst)
            else:
                place(folder / name, dst, params.terratorch_links)
    ids, *_ = _band_lists(sources)
    dataset_bands = [HLS_BANDS.get(b, b) for b in ids]
    out_bands = [HLS_BANDS[b] for b in BANDS]
    cfg = terratorch_config(root=final_tt, dataset_bands=dataset_bands, output_bands=out_bands,
                            means=train_stats["mean"][:6], stds=[sd or 1.0 for sd in train_stats["std"][:6]],
                            chip_size=params.chip_size)
    write_config(tt / "terratorch_config.yaml", cfg)
    return {str(k): v for k, v in stems.items()}


# ---------------------------------------------------------------- entry point


def _contract(params: ChipParams, sources: Sequence[Source], label_nodata: float, counts: dict[str, int],
              stats: dict[str, Any], label_stats: dict[str, Any]) -> dict[str, Any]:
    ids, names, _, wl = _band_lists(sources)
    return {
        "export_version": EXPORT_VERSION,
        "bands": ids, "band_names": names, "wavelengths_um": wl,
        "chip_size": params.chip_size, "stride": params.layout.stride,
        "image_nodata": IMAGE_NODATA, "image_units": "HLS reflectance x 10000",
        "label_nodata": label_nodata, "label_bands": ["agbd"], "label_units": "Mg/ha",
        "splits": counts, "stats": stats, "label_stats": label_stats,
        "layouts": {k: k for k in params.layouts},
        "split_file": "split.json",
        "terratorch_config": "terratorch/terratorch_config.yaml" if "terratorch" in params.layouts else None,
        "sources": [{"tile": s.tile, "season": s.season, "composite": s.composite, "label": s.label,
                     "crs": s.grid.crs} for s in sources],
    }


def _run_export(tmp: Path, final: Path, sources: list[Source], params: ChipParams,
                label_nodata: float) -> dict[str, Any]:
    """Write the whole export into ``tmp`` (renamed to ``final`` by the caller)."""
    store_root = tmp / "esri" if "esri" in params.layouts else tmp / "_store"
    ids, *_ = _band_lists(sources)
    out = _Out(store_root / "images", store_root / "labels", sources[0].grid.epsg,
               tuple(ids), label_nodata, tfw="esri" in params.layouts, writer=params.chip_writer)
    out.images.mkdir(parents=True)
    out.labels.mkdir(parents=True)
    chips: list[Chip] = []
    counters = {"next": 0, "candidates": 0, "image_nodata": 0, "unlabeled": 0, "duplicate_overlap": 0}
    taken: set[tuple[Any, ...]] = set()
    with ThreadPoolExecutor(max_workers=params.workers) as pool:
        for si, src in enumerate(sources):
            pos = chip_positions(src.grid, params.layout)
            counters["candidates"] += len(pos)
            if len(pos) == 0:
                log.warning("%s: grid %dx%d holds no %d px chip", src.composite, src.grid.height,
                            src.grid.width, params.chip_size)
                continue
            o = _Out(out.images, out.labels, src.grid.epsg, out.image_descriptions, label_nodata, out.tfw,
                     params.chip_writer)
            _cut_source(si, src, pos, params, o, pool, chips, counters, taken)
    if not chips:
        raise ChipExportError(f"no chip passed the filters (candidates {counters['candidates']}, "
                              f"too much image nodata {counters['image_nodata']}, too few labelled pixels "
                              f"{counters['unlabeled']}); sources: {[s.composite for s in sources]}")
    kept, dropped, blocks = _assign_splits(chips, params, sources[0].grid.resolution)
    if not any(c.split == "train" for c in kept):
        raise ChipExportError(f"no training chip left after the split ({len(kept)} chips kept)")
    for c in dropped:
        for folder in (out.images, out.labels):
            for ext in (".tif", ".tfw"):
                (folder / f"{c.index:0{ESRI_NAME_DIGITS}d}{ext}").unlink(missing_ok=True)
    acc = {s: StatsAccumulator(len(ids)) for s in (*SPLITS, "all")}
    lacc = {s: StatsAccumulator(1) for s in (*SPLITS, "all")}
    for c in kept:
        for key in (c.split, "all"):
            acc[key].add(c.stats)
            lacc[key].add(c.label_stats)
    counts = {s: sum(1 for c in kept if c.split == s) for s in SPLITS}
    stats = {s: acc[s].summary(ids) for s in (*SPLITS, "all")}
    label_stats = {s: lacc[s].summary(["agbd"]) for s in (*SPLITS, "all")}
    split_summary = {"fractions": list(params.split_fractions), "block_chips": params.split_block_chips,
                     "gap_px": params.split_gap_px, "seed": params.seed, "counts": counts, "file": "split.json"}
    if "esri" in params.layouts:
        meta = {"label_nodata": label_nodata, "split_summary": split_summary, "stats": stats}
        _write_esri(tmp / "esri", kept, sources, params, acc["all"], lacc["all"], meta, counters["next"])
    stems: dict[str, str] = {}
    if "terratorch" in params.layouts:
        stems = _write_terratorch(tmp / "terratorch", final / "terratorch", out, kept, sources, params,
                                  stats["train"], move="esri" not in params.layouts)
    if "esri" not in params.layouts:
        shutil.rmtree(store_root)
    chip_rows = [{"index": c.index, "split": c.split, "tile": sources[c.source].tile,
                  "season": sources[c.source].season, "row": c.row, "col": c.col, "epsg": c.block[0],
                  "block": [c.block[1], c.block[2]], "bounds": list(c.bounds), "n_labeled": c.n_labeled,
                  "nodata_fraction": round(c.nodata_fraction, 6),
                  "esri": f"{c.index:0{ESRI_NAME_DIGITS}d}.tif" if "esri" in params.layouts else None,
                  "terratorch_stem": stems.get(str(c.index))} for c in kept]
    by_split = {s: [r["esri"] or r["terratorch_stem"] for r in chip_rows if r["split"] == s] for s in SPLITS}
    split_doc = {**split_summary, **by_split, "chip_size": params.chip_size, "stride": params.layout.stride,
                 "dropped_cross_zone": [c.index for c in dropped], **blocks, "chips": chip_rows}
    (tmp / "split.json").write_text(json.dumps(split_doc, indent=1))
    dropped_counts = {k: counters[k] for k in ("image_nodata", "unlabeled", "duplicate_overlap")}
    dropped_counts["cross_zone"] = len(dropped)
    return {"contract": _contract(params, sources, label_nodata, counts, stats, label_stats),
            "n_chips": len(kept), "candidates": counters["candidates"], "dropped": dropped_counts}


def export_chips(*, composites: Any, labels: Any, output_dir: str | os.PathLike[str], chip_size: int = 224,
                 stride: int | None = None, min_labeled_pixels: int = 1, max_nodata_fraction: float = 0.5,
                 split_fractions: Sequence[float] = (0.7, 0.15, 0.15), split_block_chips: int = 4,
                 split_gap_px: int = 1, seed: int = 0, extra_bands: Sequence[str] = (),
                 label_nodata: float | None = None, layouts: Sequence[str] = LAYOUTS,
                 terratorch_links: str = "hardlink", workers: int = 2, chip_writer: str = "fast",
                 export_name: str = "chips", overwrite: bool = False) -> dict[str, Any]:
    """Export training chips of composite/label pairs to ``<output_dir>/<export_name>/``.

    ``composites``/``labels``: lists of COG paths, their ``composites/``/``labels/`` folders, or the flow
    output_dir holding both; paired by (MGRS tile, season). Image chips: the six bands B02..B07 (+
    ``extra_bands`` by description or 1-based index, e.g. ``"count"``), float32 HLS units, nodata -9999.
    Label chips: AGBD Mg/ha float32 with nodata ``label_nodata`` (None: as the label rasters say).
    Returns a JSON-able dict (paths, chip counts per split, drop counts, stats). A re-run with the same
    inputs (paths, sizes, mtimes) and parameters returns the recorded result with ``"skipped": True``.
    """
    t0 = time.perf_counter()
    params = ChipParams(chip_size=int(chip_size), stride=stride, min_labeled_pixels=int(min_labeled_pixels),
                        max_nodata_fraction=float(max_nodata_fraction),
                        split_fractions=tuple(float(f) for f in split_fractions),  # type: ignore[arg-type]
                        split_block_chips=int(split_block_chips), split_gap_px=int(split_gap_px), seed=int(seed),
                        extra_bands=tuple(str(b) for b in extra_bands), label_nodata=label_nodata,
                        layouts=tuple(layouts), terratorch_links=terratorch_links, workers=int(workers),
                        chip_writer=chip_writer)
    sources = discover_sources(composites, labels, params.extra_bands)
    lnd = _label_nodata(sources, params.label_nodata)
    final = Path(output_dir) / export_name
    manifest = final / "chips_export.json"
    fp = _fingerprint(sources, params, lnd)
    if manifest.exists() and not overwrite:
        old = read_json(manifest)
        if old.get("fingerprint") == fp:
            return {**old["result"], "skipped": True}
    with atomic_path(final) as tmp:
        tmp.mkdir(parents=True)
        run = _run_export(tmp, final, sources, params, lnd)
        seconds = time.perf_counter() - t0
        result = {
            "export_dir": str(final), "chips_export": str(manifest), "split_file": str(final / "split.json"),
            "esri_dir": str(final / "esri") if "esri" in params.layouts else None,
            "terratorch_dir": str(final / "terratorch") if "terratorch" in params.layouts else None,
            "terratorch_config": (str(final / "terratorch" / "terratorch_config.yaml")
                                  if "terratorch" in params.layouts else None),
            "n_chips": run["n_chips"], "splits": run["contract"]["splits"], "candidates": run["candidates"],
            "dropped": run["dropped"], "label_nodata": lnd, "stats": {"train": run["contract"]["stats"]["train"]},
            "label_stats": {"train": run["contract"]["label_stats"]["train"]},
            "seconds": round(seconds, 3), "chips_per_second": round(run["n_chips"] / max(seconds, 1e-9), 1),
            "skipped": False,
        }
        write_json_atomic(tmp / "chips_export.json", {**run["contract"], "fingerprint": fp, "result": result})
    log.info("exported %d chips to %s in %.1f s", run["n_chips"], final, seconds)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``python -m training.chips --composites X --labels Y --output-dir OUT [--params p.json]``,
    or ``--demo DIR`` to generate a small synthetic world in DIR first. Last stdout line = JSON result."""
    ap = argparse.ArgumentParser(prog="python -m training.chips", description=main.__doc__)
    ap.add_argument("--composites", nargs="*")
    ap.add_argument("--labels", nargs="*")
    ap.add_argument("--output-dir", required=True)
    ap.add_argument("--params", help="JSON file of further export_chips keyword arguments")
    ap.add_argument("--demo", help="write a small synthetic world (2 tiles) here and export it")
    a = ap.parse_args(argv)
    kwargs: dict[str, Any] = json.loads(Path(a.params).read_text()) if a.params else {}
    if a.demo:
        from training.chips_synth import write_demo_world

        world = write_demo_world(Path(a.demo))
        comps, labs = world["composites"], world["labels"]
    else:
        if not a.composites or not a.labels:
            ap.error("--composites and --labels are required without --demo")
        comps = a.composites[0] if len(a.composites) == 1 and Path(a.composites[0]).is_dir() else a.composites
        labs = a.labels[0] if len(a.labels) == 1 and Path(a.labels[0]).is_dir() else a.labels
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    result = export_chips(composites=comps, labels=labs, output_dir=a.output_dir, **kwargs)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
