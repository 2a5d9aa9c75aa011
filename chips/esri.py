"""ArcGIS "Export Training Data For Deep Learning" (``Export_Tiles``) metadata files.

Written to match a real ArcGIS Pro export (../shared/realdata/esri_export_tiles): ``map.txt`` and
``stats.txt`` with CRLF line ends and backslash paths (each ``map.txt`` line ends in a space before the
CRLF); ``esri_model_definition.emd`` and ``esri_accumulated_stats.json`` as JSON with ``"key" : value``
separators, two-space indent, LF line ends and no final newline. The second raster of the export (here
the AGBD label chips) goes to ``images2/``, as a real two-raster Export Tiles export writes it (arcgis.learn
then reads the folder as an image-to-image dataset; a ``labels/`` folder would make it a *thematic* one with
the labels as input), and is described by the ``...2`` keys (``InputRastersProps2``, ``BandStatsState2``,
``AllTilesStats2``). Where the real export writes ArcGIS's ``"e.g. ..."`` placeholders (``Framework``,
``ModelConfiguration``, ``ModelType``, ``ModelFile``, ``Description``, ``ExtractBands``, ``DataRange``,
``ModelPadding``, ``BatchSize``, ``PerProcessGPUMemoryFraction``), so does this one; ``RasterCount`` is 1
(one input raster per side, as the real export).

There is no pixel-regression vocabulary in the ``.emd``; this project's own facts go under keys that
start with ``AGB_`` (documented in docs/chips.md).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The real export's fixed list, written verbatim.
WELL_KNOWN_BAND_NAMES = [
    "Red", "Green", "Blue", "Infrared", "CoastalBlue", "Yellow", "RedEdge", "ShortWaveInfrared",
    "NearInfrared", "NearInfrared_1", "NearInfrared_2", "MidInfrared", "MidInfrared_1", "MidInfrared_2",
    "Thermal", "Thermal_1", "Thermal_2", "Panchromatic", "PseudoRed", "PseudoGreen", "PseudoBlue", "QA",
]
WELL_KNOWN_KEY = "WellKnownBandNames (FYI, these band names can be used in ExtractBands)"
# Placeholders ArcGIS writes into an export's .emd for the user (or the trainer) to fill in (verbatim from
# the real export in ../shared/realdata/esri_export_tiles).
EMD_PLACEHOLDERS = {
    "Framework": "e.g. TensorFlow or PyTorch",
    "ModelConfiguration": "e.g. UNet or FasterRCNN",
    "ModelType": "e.g. ObjectDetection or ImageClassification",
    "ModelFile": "e.g. ./trained.model",
    "Description": "e.g. which data model was trained on, when, by whom, mAP, etc",
}
EMD_OPTIONAL_PLACEHOLDERS = {
    "ExtractBands": "e.g. [0, 1, 2]",
    "DataRange": "e.g. [0.1, 1.0] (optional)",
    "ModelPadding": "e.g. 64 (optional)",
    "BatchSize": "e.g. 8 (optional)",
    "PerProcessGPUMemoryFraction": "e.g. 0.8 (optional)",
}
IMAGE_DIR, LABEL_DIR = "images", "images2"  # first and second input raster of an Export Tiles export


@dataclass(frozen=True)
class BandStats:
    """Statistics of one band over its valid (non-nodata) pixels; ``m2`` = sum of squared deviations."""

    name: str
    num: int
    min: float
    max: float
    mean: float
    m2: float

    @property
    def std(self) -> float:
        """Population standard deviation, as ArcGIS reports it (sqrt(M2 / Num))."""
        return math.sqrt(self.m2 / self.num) if self.num > 0 else 0.0


def dump_esri_json(path: Path, obj: dict[str, Any]) -> None:
    """Write ``obj`` the way ArcGIS writes its JSON side files (``" : "``, indent 2, LF, no final newline)."""
    path.write_text(json.dumps(obj, indent=2, separators=(",", " : "), ensure_ascii=False),
                    encoding="utf-8", newline="\n")


def write_map_txt(path: Path, names: Sequence[str], image_dir: str = IMAGE_DIR, label_dir: str = LABEL_DIR) -> None:
    """``images\\NAME images2\\NAME `` per line, CRLF, as the real export (note the trailing space)."""
    lines = [f"{image_dir}\\{n} {label_dir}\\{n} \r\n" for n in names]
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write("".join(lines))


def write_stats_txt(path: Path, n_tiles: int, n_bands: int, height: int, width: int) -> None:
    """The export's ``stats.txt`` (CRLF); no feature classes for an image-to-image export."""
    text = (f"images = {n_tiles} *{n_bands}*{height}*{width}\r\n\r\nClass feature statistics:\r\n"
            "features = 0\r\nfeatures per image = [min = 0, mean = 0.00, max = 0]\r\nclasses = 0\r\n")
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)


