"""Chip export parameters (one frozen dataclass; pixels for sizes)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from chips.bandlayout import BAND_LAYOUTS
from chips.lattice import ChipLayout, ChipLayoutError, check_fractions
from chips.sources import ChipExportError
from chips.terratorch import LINK_MODES
from core.constants import LABEL_NODATA_CHOICES
from core.contracts import Contract

LAYOUTS = ("esri", "terratorch")
CHIP_WRITERS = ("fast", "rasterio")  # chips.geotiff (default) or a rasterio dataset per chip


@dataclass(frozen=True)
class ChipParams(Contract):
    """Export parameters. Pixels for sizes; ``label_nodata`` None = the label rasters' own nodata tag.

    ``max_nodata_fraction``: largest share of chip pixels where any of the six bands is -9999 (image
    nodata). ``min_labeled_pixels``: fewest pixels with a valid AGBD in a chip, and in each split's copy
    of it. ``split_block_m``: edge of the square spatial blocks assigned to splits, metres (UTM of the
    export's first zone). ``split_buffer_m``: labelled pixels of different splits are at least this far
    apart (pixel centres, metres); labels inside the buffer are masked in every split. ``band_layout``:
    ``model`` (B02..B07 + extras) or ``granite`` (granite's 10-band layout B01, B02..B07, B09, B10, B11 +
    extras; the four bands not composited are nodata everywhere), for image chips of every layout. ``esri_splits``: also write one complete Export Tiles folder per split
    (``esri_splits/{train,val,test}/``, hard links), so each split loads in ArcGIS on its own.
    """

    chip_size: int = 224
    stride: int | None = None
    min_labeled_pixels: int = 1
    max_nodata_fraction: float = 0.5
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    split_block_m: float = 5000.0
    split_buffer_m: float = 500.0
    seed: int = 0
    extra_bands: tuple[str, ...] = ()
    label_nodata: float | None = None
    layouts: tuple[str, ...] = LAYOUTS
    terratorch_links: str = "hardlink"
    workers: int = 2
    chip_writer: str = "fast"
    band_layout: str = "model"
    esri_splits: bool = True

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
        if self.band_layout not in BAND_LAYOUTS:
            raise ChipExportError(f"band_layout must be one of {BAND_LAYOUTS}, got {self.band_layout!r}")
        if self.chip_writer not in CHIP_WRITERS:
            raise ChipExportError(f"chip_writer must be one of {CHIP_WRITERS}, got {self.chip_writer!r}")
        object.__setattr__(self, "split_fractions", tuple(float(f) for f in self.split_fractions))
        object.__setattr__(self, "extra_bands", tuple(str(b) for b in self.extra_bands))
        object.__setattr__(self, "layouts", tuple(self.layouts))
        if not (math.isfinite(self.split_buffer_m) and self.split_buffer_m >= 0):
            raise ChipExportError(f"split_buffer_m must be >= 0 metres, got {self.split_buffer_m}")
        if not (math.isfinite(self.split_block_m) and self.split_block_m > self.split_buffer_m):
            raise ChipExportError(f"split_block_m ({self.split_block_m} m) must be larger than split_buffer_m "
                                  f"({self.split_buffer_m} m): labels within half the buffer of a block edge "
                                  "facing another split are masked")
        object.__setattr__(self, "split_block_m", float(self.split_block_m))
        object.__setattr__(self, "split_buffer_m", float(self.split_buffer_m))
        if self.workers < 1:
            raise ChipExportError(f"workers must be >= 1, got {self.workers}")
        try:
            check_fractions(self.split_fractions)
            self.layout  # noqa: B018 - validates sizes
        except ChipLayoutError as exc:
            raise ChipExportError(str(exc)) from exc

    @property
    def layout(self) -> ChipLayout:
        return ChipLayout(self.chip_size, self.stride or self.chip_size)


