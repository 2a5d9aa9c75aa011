"""The train/val/test split of an export: labelled pixels -> spatial blocks -> splits -> label copies.

Every labelled pixel of every candidate chip is a ground point (UTM zone, season, pixel; a pixel shared by
overlapping chips is one point). Its block is found from its centre in the reference CRS (the first UTM zone
of the export, so overlapping tiles of neighbouring zones agree on blocks), blocks are assigned to splits by
their labelled pixels (``chips.blocks.assign_blocks``), labels inside the buffer are masked in every split,
and each candidate chip gets one copy per split that keeps at least ``min_labeled_pixels`` (at least 1) of
its labels: the same image, and a label chip holding only that split's labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from chips.blocks import (
    BlockTable,
    assign_blocks,
    block_table,
    buffer_mask,
    close_to_other_split,
    edge_distance,
    facing_other,
    near_blocks,
)
from chips.cutting import Candidate
from chips.lattice import SPLITS, grid_lattice_origin
from chips.sources import ChipExportError, Source

Copy = tuple[int, str, np.ndarray]  # (candidate index, split, indexes into the candidate's labelled pixels)


@dataclass(frozen=True)
class SplitPlan:
    """What the split decided. ``labelled``: labelled pixels in each split's label chips (what training
    reads; a pixel of two overlapping chips counts twice); ``unique_labelled``: distinct labelled pixels
    (zone, season, pixel) per split; ``masked_buffer``: distinct labelled pixels masked in every split by
    the buffer."""

    copies: list[Copy]
    labelled: dict[str, int]
    unique_labelled: dict[str, int]
    masked_buffer: int
    ref_epsg: int
    extent_m: tuple[float, float]
    blocks: list[dict[str, Any]]


@dataclass(frozen=True)
class _Points:
    xy: np.ndarray  # (n, 2) pixel centres in the reference CRS, metres
    of_cand: list[np.ndarray]  # per candidate: point index of each of its labelled pixels
    ref_epsg: int
    res: float  # pixel size, metres


def _points(cands: Sequence[Candidate], sources: Sequence[Source], cs: int) -> _Points:
    """Distinct labelled ground points of all candidates, as pixel centres in the reference CRS."""
    zones = sorted({s.grid.epsg for s in sources})
    seasons = sorted({s.season for s in sources})
    origin = [grid_lattice_origin(s.grid) for s in sources]
    res = sources[0].grid.resolution
    if any(s.grid.resolution != res for s in sources):
        raise ChipExportError(f"sources have different pixel sizes: {sorted({s.grid.resolution for s in sources})}")
    counts = np.array([len(c.lab_idx) for c in cands], dtype=np.int64)
    per_cand = np.array([(zones.index(sources[c.source].grid.epsg), seasons.index(sources[c.source].season),
                          origin[c.source][0] + c.row, origin[c.source][1] + c.col) for c in cands],
                        dtype=np.int64).reshape(-1, 4)  # zone, season, global row and column of the chip
    idx = np.concatenate([c.lab_idx for c in cands]).astype(np.int64) if len(cands) else np.zeros(0, np.int64)
    cols = [np.repeat(per_cand[:, k], counts) for k in range(4)]
    cols[2] += idx // cs
    cols[3] += idx % cs
    lo = [int(col.min()) if len(idx) else 0 for col in cols]
    span = [int(col.max()) - lo[k] + 1 if len(idx) else 1 for k, col in enumerate(cols)]
    if float(np.prod(np.array(span, dtype=float))) >= 2.0**62:
        raise ChipExportError(f"the sources span too large an area to split ({span[2]} x {span[3]} px)")
    key = cols[0] - lo[0]
    for k in range(1, 4):
        key = key * span[k] + (cols[k] - lo[k])
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    x, y = (cols[3][first] + 0.5) * res, -(cols[2][first] + 0.5) * res
    zone_of = cols[0][first]
    ref = zones[0]
    for zi, epsg in enumerate(zones[1:], start=1):
        sel = zone_of == zi
        if sel.any():
            from pyproj import Transformer

            tr = Transformer.from_crs(f"EPSG:{epsg}", f"EPSG:{ref}", always_xy=True)
            x[sel], y[sel] = tr.transform(x[sel], y[sel])
    bounds = np.cumsum([0] + [len(c.lab_idx) for c in cands])
    of_cand = [inverse.ravel()[bounds[i]:bounds[i + 1]] for i in range(len(cands))]
    return _Points(np.stack([x, y], axis=1), of_cand, ref, res)


def _assign(pts: _Points, table: BlockTable, params: Any) -> tuple[np.ndarray, np.ndarray]:
    """(split code per block, masked flag per point): blocks assigned on the labels each split keeps."""
    edge_d = edge_distance(pts.xy, table)
    pairs = near_blocks(pts.xy, table, params.split_buffer_m / 2, edge_d)
    keys = [(int(r), int(c)) for r, c in table.keys]
    code = {s: i for i, s in enumerate(SPLITS)}

    def codes_of(assignment: dict[tuple[int, int], str]) -> np.ndarray:
        return np.fromiter((code[assignment[k]] for k in keys), dtype=np.int64, count=len(keys))

    # kept = each block's labelled pixels minus the points with a block of another split among their pairs
    # (buffer_mask's points), computed on the paired points only: most points have no pair
    paired, pair_pt = np.unique(pairs[0], return_inverse=True)
    pair_own, pair_blk, paired_blk = table.of_point[pairs[0]], pairs[1], table.of_point[paired]

    def kept_counts(assignment: dict[tuple[int, int], str]) -> dict[str, int]:
        codes = codes_of(assignment)
        masked = np.zeros(len(paired), dtype=bool)
        masked[pair_pt[codes[pair_blk] != codes[pair_own]]] = True
        n = np.bincount(codes, weights=table.sizes, minlength=len(SPLITS)) \
            - np.bincount(codes[paired_blk[masked]], minlength=len(SPLITS))
        return {s: int(n[i]) for i, s in enumerate(SPLITS)}

    sizes = {k: int(n) for k, n in zip(keys, table.sizes, strict=True)}
    codes = codes_of(assign_blocks(sizes, params.split_fractions, params.seed, kept_counts=kept_counts))
    masked = buffer_mask(table, pairs, codes)
    # exact check (also across blocks without labels): still closer than the buffer to another split
    dist = max(params.split_buffer_m, 1.5 * pts.res)  # pixels of different splits never overlap
    consider = ~masked & facing_other(pts.xy, table, codes, dist, edge_d)
    masked |= close_to_other_split(pts.xy, codes[table.of_point], dist, consider)
    return codes, masked


def plan_splits(cands: Sequence[Candidate], sources: Sequence[Source], params: Any) -> SplitPlan:
    """Assign blocks, mask the buffer and list the label copies of every candidate (see the module doc)."""
    cs = params.chip_size
    pts = _points(cands, sources, cs)
    if len(pts.xy) == 0:
        raise ChipExportError("no labelled pixel in any chip: nothing to split")
    table = block_table(pts.xy, params.split_block_m)
    codes, masked = _assign(pts, table, params)
    pcode = codes[table.of_point]
    need = max(1, params.min_labeled_pixels)
    copies: list[Copy] = []
    exported = np.zeros(len(pts.xy), dtype=bool)
    for ci, pidx in enumerate(pts.of_cand):
        before = len(copies)
        for si, split in enumerate(SPLITS):
            keep = np.flatnonzero((pcode[pidx] == si) & ~masked[pidx])
            if len(keep) >= need:
                copies.append((ci, split, keep))
                exported[pidx[keep]] = True
        if params.min_labeled_pixels == 0 and len(copies) == before:
            copies.append((ci, "train", np.zeros(0, np.int64)))  # an image-only chip, asked for explicitly
    labelled = dict.fromkeys(SPLITS, 0)
    for _, split, keep in copies:
        labelled[split] += len(keep)
    n_blk = np.bincount(table.of_point[exported], minlength=len(table.keys))
    blocks = [{"block_row": int(r), "block_col": int(c), "split": SPLITS[int(codes[i])],
               "labelled_pixels": int(table.sizes[i]), "exported_pixels": int(n_blk[i]),
               "bounds": list(table.bounds(i))} for i, (r, c) in enumerate(table.keys)]
    span = pts.xy.max(axis=0) - pts.xy.min(axis=0)
    return SplitPlan(copies, labelled, {s: int(((pcode == i) & exported).sum()) for i, s in enumerate(SPLITS)},
                     int(masked.sum()), pts.ref_epsg, (float(span[0]), float(span[1])), blocks)


def check_plan(plan: SplitPlan, params: Any, sources: Sequence[Source]) -> None:
    """Fail (before any label chip is written) when a split with a positive fraction has no labelled pixel."""
    empty = [s for s, f in zip(SPLITS, params.split_fractions, strict=True) if f > 0 and plan.labelled[s] == 0]
    if not empty:
        return
    b, buf = params.split_block_m, params.split_buffer_m
    n_pos = sum(1 for f in params.split_fractions if f > 0)
    side = max(2 * b + buf, params.chip_size * sources[0].grid.resolution)
    w, h = (v / 1000 for v in plan.extent_m)
    n_blocks = len(plan.blocks)
    raise ChipExportError(
        f"split(s) {empty} got no labelled pixel: the labelled pixels of the chips span {w:.1f} km x {h:.1f} km "
        f"in {n_blocks} block(s) of {b:g} m (labelled pixels per split {plan.labelled}, {plan.masked_buffer} "
        f"masked by the {buf:g} m buffer). {n_pos} splits need at least {n_pos} blocks with labels beyond the "
        f"buffer: the smallest workable area with split_block_m={b:g} and split_buffer_m={buf:g} is about "
        f"{side / 1000:.1f} km x {side / 1000:.1f} km with GEDI labels spread over it. Use a larger area, a "
        f"smaller split_block_m (e.g. {max(1000.0, (min(w, h) * 1000 - buf) / 2):.0f} m), or split_fractions "
        f"with 0 for the split(s) you do not need. Sources: {[s.composite for s in sources]}")
