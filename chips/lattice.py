"""Where chips go and which split they belong to (pure functions, no I/O).

Chips sit on a lattice shared by every tile of one UTM zone (HLS tiles of a zone share one 30 m pixel
lattice), so overlapping MGRS tiles propose the same chip positions and a position is exported once.
The lattice is made of spatial blocks of ``block_chips x block_chips`` chips (chips inside a block are
``stride`` apart); consecutive blocks are separated by ``gap_px`` pixels that no chip covers. A block is
the unit of the train/val/test split, so chips of different splits never share or touch a pixel: they
are in different blocks, and blocks are at least ``gap_px`` (>= 1) pixels apart. Chips of different UTM
zones (overlapping MGRS tiles across a zone edge) are checked geometrically and dropped on conflict.

Global lattice coordinates: column ``gx = x / res`` and row ``gy = -y / res`` of a pixel's upper-left
corner in the zone's EPSG:326NN metres (integers for every HLS tile).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from core.grid import Grid

SPLITS = ("train", "val", "test")

BlockKey = tuple[int, int, int]  # (epsg, block_row, block_col)


class ChipLayoutError(ValueError):
    """Chip size, stride, block or split parameters that cannot work."""


@dataclass(frozen=True)
class ChipLayout:
    """Chip lattice parameters, all in pixels.

    ``chip_size``: chip edge; ``stride``: step between chips of a block (``== chip_size``: no overlap);
    ``block_chips``: chips per block edge (the split unit); ``gap_px``: guard gap between blocks (>= 1,
    so chips of different blocks never touch).
    """

    chip_size: int = 224
    stride: int = 224
    block_chips: int = 4
    gap_px: int = 1

    def __post_init__(self) -> None:
        if self.chip_size < 1:
            raise ChipLayoutError(f"chip_size must be >= 1, got {self.chip_size}")
        if not 1 <= self.stride:
            raise ChipLayoutError(f"stride must be >= 1, got {self.stride}")
        if self.block_chips < 1:
            raise ChipLayoutError(f"split_block_chips must be >= 1, got {self.block_chips}")
        if self.gap_px < 1:
            raise ChipLayoutError(f"gap_px must be >= 1 (chips of different splits must not touch), "
                                  f"got {self.gap_px}")

    @property
    def block_extent(self) -> int:
        """Pixels covered by one block's chips along one axis."""
        return (self.block_chips - 1) * self.stride + self.chip_size

    @property
    def block_pitch(self) -> int:
        """Distance in pixels between the first chips of two consecutive blocks."""
        return self.block_extent + self.gap_px


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


def _axis_positions(start: int, length: int, layout: ChipLayout) -> tuple[np.ndarray, np.ndarray]:
    """Global positions along one axis of chips lying fully in ``[start, start+length)``, and their blocks."""
    pitch = layout.block_pitch
    b0 = math.floor(start / pitch) - 1
    b1 = math.floor((start + length) / pitch) + 1
    blocks = np.repeat(np.arange(b0, b1 + 1, dtype=np.int64), layout.block_chips)
    inner = np.tile(np.arange(layout.block_chips, dtype=np.int64), b1 - b0 + 1)
    pos = blocks * pitch + inner * layout.stride
    keep = (pos >= start) & (pos + layout.chip_size <= start + length)
    return pos[keep], blocks[keep]


def chip_positions(grid: Grid, layout: ChipLayout) -> np.ndarray:
    """All chip positions fully inside ``grid``, row-major.

    Returns an int64 array of shape (n, 4): local ``row``, local ``col`` (pixels from the grid's upper-left
    corner), ``block_row``, ``block_col`` (global block indices of the zone lattice).
    """
    gy0, gx0 = grid_lattice_origin(grid)
    ys, bys = _axis_positions(gy0, grid.height, layout)
    xs, bxs = _axis_positions(gx0, grid.width, layout)
    if len(ys) == 0 or len(xs) == 0:
        return np.zeros((0, 4), dtype=np.int64)
    rr, cc = np.meshgrid(ys - gy0, xs - gx0, indexing="ij")
    br, bc = np.meshgrid(bys, bxs, indexing="ij")
    return np.stack([rr.ravel(), cc.ravel(), br.ravel(), bc.ravel()], axis=1)


def check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    """Validate (train, val, test) fractions: three non-negative numbers summing to 1 (+-1e-6)."""
    fr = tuple(float(f) for f in fractions)
    if len(fr) != 3 or any(f < 0 or not math.isfinite(f) for f in fr) or abs(sum(fr) - 1.0) > 1e-6:
        raise ChipLayoutError(f"split_fractions must be three non-negative numbers summing to 1 "
                              f"(train, val, test), got {fractions!r}")
    if fr[0] <= 0:
        raise ChipLayoutError(f"the train fraction must be > 0, got {fractions!r}")
    return fr  # type: ignore[return-value]


def _greedy(keys: list[BlockKey], sizes: Mapping[BlockKey, int], fr: tuple[float, float, float],
            order: np.ndarray) -> tuple[dict[BlockKey, str], dict[str, int]]:
    counts = dict.fromkeys(SPLITS, 0)
    out: dict[BlockKey, str] = {}
    seeding = [s for s, f in zip(SPLITS, fr, strict=True) if f > 0]  # train, then val, then test
    total = 0
    for i, idx in enumerate(order):
        key = keys[int(idx)]
        size = int(sizes[key])
        if i < len(seeding):
            split = seeding[i]
        else:
            split = max(SPLITS, key=lambda s: fr[SPLITS.index(s)] * (total + size) - counts[s])
        out[key] = split
        counts[split] += size
        total += size
    return out, counts


def assign_blocks(block_sizes: Mapping[BlockKey, int], fractions: Sequence[float],
                  seed: int, trials: int = 32) -> dict[BlockKey, str]:
    """Assign whole blocks to splits so that chip counts approach ``fractions`` (train, val, test).

    One trial visits the blocks in a seeded random order: while blocks remain, every split with a positive
    fraction first gets one block (train, val, test in that order), then each block goes to the split
    furthest below its target share of the chips assigned so far. Of ``trials`` such orders the one whose
    chip shares are closest to ``fractions`` (sum of squared differences) wins. Deterministic for a given
    set of blocks and seed.
    """
    fr = check_fractions(fractions)
    keys = sorted(block_sizes)
    if not keys:
        return {}
    rng = np.random.default_rng(seed)
    total = float(sum(block_sizes.values())) or 1.0
    best: tuple[float, dict[BlockKey, str]] | None = None
    for _ in range(max(1, trials)):
        out, counts = _greedy(keys, block_sizes, fr, rng.permutation(len(keys)))
        score = sum((counts[s] / total - f) ** 2 for s, f in zip(SPLITS, fr, strict=True))
        if best is None or score < best[0] - 1e-12:
            best = (score, out)
    return best[1]


def footprints_touch(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    """True when two (minx, miny, maxx, maxy) rectangles share any point (overlap, edge or corner)."""
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]
