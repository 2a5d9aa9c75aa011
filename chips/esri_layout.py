"""The Esri side of an export: ``esri/`` (every chip) and ``esri_splits/{train,val,test}/`` (one per split).

Each folder is a complete ArcGIS "Export Tiles" export of two rasters: ``images/`` (image chips),
``images2/`` (AGBD label chips), ``map.txt``, ``stats.txt``, ``esri_accumulated_stats.json`` and
``esri_model_definition.emd`` (:mod:`chips.esri`). Statistics in each folder are over that folder's tiles,
as ArcGIS writes them for an export of those tiles. Chip names are the export-wide numbers in every folder
(a split folder's numbering has gaps, as a real export's has). The per-split folders hold hard links to the
``esri/`` chips (relative symlinks where hard links are impossible), so they cost no space.

Why per-split folders: arcgis.learn 2.4.4 ``prepare_data`` on an Export Tiles + ``images2/`` folder draws its
own random validation share and refuses ``valid_path`` for this dataset type; a folder holding only the
training split keeps the project's spatial split out of its hands (its random share is then taken from
training chips only), and the ``val``/``test`` folders can be loaded on their own for evaluation.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chips import esri
from chips.cutting import ESRI_NAME_DIGITS, Chip
from chips.manifest import SPLITS
from chips.stats import StatsAccumulator
from chips.terratorch import place

ESRI_DIR = "esri"
SPLITS_DIR = "esri_splits"


@dataclass(frozen=True)
class EsriSpec:
    """What every Esri folder of one export shares. ``band_names``: ArcGIS names of the image bands;
    ``project``: the ``AGB_`` keys of the ``.emd``."""

    chip_size: int
    res: float
    epsg: int
    sensor: str
    band_names: Sequence[str]
    project: dict[str, Any]
    next_tile_index: int


def chip_name(c: Chip) -> str:
    return f"{c.index:0{ESRI_NAME_DIGITS}d}.tif"


def write_metadata(root: Path, chips: Sequence[Chip], spec: EsriSpec, img: StatsAccumulator,
                   lab: StatsAccumulator, project_extra: dict[str, Any] | None = None) -> None:
    """map.txt, stats.txt, esri_accumulated_stats.json and the .emd of the chips in ``root``."""
    info = esri.EsriExportInfo(
        n_tiles=len(chips), next_tile_index=spec.next_tile_index, chip_size=spec.chip_size, res=spec.res,
        epsg=spec.epsg, image_sensor=spec.sensor, image_band_names=list(spec.band_names),
        image_stats=img.band_stats(list(spec.band_names)), label_sensor="GEDI_L4A_AGBD",
        label_band_names=["AGBD"], label_stats=lab.band_stats(["AGBD"]))
    names = [chip_name(c) for c in sorted(chips, key=lambda c: c.index)]
    esri.write_map_txt(root / "map.txt", names)
    esri.write_stats_txt(root / "stats.txt", len(chips), len(spec.band_names), spec.chip_size, spec.chip_size)
    esri.dump_esri_json(root / "esri_accumulated_stats.json", esri.accumulated_stats(info))
    project = {**spec.project, **(project_extra or {})}
    esri.dump_esri_json(root / "esri_model_definition.emd", esri.model_definition(info, project))


def write_split_folders(export: Path, chips: Sequence[Chip], spec: EsriSpec, img: dict[str, StatsAccumulator],
                        lab: dict[str, StatsAccumulator], links: str) -> dict[str, str]:
    """``esri_splits/<split>/`` for every split with chips (links to the ``esri/`` files); returns
    {split: folder relative to the export}."""
    src = export / ESRI_DIR
    out = {}
    for split in SPLITS:
        mine = [c for c in chips if c.split == split]
        if not mine:
            continue
        root = export / SPLITS_DIR / split
        for folder in (esri.IMAGE_DIR, esri.LABEL_DIR):
            (root / folder).mkdir(parents=True)
            there = set(os.listdir(src / folder))
            src_dir, dst_dir = os.fspath(src / folder), os.fspath(root / folder)
            for c in mine:
                for ext in (".tif", ".tfw"):
                    name = chip_name(c)[:-4] + ext
                    if name in there:
                        place(os.path.join(src_dir, name), os.path.join(dst_dir, name), links)
        write_metadata(root, mine, spec, img[split], lab[split],
                       {"AGB_SplitFolder": {"split": split, "of_export": f"../../{ESRI_DIR}"}})
        out[split] = f"{SPLITS_DIR}/{split}"
    return out
