"""Chip lattice, spatial blocks, split assignment, buffer and per-band statistics (pure functions)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from chips.blocks import (
    assign_blocks,
    block_table,
    buffer_mask,
    close_to_other_split,
    facing_other,
    near_blocks,
    split_score,
)
from chips.lattice import ChipLayout, ChipLayoutError, check_fractions, chip_positions, grid_lattice_origin
from chips.stats import StatsAccumulator, chip_band_stats, merge_many, merge_stats
from core.grid import mgrs_tile_grid


@pytest.mark.parametrize(
    ("x0", "size", "chip", "stride", "expected_cols"),
    [
        (0, 10, 4, 4, [0, 4]),             # global multiples of the stride that fit
        (0, 12, 4, 4, [0, 4, 8]),
        (0, 10, 4, 2, [0, 2, 4, 6]),       # overlapping chips
        (3, 10, 4, 4, [1, 5]),             # grid starting at lattice column 3: chips at global 4 and 8
        (0, 3, 4, 4, []),                  # grid smaller than a chip
    ],
)
def test_chip_positions_table(x0: int, size: int, chip: int, stride: int, expected_cols: list[int]) -> None:
    from core.grid import Grid

    g = Grid("EPSG:32610", (30.0, 0.0, 30.0 * x0, 0.0, -30.0, 0.0), size, size, "X")
    pos = chip_positions(g, ChipLayout(chip, stride))
    cols = sorted(set(pos[:, 1].tolist()))
    assert cols == expected_cols
    assert len(pos) == len(expected_cols) * len(set(pos[:, 0].tolist()))
    assert (pos[:, 0] + chip <= size).all() and (pos[:, 1] + chip <= size).all()
    assert ((pos[:, 1] + x0) % stride == 0).all()


def test_positions_shared_by_overlapping_tiles() -> None:
    """Two overlapping tiles of one zone propose the same ground positions in their overlap."""
    ek, fk = mgrs_tile_grid("10TEK"), mgrs_tile_grid("10TFK")
    lay = ChipLayout(64, 64)

    def ground(g):  # noqa: ANN001, ANN202
        gy0, gx0 = grid_lattice_origin(g)
        return {(gy0 + int(r), gx0 + int(c)) for r, c in chip_positions(g, lay)}

    a, b = ground(ek), ground(fk)
    common = a & b
    assert common, "overlapping tiles must share lattice positions"
    # the shared positions lie in the 9.8 km (326 px) overlap
    west_fk, east_ek = fk.bounds[0] / 30, ek.bounds[2] / 30
    assert all(west_fk <= gx and gx + 64 <= east_ek for _, gx in common)
    assert len({gx for _, gx in common}) >= 3


def test_layout_rejects_bad_values() -> None:
    with pytest.raises(ChipLayoutError, match="stride"):
        ChipLayout(224, 0)
    with pytest.raises(ChipLayoutError, match="chip_size"):
        ChipLayout(0, 224)
    with pytest.raises(ChipLayoutError, match="sum"):
        check_fractions((0.5, 0.2, 0.2))
    with pytest.raises(ChipLayoutError, match="train"):
        check_fractions((0.0, 0.5, 0.5))


def test_assign_blocks_fractions_and_determinism() -> None:
    sizes = {(r, c): 16 for r in range(10) for c in range(10)}
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
    sizes = {(0, i): 5 for i in range(n_blocks)}
    got = assign_blocks(sizes, (0.7, 0.15, 0.15), seed=3)
    counts: dict[str, int] = {}
    for v in got.values():
        counts[v] = counts.get(v, 0) + 1
    assert counts == expected


def test_assign_blocks_zero_fraction_split_stays_empty() -> None:
    sizes = {(0, i): 5 for i in range(20)}
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
    sizes = {(0, i): int(rng.integers(1, 17)) for i in range(30)}
    got = assign_blocks(sizes, (0.7, 0.15, 0.15), seed=0)
    total = sum(sizes.values())
    share = {s: sum(sizes[k] for k, v in got.items() if v == s) / total for s in ("train", "val", "test")}
    assert share["train"] == pytest.approx(0.7, abs=0.03)
    assert share["val"] == pytest.approx(0.15, abs=0.03) and share["test"] == pytest.approx(0.15, abs=0.03)


def _xy(points: list[tuple[float, float]]) -> np.ndarray:
    return np.asarray(points, dtype=np.float64)


def test_block_table_rows_and_bounds() -> None:
    # blocks of 1000 m: row = floor(-y / 1000), col = floor(x / 1000)
    t = block_table(_xy([(500, -500), (1500, -500), (1600, -900), (-10, 10)]), 1000.0)
    assert t.keys.tolist() == [[-1, -1], [0, 0], [0, 1]]
    assert t.of_point.tolist() == [1, 2, 2, 0] and t.sizes.tolist() == [1, 1, 2]
    assert t.bounds(1) == (0.0, -1000.0, 1000.0, 0.0)


def test_facing_other_counts_blocks_of_other_splits_and_empty_blocks() -> None:
    pts = _xy([(950, -500), (1050, -500), (1500, -500), (1500, -950), (500, -500)])  # blocks (0,0), (0,1) x3, (0,0)
    t = block_table(pts, 1000.0)
    same = np.array([0, 0])
    # (0,0)/(0,1) share a split: only points near blocks without points (rows 1 / -1, cols -1 / 2) count
    assert facing_other(pts, t, same, 100.0).tolist() == [False, False, False, True, False]
    assert facing_other(pts, t, np.array([0, 1]), 100.0).tolist() == [True, True, False, True, False]


@pytest.mark.parametrize(
    ("point", "dist", "expected"),
    [
        ((950, -500), 100, {(0, 1)}),                 # 50 m from the east neighbour
        ((950, -500), 40, set()),                    # too far for 40 m
        ((960, -960), 100, {(0, 1), (1, 0), (1, 1)}),  # a corner: the diagonal block is 56.6 m away
        ((930, -930), 90, {(0, 1), (1, 0)}),          # the diagonal block is 99 m away
        ((500, -500), 1600, {(0, 1), (1, 0), (1, 1)}),  # larger than a block: every other block
    ],
)
def test_near_blocks_euclidean_distance(point: tuple[float, float], dist: float, expected: set) -> None:
    pts = _xy([point, (1500, -500), (500, -1500), (1500, -1500)])  # blocks (0,0), (0,1), (1,0), (1,1)
    t = block_table(pts, 1000.0)
    p, b = near_blocks(pts, t, dist)
    got = {tuple(t.keys[j].tolist()) for i, j in zip(p, b, strict=True) if i == 0}
    assert got == expected


def test_buffer_mask_only_faces_other_splits() -> None:
    pts = _xy([(950, -500), (1050, -500), (1500, -500), (2950, -500)])  # blocks (0,0), (0,1), (0,1), (0,2)
    t = block_table(pts, 1000.0)
    pairs = near_blocks(pts, t, 100.0)
    assert buffer_mask(t, pairs, np.array([0, 0, 0])).tolist() == [False] * 4  # one split: nothing masked
    assert buffer_mask(t, pairs, np.array([0, 1, 1])).tolist() == [True, True, False, False]
    assert buffer_mask(t, pairs, np.array([0, 1, 2])).tolist() == [True, True, False, False]  # (0,2) is 950 m away


def test_close_to_other_split_equals_brute_force() -> None:
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 3000, size=(1500, 2))
    codes = rng.integers(0, 3, size=1500)
    consider = rng.random(1500) < 0.8
    got = close_to_other_split(xy, codes, 120.0, consider)
    d = np.hypot(*(xy[:, None, :] - xy[None, :, :]).transpose(2, 0, 1))
    other = (codes[:, None] != codes[None, :]) & consider[:, None] & consider[None, :]
    expected = ((d < 120.0) & other).any(axis=1)
    assert got.tolist() == expected.tolist() and expected.sum() > 10


def test_close_to_other_split_chunks_like_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    import chips.blocks as blocks

    xy = np.random.default_rng(2).uniform(0, 500, size=(400, 2))
    codes = np.arange(400) % 2
    whole = close_to_other_split(xy, codes, 40.0)
    monkeypatch.setattr(blocks, "MAX_PAIRS", 7)
    assert close_to_other_split(xy, codes, 40.0).tolist() == whole.tolist()


@pytest.mark.parametrize(
    ("counts", "fractions", "expected"),
    [({"train": 70, "val": 15, "test": 15}, (0.7, 0.15, 0.15), 0.0),
     ({"train": 100, "val": 0, "test": 0}, (0.7, 0.15, 0.15), 20.0 + 0.09 + 0.0225 * 2),
     ({"train": 100, "val": 0, "test": 0}, (1.0, 0.0, 0.0), 0.0)],
)
def test_split_score(counts: dict[str, int], fractions: tuple[float, float, float], expected: float) -> None:
    assert split_score(counts, fractions) == pytest.approx(expected)


def test_assign_blocks_scores_on_kept_counts() -> None:
    """With a scorer that says val keeps nothing unless block (0, 0) is val, the winner makes it val."""
    sizes = {(0, i): 10 for i in range(12)}

    def kept(assign: dict) -> dict[str, int]:
        n = {s: 10 * sum(1 for v in assign.values() if v == s) for s in ("train", "val", "test")}
        if assign[(0, 0)] != "val":
            n["val"] = 0
        return n

    got = assign_blocks(sizes, (0.7, 0.15, 0.15), seed=0, kept_counts=kept)
    assert got[(0, 0)] == "val"


@pytest.mark.parametrize("case", ["plain", "empty_tables", "empty_band", "single"])
def test_merge_many_equals_pairwise_merges(case: str) -> None:
    rng = np.random.default_rng(11)
    chips = [rng.normal(900, 250, size=(2, 8, 8)).astype(np.float32) for _ in range(5)]
    if case == "empty_band":
        for ch in chips[:3]:
            ch[1] = -9999
    tables = [chip_band_stats(ch, -9999.0) for ch in chips]
    if case == "empty_tables":
        tables = [np.zeros((2, 5))] + tables + [np.zeros((2, 5))]
    if case == "single":
        tables = tables[:1]
    pairwise = np.zeros((2, 5))
    for t in tables:
        pairwise = merge_stats(pairwise, t)
    many = merge_many(np.stack(tables))
    assert many[:, 0].tolist() == pairwise[:, 0].tolist()  # counts exact
    assert many[:, 3:].tolist() == pairwise[:, 3:].tolist()  # min, max exact
    np.testing.assert_allclose(many[:, 1:3], pairwise[:, 1:3], rtol=1e-12)
    acc = StatsAccumulator(2)
    acc.add_many(tables)
    np.testing.assert_allclose(acc.table, pairwise, rtol=1e-12)


def test_merge_many_all_empty() -> None:
    assert merge_many(np.zeros((3, 2, 5))).tolist() == np.zeros((2, 5)).tolist()


def _rect_dist(xy: np.ndarray, key: np.ndarray, b: float) -> np.ndarray:
    """Distance (m) of each point to block ``key`` = (row, col) of side ``b`` (brute force)."""
    r, c = key
    dx = np.maximum.reduce([c * b - xy[:, 0], xy[:, 0] - (c + 1) * b, np.zeros(len(xy))])
    ds = np.maximum.reduce([r * b + xy[:, 1], -xy[:, 1] - (r + 1) * b, np.zeros(len(xy))])
    return np.hypot(dx, ds)


@pytest.mark.parametrize("dist", [30.0, 250.0, 999.0, 1600.0])
def test_near_blocks_and_facing_other_equal_brute_force(dist: float) -> None:
    """Only points near their own block's edge are examined: the pairs and flags are those of every point."""
    rng = np.random.default_rng(7)
    xy = np.stack([rng.uniform(0, 5000, 800), -rng.uniform(0, 4000, 800)], axis=1)
    xy = np.concatenate([xy, [[1000.0, -500.0], [2000.0, -2000.0], [999.999, -1000.0]]])  # on block edges
    t = block_table(xy, 1000.0)
    codes = rng.integers(0, 3, len(t.keys))
    p, b = near_blocks(xy, t, dist)
    got = set(zip(p.tolist(), b.tolist(), strict=True))
    own = t.of_point
    expected = {(i, j) for j, key in enumerate(t.keys) for i in np.flatnonzero(_rect_dist(xy, key, 1000.0) < dist)
                if own[i] != j}
    assert got == expected and len(expected) > 50
    # facing_other: a block of another split, or an empty block (any block key not in the table) within dist
    k = int(np.ceil(dist / 1000.0))
    facing = np.zeros(len(xy), dtype=bool)
    table_idx = {tuple(key): j for j, key in enumerate(t.keys.tolist())}
    for i in range(len(xy)):
        r, c = t.keys[own[i]]
        for dr in range(-k, k + 1):
            for dc in range(-k, k + 1):
                key = (int(r + dr), int(c + dc))
                if (dr or dc) and _rect_dist(xy[i:i + 1], np.array(key), 1000.0)[0] < dist:
                    j = table_idx.get(key)
                    facing[i] |= j is None or codes[j] != codes[own[i]]
    assert facing_other(xy, t, codes, dist).tolist() == facing.tolist()