def cell_size(res: float, epsg: int) -> dict[str, Any]:
    """``MinCellSize``/``MaxCellSize`` value: pixel size in CRS units and the spatial reference."""
    return {"x": res, "y": res, "spatialReference": {"wkid": epsg, "latestWkid": epsg}}


def _band_state(s: BandStats) -> dict[str, Any]:
    # ArcGIS keeps Mean/StdDev at 0 in the accumulator and carries the mean in M1, M2 = sum sq. deviations.
    return {"Min": s.min, "Max": s.max, "Mean": 0, "StdDev": 0, "M1": s.mean, "M2": s.m2, "Num": s.num}


def _tile_stats(s: BandStats) -> dict[str, Any]:
    return {"BandName": s.name, "Min": s.min, "Max": s.max, "Mean": s.mean, "StdDev": s.std}


def _raster_props(sensor: str, band_names: Sequence[str]) -> dict[str, Any]:
    # RasterCount: one input raster per side, as the real export writes (the source tiles are listed
    # under AGB_SourceComposites / AGB_SourceLabels).
    return {"RasterCount": 1, "SensorName": sensor, "BandNames": list(band_names)}


@dataclass(frozen=True)
class EsriExportInfo:
    """What the Esri side files describe. Stats are over all exported tiles (ArcGIS's meaning)."""

    n_tiles: int
    next_tile_index: int
    chip_size: int
    res: float
    epsg: int
    image_sensor: str
    image_band_names: Sequence[str]
    image_stats: Sequence[BandStats]
    label_sensor: str
    label_band_names: Sequence[str]
    label_stats: Sequence[BandStats]


def accumulated_stats(info: EsriExportInfo) -> dict[str, Any]:
    """The ``esri_accumulated_stats.json`` document."""
    cs = cell_size(info.res, info.epsg)
    return {
        "Version": 1,
        "NumBands": len(info.image_band_names),
        "TileSizeX": info.chip_size,
        "TileSizeY": info.chip_size,
        "NumClasses": 0,
        "NumTiles": info.n_tiles,
        "NumTilesAsDouble": info.n_tiles,
        "NextTileIndex": info.next_tile_index,
        "OutputFeatures": True,
        "MetaDataMode": "Export_Tiles",
        "MinCellSize": cs,
        "MaxCellSize": cs,
        "FeatureStats": {
            "NumClasses": 0, "NumImagesTotal": 0, "NumFeaturesTotal": 0, "NumImagesPerClass": [],
            "NumFeaturesPerClass": [],
            "NumFeaturesPerImage": {"Min": 0, "Max": 0, "Mean": 0, "Sum": 0, "Count": 0},
            "FeatureAreaPerClass": [],
        },
        "InputRastersProps": _raster_props(info.image_sensor, info.image_band_names),
        "InputRastersProps2": _raster_props(info.label_sensor, info.label_band_names),
        "BandStatsState": [_band_state(s) for s in info.image_stats],
        "BandStatsState2": [_band_state(s) for s in info.label_stats],
    }


def model_definition(info: EsriExportInfo, project_keys: dict[str, Any]) -> dict[str, Any]:
    """The ``esri_model_definition.emd`` document; ``project_keys`` must all start with ``AGB_``."""
    bad = [k for k in project_keys if not k.startswith("AGB_")]
    if bad:
        raise ValueError(f"project .emd keys must start with 'AGB_': {bad}")
    cs = cell_size(info.res, info.epsg)
    emd: dict[str, Any] = dict(EMD_PLACEHOLDERS)
    emd.update({
        "ImageHeight": info.chip_size,
        "ImageWidth": info.chip_size,
        **EMD_OPTIONAL_PLACEHOLDERS,
        "MetaDataMode": "Export_Tiles",
        "BlackenAroundFeature": False,
        "IsMultidimensional": False,
        "CropTileMode": "Fixed_Size",
        "ImageSpaceUsed": "MAP_SPACE",
        "MinCellSize": cs,
        "MaxCellSize": cs,
        "InputRastersProps": _raster_props(info.image_sensor, info.image_band_names),
        "InputRastersProps2": _raster_props(info.label_sensor, info.label_band_names),
        "AllTilesStats": [_tile_stats(s) for s in info.image_stats],
        "AllTilesStats2": [_tile_stats(s) for s in info.label_stats],
        WELL_KNOWN_KEY: list(WELL_KNOWN_BAND_NAMES),
    })
    emd.update(project_keys)
    return emd


def write_tfw(path: Path, transform: Sequence[float]) -> None:
    """ESRI world file for a chip: pixel size x, rotations, pixel size y, centre of the upper-left pixel."""
    a, b, c, d, e, f = transform[:6]
    vals = [a, d, b, e, c + a / 2 + b / 2, f + d / 2 + e / 2]
    path.write_text("".join(f"{v:.10f}\n" for v in vals))
