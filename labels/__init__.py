"""GEDI L4A labels engine (no Prefect): find, read, filter and rasterize GEDI footprints.

Entry point :func:`run_gedi_labels`; the steps :func:`search_granules` (STAC, network-bound),
:func:`read_gedi_granule` (one granule), :func:`merge_shots` and :func:`rasterize_labels` (one tile)
are separate so flows can run them as separate tasks. See docs/labels.md.
"""

from labels.engine import (
    LabelsError,
    composite_grids,
    make_filters,
    merge_shots,
    prefer_production_version,
    rasterize_labels,
    read_gedi_granule,
    run_gedi_labels,
)
from labels.filters import FILTER_KEYS, ShotFilters
from labels.granule import GediReadError, parse_granule_name
from labels.rasterize import LabelRaster, rasterize_mean, rasterize_shots
from labels.reader import read_granule_shots
from labels.search import GediSearchError, search_granules

__all__ = [
    "FILTER_KEYS", "GediReadError", "GediSearchError", "LabelRaster", "LabelsError",
    "ShotFilters", "composite_grids", "make_filters", "merge_shots", "parse_granule_name",
    "prefer_production_version", "rasterize_labels", "rasterize_mean", "rasterize_shots",
    "read_gedi_granule", "read_granule_shots", "run_gedi_labels", "search_granules",
]