def test_split_kept_counts_equal_buffer_mask() -> None:
    """The split scores on kept pixels counted from the paired points only: equal to counting buffer_mask."""
    from types import SimpleNamespace

    import chips.splits as splits

    rng = np.random.default_rng(3)
    xy = np.stack([rng.uniform(0, 20000, 20000), -rng.uniform(0, 20000, 20000)], axis=1)
    pts = splits._Points(xy, [], 32610, 30.0)
    t = block_table(xy, 5000.0)
    seen: list[tuple[dict, dict]] = []

    def spy(sizes, fractions, seed, kept_counts):  # noqa: ANN001, ANN202
        for s in range(4):
            a = dict(zip(sorted(sizes), (np.random.default_rng(s).integers(0, 3, len(sizes))), strict=True))
            a = {k: ("train", "val", "test")[int(v)] for k, v in a.items()}
            seen.append((a, kept_counts(a)))
        return a

    orig = splits.assign_blocks
    splits.assign_blocks = spy
    try:
        splits._assign(pts, t, SimpleNamespace(split_buffer_m=500.0, split_fractions=(0.7, 0.15, 0.15), seed=0))
    finally:
        splits.assign_blocks = orig
    pairs = near_blocks(xy, t, 250.0)
    for a, counts in seen:
        codes = np.array([("train", "val", "test").index(a[(int(r), int(c))]) for r, c in t.keys])
        kept = ~buffer_mask(t, pairs, codes)
        n = np.bincount(codes[t.of_point][kept], minlength=3)
        assert counts == {"train": int(n[0]), "val": int(n[1]), "test": int(n[2])}
    assert len(seen) == 4


@pytest.mark.parametrize("doc", [{"a": 1}, {"rows": [{"x": 1, "y": [1, 2]}, {"x": 2}], "e": [], "l": [1, 2]},
                                 {"b": {"q": [1.5, None]}, "s": "é\n"}])
def test_dumps_rows_round_trips(doc: dict) -> None:
    from chips.export import dumps_rows

    text = dumps_rows(doc)
    assert json.loads(text) == doc
    if "rows" in doc:
        assert '\n  {"x": 2}\n' in text  # one line per row
