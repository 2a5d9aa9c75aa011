"""Spatial blocks of labelled pixels, their train/val/test split and the buffer (pure functions, no I/O).

Points are labelled pixels given as pixel centres ``(x, y)`` in metres of one reference CRS (the export's
first UTM zone). A block is a ``block_m`` x ``block_m`` square aligned to multiples of ``block_m`` in that
CRS: block ``(row, col) = (floor(-y / block_m), floor(x / block_m))``. Each block holding labelled pixels
belongs to one split. Labels near a boundary between blocks of different splits are masked in every split:
a point closer than ``buffer_m / 2`` to a block of another split (:func:`buffer_mask`), and then any point
still closer than the buffer to a point of another split (:func:`close_to_other_split`, which also covers
points facing each other across blocks without labels). So labelled pixels of different splits end up at
least ``buffer_m`` apart (centre to centre, reference-CRS metres).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from chips.lattice import SPLITS, check_fractions

BlockKey = tuple[int, int]  # (block_row, block_col)
MAX_PAIRS = 4_000_000  # candidate pairs expanded at once by close_to_other_split (memory bound)


@dataclass(frozen=True)
class BlockTable:
    """The blocks holding points: ``keys`` (m, 2) int64 (row, col), sorted; ``of_point`` (n,) index of each
    point's block in ``keys``; ``sizes`` (m,) points per block."""

    keys: np.ndarray
    of_point: np.ndarray
    sizes: np.ndarray
    block_m: float

    def bounds(self, i: int) -> tuple[float, float, float, float]:
        """(minx, miny, maxx, maxy) of block ``i`` in the reference CRS, metres."""
        r, c = (int(v) for v in self.keys[i])
        b = self.block_m
        return (c * b, -(r + 1) * b, (c + 1) * b, -r * b)


def block_rc(xy: np.ndarray, block_m: float) -> np.ndarray:
    """(n, 2) int64 block (row, col) of points ``xy`` (n, 2)."""
    return np.stack([np.floor(-xy[:, 1] / block_m), np.floor(xy[:, 0] / block_m)], axis=1).astype(np.int64)


