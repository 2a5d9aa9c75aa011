"""Inputs of a chips export: composite/label raster pairs, checked to share one grid."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio

from core.area import AoiError, parse_season_label
from core.bands import BAND_NAMES, ESRI_BAND_NAMES, MODEL_BANDS, WAVELENGTHS_UM
from core.constants import LABEL_NODATA, LABEL_NODATA_CHOICES
from core.grid import Grid, GridError, epsg_of, normalise_tile

log = logging.getLogger(__name__)

BANDS = MODEL_BANDS


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
    """(tile, season label) from the MGRS_TILE/SEASON tags, else the ``<TILE>/<SEASON>.tif`` path; both must
    follow their grammar (an MGRS tile id, ``YYYY-MM-DD_YYYY-MM-DD``) or the raster is refused."""
    tile = tags.get("MGRS_TILE") or path.parent.name
    season = tags.get("SEASON") or path.stem
    try:
        return normalise_tile(tile), parse_season_label(season, "SEASON tag (or file name)").label
    except (GridError, AoiError) as exc:
        raise ChipExportError(f"{path}: {exc}; refused (tile and season name and pair the chips)") from None


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
        key = _tile_season(lab, _tags(lab))
        if key in by_key:
            raise ChipExportError(f"two label rasters for tile {key[0]} season {key[1]}: {by_key[key]}, {lab}")
        by_key[key] = lab
    sources = []
    for comp in comps:
        if not comp.is_file():
            raise ChipExportError(f"composite not found: {comp}")
        tile, season = _tile_season(comp, _tags(comp))
        lab = by_key.pop((tile, season), None)
        if lab is None:
            raise ChipExportError(f"{comp}: no label raster for tile {tile} season {season}")
        sources.append(_open_pair(comp, lab, extra_bands, tile, season))
    for (tile, season), lab in by_key.items():
        log.warning("label raster %s (tile %s, season %s) has no composite; ignored", lab, tile, season)
    if not sources:
        raise ChipExportError("no composite/label pairs to export")
    return sorted(sources, key=lambda s: (s.season, s.tile))


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


def band_lists(sources: Sequence[Source]) -> tuple[list[str], list[str], list[str], list[float | None]]:
    extra = list(sources[0].extra_names)
    for s in sources:
        if list(s.extra_names) != extra:
            raise ChipExportError(f"{s.composite}: extra bands {s.extra_names} differ from {extra}")
    ids = list(BANDS) + extra
    names = list(BAND_NAMES) + extra
    esri_names = list(ESRI_BAND_NAMES) + extra
    wl: list[float | None] = [*WAVELENGTHS_UM, *([None] * len(extra))]
    return ids, names, esri_names, wl


