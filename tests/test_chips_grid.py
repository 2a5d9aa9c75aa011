"""Chip lattice, spatial-block split and per-band statistics (pure functions)."""

from __future__ import annotations

import numpy as np
import pytest

from chips.lattice import (
    ChipLayout,
    ChipLayoutError,
    assign_blocks,
    check_fractions,
    chip_positions,
    footprints_touch,
    grid_lattice_origin,
)
from chips.stats import StatsAccumulator, chip_band_stats, merge_stats
from core.grid import mgrs_tile_grid


@pytest.mark.parametrize(
    ("size", "chip", "stride", "k", "gap", "expected_cols"),
    [
        (10, 4, 4, 1, 1, [0, 5]),          # pitch 5: chips at 0 and 5 (5+4 = 9 <= 10)
        (10, 4, 4, 2, 1, [0, 4]),          # block of 2 chips = 8 px, next block at 9 does not fit
        (20, 4, 4, 2, 1, [0, 4, 9, 13]),   # pitch 9
        (20, 4, 2, 2, 1, [0, 2, 7, 9, 14, 16]),  # overlap inside a block, extent 6, pitch 7
        (3, 4, 4, 1, 1, []),               # grid smaller than a chip
    ],
)
def test_chip_positions_table(size: int, chip: int, stride: int, k: int, gap: int, expected_cols: list[int]) -> None:
    # A grid whose origin is lattice (0, 0): x = 0, y = 0.
    from core.grid import Grid

    g = Grid("EPSG:32610", (30.0, 0.0, 0.0, 0.0, -30.0, 0.0), size, size, "X")
    pos = chip_positions(g, ChipLayout(chip, stride, k, gap))
    cols = sorted(set(pos[:, 1].tolist()))
    assert cols == expected_cols
    assert len(pos) == len(expected_cols) ** 2
    assert (pos[:, 0] + chip <= size).all() and (pos[:, 1] + chip <= size).all()


def test_positions_shared_by_overlapping_tiles() -> None:
    """Two overlapping tiles of one zone propose the same ground positions in their overlap."""
    ek, fk = mgrs_tile_grid("10TEK"), mgrs_tile_grid("10TFK")
    lay = ChipLayout(64, 64, 2, 1)

    def ground(g):  # noqa: ANN001, ANN202
        gy0, gx0 = grid_lattice_origin(g)
        return {(gy0 + int(r), gx0 + int(c)) for r, c, _, _ in chip_positions(g, lay)}

    a, b = ground(ek), ground(fk)
    common = a & b
    assert common, "overlapping tiles must share lattice positions"
    # the shared positions lie in the 9.8 km (326 px) overlap
    west_fk, east_ek = fk.bounds[0] / 30, ek.bounds[2] / 30
    assert all(west_fk <= gx and gx + 64 <= east_ek for _, gx in common)
    assert len({gx for _, gx in common}) >= 3


def test_chips_of_different_blocks_never_touch() -> None:
    g = mgrs_tile_grid("10TEK").clip((500000, 4450000, 505000, 4455000))
    lay = ChipLayout(32, 24, 3, 1)
    pos = chip_positions(g, lay)
    boxes = [(c, r, c + 32, r + 32) for r, c, _, _ in pos]
    blocks = [(int(br), int(bc)) for _, _, br, bc in pos]
    # pixel-edge rectangles [c, c+32) touch when their closed extents minus one pixel meet
    for i in range(0, len(pos), 7):
        for j in range(len(pos)):
            if blocks[i] != blocks[j]:
                bi, bj = boxes[i], boxes[j]
                closed_i = (bi[0], bi[1], bi[2] - 1, bi[3] - 1)
                grown_j = (bj[0] - 1, bj[1] - 1, bj[2], bj[3])
                assert not footprints_touch(closed_i, grown_j), (pos[i], pos[j])


def test_layout_rejects_bad_values() -> None:
    with pytest.raises(ChipLayoutError, match="gap_px"):
        ChipLayout(224, 224, 4, 0)
    with pytest.raises(ChipLayoutError, match="chip_size"):
        ChipLayout(0, 224, 4, 1)
    with pytest.raises(ChipLayoutError, match="sum"):
        check_fractions((0.5, 0.2, 0.2))
    with pytest.raises(ChipLayoutError, match="train"):
        check_fractions((0.0, 0.5, 0.5))


