"""Shot filters: which GEDI L4A footprints become labels, and how many each filter removed.

Filters run in the fixed order of :data:`FILTER_KEYS`; each count is the number of shots that
filter removed from those still left after the previous ones, so
``input - sum(removed) == kept`` always holds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

import numpy as np

from core.constants import AGBD_FILL
from labels.granule import GEDI_EPOCH

"""``agbd``/``agbd_se`` fill value in L4A files (there is no ``_FillValue`` attribute)."""

FILTER_KEYS = ("outside_area", "outside_dates", "fill", "l4_quality", "degraded", "sensitivity",
               "leaf_off", "pft")
"""Order in which filters run; ``outside_area`` is decided from lat/lon before anything else is read."""

CORE_DATASETS = ("lat_lowestmode", "lon_lowestmode", "agbd", "shot_number", "delta_time")
OPTIONAL_DATASETS = ("agbd_se", "l4_quality_flag", "l2_quality_flag", "degrade_flag", "sensitivity",
                     "land_cover_data/pft_class", "land_cover_data/leaf_off_flag", "selected_algorithm")
"""Read when present; a missing one becomes a column of its fill value (NaN / 255) and a warning."""


@dataclass(frozen=True)
class ShotFilters:
    """Shot selection parameters.

    ``start``/``end``: inclusive UTC date window (None = no limit). ``require_l4_quality``: keep
    ``l4_quality_flag == 1``. ``drop_degraded``: keep ``degrade_flag == 0``. ``min_sensitivity``: keep
    ``sensitivity >= value`` (None = off). ``leaf_on_only``: keep ``leaf_off_flag == 0`` (drops 1 =
    leaf-off and 255 = not applicable). ``pft_classes``: keep these MODIS PFT classes (None = all).
    ``agbd == -9999`` (fill) is always dropped.
    """

    start: date | None = None
    end: date | None = None
    require_l4_quality: bool = True
    drop_degraded: bool = True
    min_sensitivity: float | None = None
    leaf_on_only: bool = False
    pft_classes: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.start and self.end and self.end < self.start:
            raise ValueError(f"date window end {self.end} is before start {self.start}")
        if self.min_sensitivity is not None and not 0.0 <= float(self.min_sensitivity) <= 1.0:
            raise ValueError(f"min_sensitivity must be within 0-1, got {self.min_sensitivity}")
        if self.pft_classes is not None:
            object.__setattr__(self, "pft_classes", tuple(sorted(int(c) for c in self.pft_classes)))

    def required_datasets(self) -> tuple[str, ...]:
        """Beam datasets the active filters need (a granule without them is an error)."""
        need = list(CORE_DATASETS)
        if self.require_l4_quality:
            need.append("l4_quality_flag")
        if self.drop_degraded:
            need.append("degrade_flag")
        if self.min_sensitivity is not None:
            need.append("sensitivity")
        if self.leaf_on_only:
            need.append("land_cover_data/leaf_off_flag")
        if self.pft_classes is not None:
            need.append("land_cover_data/pft_class")
        return tuple(need)

    def delta_time_window(self) -> tuple[float, float]:
        """``[t0, t1)`` in seconds since 2018-01-01T00:00Z covering the whole days start..end."""
        t0 = -np.inf if self.start is None else _seconds(self.start)
        t1 = np.inf if self.end is None else _seconds(self.end + timedelta(days=1))
        return float(t0), float(t1)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["start"] = self.start.isoformat() if self.start else None
        d["end"] = self.end.isoformat() if self.end else None
        d["pft_classes"] = list(self.pft_classes) if self.pft_classes is not None else None
        return d


def _seconds(day: date) -> float:
    return (datetime.combine(day, time(0), tzinfo=GEDI_EPOCH.tzinfo) - GEDI_EPOCH).total_seconds()


def empty_counts() -> dict[str, int]:
    """``{"input": 0, <filter>: 0 ..., "kept": 0}``."""
    return {"input": 0, **{k: 0 for k in FILTER_KEYS}, "kept": 0}


def add_counts(total: dict[str, int], part: dict[str, int]) -> None:
    """Add ``part`` into ``total`` in place."""
    for k, v in part.items():
        total[k] = total.get(k, 0) + int(v)


def filter_masks(cols: dict[str, np.ndarray], f: ShotFilters) -> list[tuple[str, np.ndarray | None]]:
    """(filter key, keep mask) for every filter after the area, None where the filter is off."""
    t0, t1 = f.delta_time_window()
    dt = cols["delta_time"]
    agbd = cols["agbd"]
    return [
        ("outside_dates", (dt >= t0) & (dt < t1) if f.start or f.end else None),
        ("fill", (agbd != AGBD_FILL) & np.isfinite(agbd)),
        ("l4_quality", cols["l4_quality_flag"] == 1 if f.require_l4_quality else None),
        ("degraded", cols["degrade_flag"] == 0 if f.drop_degraded else None),
        ("sensitivity", cols["sensitivity"] >= np.float32(f.min_sensitivity)
         if f.min_sensitivity is not None else None),
        ("leaf_off", cols["land_cover_data/leaf_off_flag"] == 0 if f.leaf_on_only else None),
        ("pft", np.isin(cols["land_cover_data/pft_class"], np.asarray(f.pft_classes))
         if f.pft_classes is not None else None),
    ]


def apply_filters(cols: dict[str, np.ndarray], f: ShotFilters) -> tuple[np.ndarray, dict[str, int]]:
    """Keep mask over the shots in ``cols`` and the number each filter removed (sequentially)."""
    n = len(cols["agbd"])
    keep = np.ones(n, dtype=bool)
    removed: dict[str, int] = {}
    for key, mask in filter_masks(cols, f):
        if mask is None:
            removed[key] = 0
            continue
        drop = keep & ~mask
        removed[key] = int(drop.sum())
        keep &= mask
    return keep, removed
