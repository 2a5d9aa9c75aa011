"""Where chips go (pure functions, no I/O).

Chips sit on a lattice shared by every tile of one UTM zone (HLS tiles of a zone share one 30 m pixel
lattice): chip upper-left corners are at global pixel positions that are multiples of ``stride``, so
overlapping MGRS tiles propose the same chip positions and a position is exported once per season. The
train/val/test split is not a property of a chip position but of its labelled pixels (``chips.blocks``).

Global lattice coordinates: column ``gx = x / res`` and row ``gy = -y / res`` of a pixel's upper-left
corner in the zone's EPSG:326NN metres (integers for every HLS tile).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from core.grid import Grid

SPLITS = ("train", "val", "test")


class ChipLayoutError(ValueError):
    """Chip size, stride, block or split parameters that cannot work."""


@dataclass(frozen=True)
class ChipLayout:
    """Chip lattice parameters in pixels: ``chip_size`` (edge), ``stride`` (< chip_size: overlapping chips)."""

    chip_size: int = 224
    stride: int = 224

    def __post_init__(self) -> None:
        if self.chip_size < 1:
            raise ChipLayoutError(f"chip_size must be >= 1, got {self.chip_size}")
        if self.stride < 1:
            raise ChipLayoutError(f"stride must be >= 1, got {self.stride}")


def grid_lattice_origin(grid: Grid) -> tuple[int, int]:
    """(gy, gx): global lattice row/col of the grid's upper-left pixel. Raises on rotated/odd grids."""
    a, b, c, d, e, f = grid.transform
    if b != 0 or d != 0 or a <= 0 or e >= 0 or abs(a + e) > 1e-9:
        raise ChipLayoutError(f"grid of tile {grid.tile or '?'} is not north-up with square pixels: {grid.transform}")
    gx, gy = c / a, -f / a
    if abs(gx - round(gx)) > 1e-6 or abs(gy - round(gy)) > 1e-6:
        raise ChipLayoutError(f"grid of tile {grid.tile or '?'} is not on the zone's {a} m lattice "
                              f"(origin {c}, {f})")
    return int(round(gy)), int(round(gx))


def _axis_positions(start: int, length: int, layout: ChipLayout) -> np.ndarray:
    """Global positions (multiples of the stride) of chips lying fully in ``[start, start+length)``."""
    first = math.ceil(start / layout.stride)
    last = math.floor((start + length - layout.chip_size) / layout.stride)
    return np.arange(first, last + 1, dtype=np.int64) * layout.stride


def chip_positions(grid: Grid, layout: ChipLayout) -> np.ndarray:
    """All chip positions fully inside ``grid``, row-major: int64 array (n, 2) of local ``row``, ``col``
    (pixels from the grid's upper-left corner)."""
    gy0, gx0 = grid_lattice_origin(grid)
    ys = _axis_positions(gy0, grid.height, layout)
    xs = _axis_positions(gx0, grid.width, layout)
    if len(ys) == 0 or len(xs) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    rr, cc = np.meshgrid(ys - gy0, xs - gx0, indexing="ij")
    return np.stack([rr.ravel(), cc.ravel()], axis=1)


def check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    """Validate (train, val, test) fractions: three non-negative numbers summing to 1 (+-1e-6)."""
    fr = tuple(float(f) for f in fractions)
    if len(fr) != 3 or any(f < 0 or not math.isfinite(f) for f in fr) or abs(sum(fr) - 1.0) > 1e-6:
        raise ChipLayoutError(f"split_fractions must be three non-negative numbers summing to 1 "
                              f"(train, val, test), got {fractions!r}")
    if fr[0] <= 0:
        raise ChipLayoutError(f"the train fraction must be > 0, got {fractions!r}")
    return fr  # type: ignore[return-value]