def test_assign_blocks_fractions_and_determinism() -> None:
    sizes = {(32610, r, c): 16 for r in range(10) for c in range(10)}
    a = assign_blocks(sizes, (0.7, 0.15, 0.15), seed=0)
    b = assign_blocks(sizes, (0.7, 0.15, 0.15), seed=0)
    c = assign_blocks(sizes, (0.7, 0.15, 0.15), seed=1)
    assert a == b
    assert a != c
    counts = {s: sum(1 for v in a.values() if v == s) for s in ("train", "val", "test")}
    assert counts == {"train": 70, "val": 15, "test": 15}


@pytest.mark.parametrize(
    ("n_blocks", "expected"),
    [(1, {"train": 1}), (2, {"train": 1, "val": 1}), (3, {"train": 1, "val": 1, "test": 1})],
)
def test_assign_blocks_few_blocks(n_blocks: int, expected: dict[str, int]) -> None:
    sizes = {(32610, 0, i): 5 for i in range(n_blocks)}
    got = assign_blocks(sizes, (0.7, 0.15, 0.15), seed=3)
    counts: dict[str, int] = {}
    for v in got.values():
        counts[v] = counts.get(v, 0) + 1
    assert counts == expected


def test_assign_blocks_zero_fraction_split_stays_empty() -> None:
    sizes = {(32610, 0, i): 5 for i in range(20)}
    got = assign_blocks(sizes, (0.8, 0.2, 0.0), seed=0)
    assert "test" not in set(got.values())
    assert sum(1 for v in got.values() if v == "val") == 4


@pytest.mark.parametrize("case", ["all_valid", "some_nodata", "all_nodata_band", "nan"])
def test_chip_stats_merge_equals_pooled(case: str) -> None:
    rng = np.random.default_rng(5)
    chips = [rng.normal(1000, 300, size=(3, 16, 16)).astype(np.float32) for _ in range(4)]
    if case == "some_nodata":
        chips[1][:, :5] = -9999
        chips[2][0, 3, 3] = -9999
    if case == "all_nodata_band":
        chips[0][2] = -9999
        chips[3][2] = -9999
    if case == "nan":
        chips[2][1, :2] = np.nan
    acc = StatsAccumulator(3)
    for ch in chips:
        acc.add(chip_band_stats(ch, -9999.0))
    for b in range(3):
        pooled = np.concatenate([ch[b].ravel() for ch in chips]).astype(np.float64)
        pooled = pooled[(pooled != -9999) & np.isfinite(pooled)]
        n, mean, m2, lo, hi = acc.table[b]
        assert n == pooled.size
        assert mean == pytest.approx(pooled.mean(), rel=1e-6)
        assert np.sqrt(m2 / n) == pytest.approx(pooled.std(), rel=1e-5)
        assert (lo, hi) == (pooled.min(), pooled.max())


def test_merge_stats_with_empty() -> None:
    a = np.zeros((1, 5))
    b = chip_band_stats(np.array([[[1.0, 3.0]]], dtype=np.float32), -9999.0)
    assert merge_stats(a, b).tolist() == b.tolist()
    assert merge_stats(b, a).tolist() == b.tolist()


@pytest.mark.parametrize(
    ("rows", "cs", "max_rows", "expected"),
    [
        ([0, 0, 224, 448, 672, 897], 224, 1024, [[0, 224, 448, 672], [897]]),
        ([0, 224], 224, 100, [[0], [224]]),  # a group always holds at least one chip row
        ([5, 5, 5], 32, 64, [[5]]),
        ([0, 24, 48, 72], 32, 64, [[0, 24], [48, 72]]),
    ],
)
def test_row_groups(rows: list[int], cs: int, max_rows: int, expected: list[list[int]]) -> None:
    from chips.cutting import _row_groups

    got = [g.tolist() for g in _row_groups(np.array(rows), cs, max_rows)]
    assert got == expected
    assert all(g[-1] + cs - g[0] <= max(cs, max_rows) for g in got)


def test_assign_blocks_uneven_sizes_near_fractions() -> None:
    rng = np.random.default_rng(0)
    sizes = {(32610, 0, i): int(rng.integers(1, 17)) for i in range(30)}
    got = assign_blocks(sizes, (0.7, 0.15, 0.15), seed=0)
    total = sum(sizes.values())
    share = {s: sum(sizes[k] for k, v in got.items() if v == s) / total for s in ("train", "val", "test")}
    assert share["train"] == pytest.approx(0.7, abs=0.03)
    assert share["val"] == pytest.approx(0.15, abs=0.03) and share["test"] == pytest.approx(0.15, abs=0.03)