def block_table(xy: np.ndarray, block_m: float) -> BlockTable:
    rc = block_rc(xy, block_m)
    lo = rc.min(axis=0) if len(rc) else np.zeros(2, np.int64)
    width = int(rc[:, 1].max() - lo[1] + 1) if len(rc) else 1
    packed, of_point, sizes = np.unique((rc[:, 0] - lo[0]) * width + (rc[:, 1] - lo[1]), return_inverse=True,
                                        return_counts=True)
    keys = np.stack([packed // width + lo[0], packed % width + lo[1]], axis=1)  # sorted by (row, col)
    return BlockTable(keys.reshape(-1, 2), of_point.ravel(), sizes, block_m)


def _lookup(keys: np.ndarray, rc: np.ndarray) -> np.ndarray:
    """Index of each row of ``rc`` in the sorted unique ``keys`` (-1 where absent)."""
    lo = keys.min(axis=0) - 1
    width = int(keys[:, 1].max() - lo[1] + 2)
    packed = (keys[:, 0] - lo[0]) * width + (keys[:, 1] - lo[1])
    inside = (rc[:, 0] > lo[0]) & (rc[:, 1] > lo[1]) & (rc[:, 1] - lo[1] < width)
    q = np.where(inside, (rc[:, 0] - lo[0]) * width + (rc[:, 1] - lo[1]), -1)
    pos = np.clip(np.searchsorted(packed, q), 0, len(packed) - 1)
    return np.where(inside & (packed[pos] == q), pos, -1)


def _neighbours(xy: np.ndarray, table: BlockTable, dist: float, edge_d: np.ndarray | None = None
                ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """For each block offset around a point's own block: (points closer than ``dist`` to that block, the
    block's index in ``table`` or -1 where it holds no point). ``edge_d``: :func:`edge_distance` if known."""
    b = table.block_m
    edge_d = edge_distance(xy, table) if edge_d is None else edge_d
    edge = np.flatnonzero(edge_d < dist)  # only these can be closer than ``dist`` to another block
    own = table.keys[table.of_point[edge]]
    x, s = xy[edge, 0], -xy[edge, 1]
    k = math.ceil(dist / b)
    for dr in range(-k, k + 1):
        for dc in range(-k, k + 1):
            if dr == 0 and dc == 0:
                continue
            r, c = own[:, 0] + dr, own[:, 1] + dc
            dx = np.maximum(np.maximum(c * b - x, x - (c + 1) * b), 0.0)
            ds = np.maximum(np.maximum(r * b - s, s - (r + 1) * b), 0.0)
            near = np.flatnonzero(dx * dx + ds * ds < dist * dist)
            yield edge[near], _lookup(table.keys, np.stack([r[near], c[near]], axis=1))


def edge_distance(xy: np.ndarray, table: BlockTable) -> np.ndarray:
    """Distance (metres, reference CRS) of each point to the nearest edge of its own block: any other block
    is at least that far, so only points with ``edge_distance < dist`` can be closer than ``dist`` to one."""
    b = table.block_m
    own = table.keys[table.of_point]
    x, s = xy[:, 0], -xy[:, 1]
    ex = np.minimum(x - own[:, 1] * b, (own[:, 1] + 1) * b - x)
    es = np.minimum(s - own[:, 0] * b, (own[:, 0] + 1) * b - s)
    return np.minimum(ex, es)


def near_blocks(xy: np.ndarray, table: BlockTable, dist: float, edge_d: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """(point, block) index pairs: blocks of ``table`` other than the point's own, closer than ``dist``."""
    if dist <= 0 or len(xy) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    pairs = [(near[idx >= 0], idx[idx >= 0]) for near, idx in _neighbours(xy, table, dist, edge_d)]
    return np.concatenate([p for p, _ in pairs]), np.concatenate([b for _, b in pairs])


def buffer_mask(table: BlockTable, pairs: tuple[np.ndarray, np.ndarray], codes: np.ndarray) -> np.ndarray:
    """Points (bool, n) with a block of another split among their ``pairs`` (from :func:`near_blocks`)."""
    masked = np.zeros(len(table.of_point), dtype=bool)
    pt, blk = pairs
    other = codes[blk] != codes[table.of_point[pt]]
    masked[pt[other]] = True
    return masked


def facing_other(xy: np.ndarray, table: BlockTable, codes: np.ndarray, dist: float,
                 edge_d: np.ndarray | None = None) -> np.ndarray:
    """Points (bool, n) closer than ``dist`` to a block that is not of their split: another split's, or one
    holding no point (a point of another split closer than ``dist`` can only be found from these)."""
    out = np.zeros(len(xy), dtype=bool)
    if dist <= 0 or len(xy) == 0:
        return out
    mine = codes[table.of_point]
    for near, idx in _neighbours(xy, table, dist, edge_d):
        out[near[(idx < 0) | (codes[np.maximum(idx, 0)] != mine[near])]] = True
    return out


def close_to_other_split(xy: np.ndarray, codes: np.ndarray, dist: float,
                         consider: np.ndarray | None = None) -> np.ndarray:
    """Points (bool, n) closer than ``dist`` to a point of another split (``codes``), exact.

    Only points where ``consider`` is True take part (both as queries and as neighbours). Points are hashed
    into ``dist``-sized cells; each is compared with the points of the 3 x 3 cells around it.
    """
    n = len(xy)
    out = np.zeros(n, dtype=bool)
    sel = np.flatnonzero(consider) if consider is not None else np.arange(n)
    if dist <= 0 or len(sel) < 2:
        return out
    p, code = xy[sel], codes[sel]
    cell = np.floor(p / dist).astype(np.int64)
    cell -= cell.min(axis=0) - 1
    width = int(cell[:, 0].max() + 2)
    key = cell[:, 1] * width + cell[:, 0]
    order = np.argsort(key, kind="stable")
    skey = key[order]
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            q = key + dy * width + dx
            lo, hi = np.searchsorted(skey, q, "left"), np.searchsorted(skey, q, "right")
            _mark_close(p, code, order, lo, hi, dist, out, sel)
    return out


def _mark_close(p: np.ndarray, code: np.ndarray, order: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                dist: float, out: np.ndarray, sel: np.ndarray) -> None:
    """Mark in ``out`` the queries i with a neighbour j in ``order[lo[i]:hi[i]]`` of another code closer
    than ``dist`` (pairs expanded in chunks of at most MAX_PAIRS)."""
    counts = hi - lo
    start = 0
    while start < len(p):
        csum = np.cumsum(counts[start:])
        stop = start + max(1, int(np.searchsorted(csum, MAX_PAIRS, "right")))
        i = np.arange(start, stop)
        c = counts[i]
        qi = np.repeat(i, c)
        first = np.repeat(np.cumsum(c) - c, c)
        j = order[np.repeat(lo[i], c) + np.arange(int(c.sum())) - first]
        d = p[qi] - p[j]
        hit = (code[qi] != code[j]) & ((d * d).sum(axis=1) < dist * dist)
        out[sel[qi[hit]]] = True
        start = stop


def _greedy(keys: list[BlockKey], sizes: Mapping[BlockKey, int], fr: tuple[float, float, float],
            order: np.ndarray) -> tuple[dict[BlockKey, str], dict[str, int]]:
    counts = [0] * len(SPLITS)
    out: dict[BlockKey, str] = {}
    seeding = [i for i, f in enumerate(fr) if f > 0]  # train, then val, then test
    total = 0
    size_of = [int(sizes[k]) for k in keys]
    for i, idx in enumerate(order.tolist()):
        key, size = keys[idx], size_of[idx]
        if i < len(seeding):
            best = seeding[i]
        else:  # the split furthest below its share (the first of equals, in SPLITS order)
            t = total + size
            best, gap = 0, fr[0] * t - counts[0]
            for j in range(1, len(SPLITS)):
                g = fr[j] * t - counts[j]
                if g > gap:
                    best, gap = j, g
        out[key] = SPLITS[best]
        counts[best] += size
        total += size
    return out, dict(zip(SPLITS, counts, strict=True))


def split_score(counts: Mapping[str, int], fr: Sequence[float]) -> float:
    """Lower is better: 10 per split with a positive fraction and no labelled pixel, plus the sum of squared
    differences between the splits' shares and ``fr``."""
    total = float(sum(counts.values()))
    empty = sum(1 for s, f in zip(SPLITS, fr, strict=True) if f > 0 and counts.get(s, 0) == 0)
    if total == 0:
        return 10.0 * len(SPLITS)
    return 10.0 * empty + sum((counts.get(s, 0) / total - f) ** 2 for s, f in zip(SPLITS, fr, strict=True))


def assign_blocks(block_sizes: Mapping[BlockKey, int], fractions: Sequence[float], seed: int, trials: int = 32,
                  kept_counts: Callable[[dict[BlockKey, str]], dict[str, int]] | None = None
                  ) -> dict[BlockKey, str]:
    """Assign blocks to splits so that their labelled pixels approach ``fractions`` (train, val, test).

    ``block_sizes``: labelled pixels per block. One trial visits the blocks in a seeded random order: every
    split with a positive fraction first gets one block (train, val, test in that order), then each block
    goes to the split furthest below its target share of the labelled pixels assigned so far. Of ``trials``
    orders the one with the lowest :func:`split_score` wins, scored on ``kept_counts(assignment)`` when given
    (the labelled pixels each split keeps after the buffer) else on the assigned sizes. Deterministic for a
    given set of blocks and seed.
    """
    fr = check_fractions(fractions)
    keys = sorted(block_sizes)
    if not keys:
        return {}
    rng = np.random.default_rng(seed)
    best: tuple[float, dict[BlockKey, str]] | None = None
    for _ in range(max(1, trials)):
        out, counts = _greedy(keys, block_sizes, fr, rng.permutation(len(keys)))
        score = split_score(kept_counts(out) if kept_counts else counts, fr)
        if best is None or score < best[0] - 1e-12:
            best = (score, out)
    assert best is not None
    return best[1]
