"""Band layouts of image chips: which bands a chip file holds, in which order, under which names.

* ``model`` (default): the six model bands B02..B07, then the requested extra composite bands.
* ``granite``: granite-geospatial-biomass's 10-band chip layout B01, B02..B07, B09, B10, B11 (the real
  granite chip in ../shared/realdata has it; granite's published config selects bands by POSITION, 2-7 =
  BLUE..SWIR_2), then the extras. B01, B09, B10 and B11 are not composited by this project: they are
  nodata (-9999) in every pixel, so they carry no statistics (count 0) and TerraTorch drops them.

Band ids are HLS L30 ids (core.bands: one naming everywhere); they are the chip band descriptions, the
manifest's ``bands`` and, for the six model bands, what checkpoints record.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from core.bands import GRANITE_BANDS, L30_BY_ID, MODEL_BANDS
from core.constants import IMAGE_NODATA

BAND_LAYOUTS = ("model", "granite")


@dataclass(frozen=True)
class BandLayout:
    """File band order of image chips. ``source[i]``: index of file band ``i`` among the bands read from the
    composite (six model bands, then extras), or None for a placeholder band (nodata everywhere)."""

    name: str
    ids: tuple[str, ...]
    source: tuple[int | None, ...]

    @classmethod
    def build(cls, name: str, extras: Sequence[str] = ()) -> BandLayout:
        if name not in BAND_LAYOUTS:
            raise ValueError(f"band_layout must be one of {BAND_LAYOUTS}, got {name!r}")
        base = GRANITE_BANDS if name == "granite" else MODEL_BANDS
        src = [MODEL_BANDS.index(b) if b in MODEL_BANDS else None for b in base]
        src += [len(MODEL_BANDS) + i for i in range(len(extras))]
        return cls(name, (*base, *extras), tuple(src))

    @property
    def placeholders(self) -> bool:
        return any(s is None for s in self.source)

    def names(self) -> list[str]:
        """Human band names (extras: their own name)."""
        return [L30_BY_ID[b].name if b in L30_BY_ID else b for b in self.ids]

    def esri_names(self) -> list[str]:
        """ArcGIS band names (its well-known vocabulary where one fits)."""
        return [L30_BY_ID[b].esri_name if b in L30_BY_ID else b for b in self.ids]

    def wavelengths(self) -> list[float | None]:
        """Centre wavelengths in µm (None for extras)."""
        return [L30_BY_ID[b].wavelength_um if b in L30_BY_ID else None for b in self.ids]

    def common_names(self) -> list[str]:
        """TerraTorch ``HLSBands`` names (extras: their own name)."""
        return [L30_BY_ID[b].common if b in L30_BY_ID else b for b in self.ids]

    def positions(self, band_ids: Sequence[str]) -> list[int]:
        """0-based file positions of ``band_ids``."""
        return [self.ids.index(b) for b in band_ids]

    def expand(self, img: np.ndarray) -> np.ndarray:
        """A chip of the read bands (bands, h, w) in this layout (placeholders = -9999)."""
        if not self.placeholders:
            return img
        out = np.full((len(self.ids), *img.shape[1:]), IMAGE_NODATA, np.float32)
        for i, s in enumerate(self.source):
            if s is not None:
                out[i] = img[s]
        return out

    def expand_stats(self, table: np.ndarray) -> np.ndarray:
        """Stats rows (``chips.stats``: n, mean, m2, min, max) of the read bands in this layout; a
        placeholder band has no valid pixel (all zero)."""
        if not self.placeholders:
            return table
        out = np.zeros((len(self.ids), table.shape[1]), dtype=table.dtype)
        for i, s in enumerate(self.source):
            if s is not None:
                out[i] = table[s]
        return out
