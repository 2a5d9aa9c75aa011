"""Shot filters: table-style checks of each filter alone, their order and the count invariant."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest

from labels.filters import FILTER_KEYS, ShotFilters, apply_filters

# one column per shot: the values are chosen so each shot fails exactly the filter named in `fails`
SHOTS = {
    "fails":      ["",    "fill",  "l4",  "deg", "sens", "leaf", "pft", "date", "",    ""],
    "agbd":       [10.0, -9999.0,  20.0,  30.0,  40.0,   50.0,   60.0,  70.0,   80.0,  90.0],
    "l4_quality_flag": [1,  0,     0,     1,     1,      1,      1,     1,      1,     1],
    "degrade_flag":    [0,  0,     0,     74,    0,      0,      0,     0,      0,     0],
    "sensitivity":     [.99, .99,  .99,   .99,   .5,     .99,    .99,   .99,    .95,   .99],
    "land_cover_data/leaf_off_flag": [0, 0, 0, 0, 0,     255,    0,     0,      0,     0],
    "land_cover_data/pft_class":     [4, 4, 4, 4, 4,     4,      11,    4,      1,     4],
}
DAY = 86400.0
T0 = (date(2023, 6, 1) - date(2018, 1, 1)).days * DAY  # 2023-06-01T00:00Z in GEDI delta_time
SHOTS["delta_time"] = [T0, T0, T0, T0, T0, T0, T0, T0 + 30 * DAY, T0 + 29 * DAY + DAY - 1e-3, T0 + 1]


def _cols() -> dict[str, np.ndarray]:
    dt = {"agbd": np.float32, "sensitivity": np.float32, "delta_time": np.float64}
    return {k: np.asarray(v, dtype=dt.get(k, np.uint8)) for k, v in SHOTS.items() if k != "fails"}


ALL_ON = dict(start=date(2023, 6, 1), end=date(2023, 6, 30), require_l4_quality=True, drop_degraded=True,
              min_sensitivity=0.9, leaf_on_only=True, pft_classes=(1, 2, 4))


@pytest.mark.parametrize("params, expected", [
    (dict(require_l4_quality=False, drop_degraded=False), {"fill": 1}),
    (dict(drop_degraded=False), {"fill": 1, "l4_quality": 1}),
    (dict(), {"fill": 1, "l4_quality": 1, "degraded": 1}),
    (dict(min_sensitivity=0.9), {"fill": 1, "l4_quality": 1, "degraded": 1, "sensitivity": 1}),
    (dict(min_sensitivity=0.96), {"fill": 1, "l4_quality": 1, "degraded": 1, "sensitivity": 2}),
    (dict(leaf_on_only=True), {"fill": 1, "l4_quality": 1, "degraded": 1, "leaf_off": 1}),
    (dict(pft_classes=[4]), {"fill": 1, "l4_quality": 1, "degraded": 1, "pft": 2}),
    (dict(start=date(2023, 6, 1), end=date(2023, 6, 30)), {"outside_dates": 1, "fill": 1, "l4_quality": 1,
                                                           "degraded": 1}),
    (ALL_ON, {"outside_dates": 1, "fill": 1, "l4_quality": 1, "degraded": 1, "sensitivity": 1, "leaf_off": 1,
              "pft": 1}),
])
def test_each_filter_removes_its_shots(params: dict, expected: dict) -> None:
    keep, removed = apply_filters(_cols(), ShotFilters(**params))
    assert set(removed) == set(FILTER_KEYS) - {"outside_area"}
    assert {k: v for k, v in removed.items() if v} == expected
    assert keep.sum() == len(SHOTS["agbd"]) - sum(expected.values())


def test_all_filters_keep_exactly_the_clean_shots() -> None:
    keep, _ = apply_filters(_cols(), ShotFilters(**ALL_ON))
    fails = np.array(SHOTS["fails"])
    np.testing.assert_array_equal(keep, fails == "")


def test_date_window_covers_whole_end_day() -> None:
    f = ShotFilters(start=date(2023, 6, 1), end=date(2023, 6, 30))
    t0, t1 = f.delta_time_window()
    assert t0 == T0 and t1 == T0 + 30 * DAY  # [Jun 1 00:00, Jul 1 00:00)


def test_filters_are_counted_in_order() -> None:
    # a fill shot that is also bad quality counts once, under "fill" (the earlier filter)
    cols = _cols()
    _, removed = apply_filters(cols, ShotFilters())
    assert removed["fill"] == 1 and cols["l4_quality_flag"][1] == 0


@pytest.mark.parametrize("bad", [dict(min_sensitivity=1.5), dict(start=date(2023, 7, 1), end=date(2023, 6, 1))])
def test_invalid_parameters_raise(bad: dict) -> None:
    with pytest.raises(ValueError):
        ShotFilters(**bad)


def test_required_datasets_follow_active_filters() -> None:
    base = set(ShotFilters(require_l4_quality=False, drop_degraded=False).required_datasets())
    assert "l4_quality_flag" not in base and "degrade_flag" not in base
    full = set(ShotFilters(**ALL_ON).required_datasets())
    assert full - base == {"l4_quality_flag", "degrade_flag", "sensitivity", "land_cover_data/leaf_off_flag",
                           "land_cover_data/pft_class"}
