"""Inputs of a chips export: composite/label raster pairs, paired by grid identity and SEASON / MGRS_TILE tags
and checked to share one grid (file and folder names never decide a pairing)."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio

from core.area import AoiError, parse_season_label
from core.bands import BAND_NAMES, MODEL_BANDS
from core.constants import LABEL_NODATA, LABEL_NODATA_CHOICES
from core.grid import Grid, GridError, epsg_of, normalise_tile

log = logging.getLogger(__name__)

BANDS = MODEL_BANDS
_SEASON_RE = re.compile(r"\d{4}-\d{2}-\d{2}_\d{4}-\d{2}-\d{2}")
COMPOSITE_DTYPES = ("int16", "float32")  # int16: means rounded to whole HLS units (composite-engine 3)


class ChipExportError(ValueError):
    """Bad chip-export input (names the file and what is wrong) or parameters."""


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
    image_dtype: str = "float32"


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


def _tags(path: Path) -> dict[str, str]:
    """The dataset tags of a raster; :class:`ChipExportError` naming the file when it is not one GDAL reads."""
    try:
        with rasterio.open(path) as ds:
            return dict(ds.tags())
    except rasterio.errors.RasterioIOError as exc:
        raise ChipExportError(f"{path}: not a readable raster ({exc})") from None


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
    if ds.dtypes[0] not in COMPOSITE_DTYPES:
        raise ChipExportError(f"{path}: composite must be int16 (the pipeline's) or float32 (before "
                              f"composite-engine 3), is {ds.dtypes[0]}")
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
                      (1, 2, 3, 4, 5, 6, *extra_idx), extra_names, c.nodata, la.nodata, c.dtypes[0])


@dataclass(frozen=True)
class _Raster:
    """What pairing needs of an input raster: its grid identity and its tags."""

    path: Path
    grid: tuple[Any, ...]  # (EPSG, transform rounded to micrometres, width, height)
    season: str | None  # SEASON tag
    tile: str | None  # MGRS_TILE tag (normalised when it is a valid MGRS id)

    def describe(self) -> str:
        epsg, tr, w, h = self.grid
        return (f"{self.path} (EPSG {epsg}, {h} x {w} px, origin {tr[2]:.0f}, {tr[5]:.0f}, SEASON {self.season}, "
                f"MGRS_TILE {self.tile})")


def _raster(path: Path, kind: str) -> _Raster:
    if not path.is_file():
        raise ChipExportError(f"{kind} not found: {path}")
    tags = _tags(path)
    try:  # a tag that is present must follow its grammar: tile and season name the chips and records
        tile = normalise_tile(tags["MGRS_TILE"]) if tags.get("MGRS_TILE") else None
        season = parse_season_label(tags["SEASON"], "SEASON tag").label if tags.get("SEASON") else None
    except (GridError, AoiError) as exc:
        raise ChipExportError(f"{path}: {exc}; refused (tile and season name the chips)") from None
    with rasterio.open(path) as ds:
        grid = (epsg_of(ds.crs), tuple(round(v, 6) for v in tuple(ds.transform)[:6]), ds.width, ds.height)
    return _Raster(path, grid, season, tile)


_TAGS = (("season", "SEASON"), ("tile", "MGRS_TILE"))


def _match(comp: _Raster, labs: Sequence[_Raster]) -> _Raster:
    """The one label raster of ``comp``: same grid, then (where the grid has several) the same SEASON and
    MGRS_TILE tags (tiles of one zone clipped to one area in their overlap share a grid)."""
    same = [la for la in labs if la.grid == comp.grid]
    if not same:
        raise ChipExportError(f"composite {comp.describe()}: no label raster on its grid (same CRS, transform and "
                              f"shape); label rasters given: {[la.describe() for la in labs]}")
    cands = same
    for attr, _ in _TAGS:
        if len(cands) > 1 and getattr(comp, attr) is not None:
            cands = [la for la in cands if getattr(la, attr) == getattr(comp, attr)]
    if len(cands) != 1:
        raise ChipExportError(f"composite {comp.describe()}: {len(same)} label rasters share its grid and "
                              f"{len(cands)} carry its SEASON and MGRS_TILE tags, so the pair is ambiguous: "
                              f"{[la.describe() for la in same]}; tag each raster's SEASON (and MGRS_TILE) or "
                              "pass one pair")
    lab = cands[0]
    for attr, tag in _TAGS:
        if getattr(comp, attr) and getattr(lab, attr) and getattr(comp, attr) != getattr(lab, attr):
            raise ChipExportError(f"composite {comp.describe()} and the only label raster on its grid "
                                  f"{lab.describe()} carry different {tag} tags")
    return lab


def pair_rasters(comps: Sequence[Path], labs: Sequence[Path], strict_labels: bool = True) -> list[tuple[Path, Path]]:
    """Composite/label pairs by grid identity (CRS, transform, shape) and SEASON / MGRS_TILE tags (never by
    file name).

    A single composite and a single label raster pair whatever their names (their grids are checked when
    opened; contradicting SEASON or MGRS_TILE tags are an error). A
    composite with no label raster on its grid, or with several and no unique tag match, or two
    composites claiming one label raster is an error naming the files; so is a label raster left over when
    ``strict_labels`` (labels given as files), else it is logged and ignored (labels found in a folder).
    """
    cr = [_raster(p, "composite") for p in comps]
    lr = [_raster(p, "label raster") for p in labs]
    if len(cr) == 1 and len(lr) == 1:  # any names; contradicting tags are still an error
        for attr, tag in _TAGS:
            if getattr(cr[0], attr) and getattr(lr[0], attr) and getattr(cr[0], attr) != getattr(lr[0], attr):
                raise ChipExportError(f"composite {cr[0].describe()} and label raster {lr[0].describe()} carry "
                                      f"different {tag} tags: labels of another tile or season are not this "
                                      "composite's labels; pass the matching pair")
        return [(cr[0].path, lr[0].path)]
    owner: dict[Path, Path] = {}
    pairs = []
    for c in cr:
        lab = _match(c, lr)
        if lab.path in owner:
            raise ChipExportError(f"composites {owner[lab.path]} and {c.path} both pair with label raster "
                                  f"{lab.describe()} (same grid and season): pass one of them, or tag SEASON")
        owner[lab.path] = c.path
        pairs.append((c.path, lab.path))
    left = [la.describe() for la in lr if la.path not in owner]
    if left and strict_labels:
        raise ChipExportError(f"label raster(s) {left} match no composite's grid and season; composites: "
                              f"{[c.describe() for c in cr]}")
    for la in left:
        log.warning("label raster %s has no composite on its grid; ignored", la)
    return pairs


def _names(comp: Path, lab: Path) -> tuple[str, str]:
    """(tile, season) recorded for a pair: MGRS_TILE / SEASON tags; else an MGRS id folder name and a
    ``YYYY-MM-DD_YYYY-MM-DD`` file stem (the pipeline's layout); else ``UTMnn`` / ``unknown``."""
    tags: dict[str, str] = {}
    for p in (lab, comp):
        own = {k: v for k, v in _tags(p).items() if v}
        try:  # a tag that is present must follow its grammar: tile and season name chips and records
            if "MGRS_TILE" in own:
                own["MGRS_TILE"] = normalise_tile(own["MGRS_TILE"])
            if "SEASON" in own:
                own["SEASON"] = parse_season_label(own["SEASON"], "SEASON tag").label
        except (GridError, AoiError) as exc:
            raise ChipExportError(f"{p}: {exc}; refused (tile and season name the chips)") from None
        tags.update(own)
        with rasterio.open(p) as ds:
            epsg = epsg_of(ds.crs)
    tile, season = tags.get("MGRS_TILE"), tags.get("SEASON")
    if tile is None:
        try:
            tile = normalise_tile(comp.parent.name)
        except GridError:
            tile = f"UTM{(epsg or 0) % 100:02d}"
    if season is None:
        season = comp.stem if _SEASON_RE.fullmatch(comp.stem) else "unknown"
    return tile, season


def discover_sources(composites: Any, labels: Any, extra_bands: Sequence[str] = ()) -> list[Source]:
    """Composite/label pairs (see :func:`pair_rasters`), opened and checked to share one grid."""
    comps = _as_path_list(composites, "composites")
    labs = _as_path_list(labels, "labels")
    from_folder = isinstance(labels, str | os.PathLike) and Path(labels).is_dir()
    sources = []
    for comp, lab in pair_rasters(comps, labs, strict_labels=not from_folder):
        tile, season = _names(comp, lab)
        sources.append(_open_pair(comp, lab, extra_bands, tile, season))
    if not sources:
        raise ChipExportError("no composite/label pairs to export")
    return sorted(sources, key=lambda s: (s.season, s.tile, s.composite))


def label_nodata_of(sources: Sequence[Source], requested: float | None) -> float:
    if requested is not None:
        return float(requested)
    tags = {s.label_nodata for s in sources}
    val = sources[0].label_nodata
    if val is None or not np.isfinite(val) or float(val) not in LABEL_NODATA_CHOICES:
        log.warning("label raster %s has nodata tag %s; label chips use -9999", sources[0].label, val)
        return LABEL_NODATA
    if len(tags) > 1:
        log.warning("label rasters carry different nodata tags %s; label chips use %s", tags, val)
    return float(val)
