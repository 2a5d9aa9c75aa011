"""Options and result of the GEDI labels engine (the stage contract); defaults are defined here once."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.constants import GEDI_L4A_COLLECTION, GEDI_STAC_URL, LABEL_NODATA, LABEL_NODATA_CHOICES
from core.contracts import Contract

READ_ERROR_MODES = ("skip", "fail", "raise")


@dataclass(frozen=True)
class LabelOptions(Contract):
    """Where to find GEDI L4A, which shots to keep, and the label raster's nodata.

    Quality filters (each reports how many shots it removed): ``require_l4_quality`` keeps
    ``l4_quality_flag == 1``; ``drop_degraded`` keeps ``degrade_flag == 0``; ``min_sensitivity`` (0-1, e.g.
    0.9) drops less sensitive shots; ``leaf_on_only`` keeps ``leaf_off_flag == 0``; ``pft_classes`` keeps
    those MODIS plant functional types (None: all). Fill shots (agbd -9999) are always dropped.
    ``nodata``: label raster nodata, -9999 (default) or -1 (granite style). ``on_read_error``: ``skip`` an
    unreadable granule (recorded with the reason), ``fail``/``raise`` the stage. ``skip_version_01``: skip
    production-version-01 granules (wrong AGBD for selected_algorithm 10) instead of warning.
    """

    stac_url: str = GEDI_STAC_URL
    collection: str = GEDI_L4A_COLLECTION
    require_l4_quality: bool = True
    drop_degraded: bool = True
    min_sensitivity: float | None = None
    leaf_on_only: bool = False
    pft_classes: tuple[int, ...] | None = None
    nodata: float = LABEL_NODATA
    on_read_error: str = "skip"
    skip_version_01: bool = False

    def __post_init__(self) -> None:
        if not np.isfinite(self.nodata) or float(self.nodata) not in LABEL_NODATA_CHOICES:
            raise ValueError(f"nodata must be -9999 or -1, got {self.nodata!r}")
        if self.on_read_error not in READ_ERROR_MODES:
            raise ValueError(f"on_read_error must be one of {READ_ERROR_MODES}, got {self.on_read_error!r}")
        if self.min_sensitivity is not None and not 0 <= self.min_sensitivity <= 1:
            raise ValueError(f"min_sensitivity must be in [0, 1], got {self.min_sensitivity}")
        if self.pft_classes is not None:
            object.__setattr__(self, "pft_classes", tuple(int(c) for c in self.pft_classes))


@dataclass(frozen=True)
class LabelsResult(Contract):
    """The kept shots (GeoParquet), one label raster per tile, and the per-filter counts.

    ``labels``: tile -> label COG; ``label_stats``: tile -> ``{"n_shots", "n_labelled_pixels", "all_nodata",
    "agbd_mean"}``; ``filter_counts``: ``{"total": {filter: shots removed...}, "per_granule": {...}}``;
    ``granules_skipped``: ``{"granule", "reason"}`` records.
    """

    shots: str
    n_shots: int
    labels: dict[str, str]
    label_stats: dict[str, dict[str, Any]]
    all_nodata: dict[str, bool]
    filter_counts: dict[str, Any]
    granules_used: list[str]
    granules_skipped: list[dict[str, str]]
    production_versions: dict[str, str]
    warnings: list[str]
    season: dict[str, str] | None
    filters: dict[str, Any]
    nodata: float
    bytes_read: int
    granules: list[str] = field(default_factory=list)
