"""Which date window a year's composite uses: the hemisphere leaf-on rule, or (tropics) the driest window.

Outside the tropics the default season is the leaf-on window of the area's hemisphere
(:func:`core.area.default_season`). Within the tropics there is no leaf-on season, and the hemisphere
rule would pick the wet season (December-March in the southern tropics, e.g. Tambopata, Peru): there the
window is the **4-month window with the lowest mean ``eo:cloud_cover`` over the year's scenes** (from the
search, every scene of the calendar year, no cloud filter). Candidate windows are whole calendar months
inside the year (January-April ... September-December), so the window of year Y lies in year Y; a
window needs at least one scene; ties go to the window with more scenes, then the earlier one.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from core.area import AoiError, Season, default_season, is_tropical, parse_aoi
from core.contracts import Contract

WINDOW_MONTHS = 4
RULE_EXPLICIT = "explicit"
RULE_HEMISPHERE = "hemisphere-leaf-on"
RULE_TROPICAL = "tropical-lowest-cloud"


@dataclass(frozen=True)
class SeasonChoice(Contract):
    """The window of one year and why it was chosen.

    ``rule``: ``explicit`` (a ``season`` parameter), ``hemisphere-leaf-on`` (north Jun 1-Sep 30, south
    Dec 1 of year-1 - Mar 31) or ``tropical-lowest-cloud``. For the tropical rule ``mean_cloud_cover``
    (percent) and ``n_scenes`` describe the chosen window, ``windows`` every candidate
    (``"YYYY-MM..YYYY-MM"`` -> ``{"mean_cloud_cover", "n_scenes"}``; null mean: no scene) and
    ``search`` the saved year-long search. ``gedi_days``: days of the window with GEDI shots (set by the
    caller; None when not checked).
    """

    year: int
    start: str
    end: str
    rule: str
    mean_cloud_cover: float | None = None
    n_scenes: int | None = None
    windows: dict[str, dict[str, Any]] = field(default_factory=dict)
    search: str | None = None
    gedi_days: int | None = None

    @property
    def season(self) -> Season:
        return Season.from_any({"start": self.start, "end": self.end})

    @property
    def label(self) -> str:
        return self.season.label


def hemisphere_choice(aoi: Any, year: int) -> SeasonChoice:
    s = default_season(parse_aoi(aoi), year)
    return SeasonChoice(year=year, start=s.start.isoformat(), end=s.end.isoformat(), rule=RULE_HEMISPHERE)


def explicit_choice(season: Any, year: int | None = None) -> SeasonChoice:
    s = Season.from_any(season)
    return SeasonChoice(year=year if year is not None else s.end.year, start=s.start.isoformat(),
                        end=s.end.isoformat(), rule=RULE_EXPLICIT)


def _window(year: int, first_month: int, months: int) -> Season:
    last = first_month + months - 1
    return Season(date(year, first_month, 1), date(year, last, calendar.monthrange(year, last)[1]))


def lowest_cloud_window(scenes: Iterable[tuple[date | datetime, float]], year: int,
                        months: int = WINDOW_MONTHS) -> SeasonChoice:
    """The ``months``-long window of ``year`` with the lowest mean cloud cover of its scenes.

    ``scenes``: (acquisition date, ``eo:cloud_cover`` percent) of the year's scenes; other years' scenes
    and scenes without a cloud cover are ignored. Raises :class:`AoiError` when no window has a scene.
    """
    per_month: dict[int, list[float]] = {m: [] for m in range(1, 13)}
    for when, cloud in scenes:
        d = when.date() if isinstance(when, datetime) else when
        if d.year == year and cloud is not None:
            per_month[d.month].append(float(cloud))
    windows: dict[str, dict[str, Any]] = {}
    best: tuple[float, int, int] | None = None
    for first in range(1, 14 - months):
        vals = [v for m in range(first, first + months) for v in per_month[m]]
        key = f"{year}-{first:02d}..{year}-{first + months - 1:02d}"
        mean = round(sum(vals) / len(vals), 3) if vals else None
        windows[key] = {"mean_cloud_cover": mean, "n_scenes": len(vals)}
        if mean is not None and (best is None or (mean, -len(vals), first) < best):
            best = (mean, -len(vals), first)
    if best is None:
        raise AoiError(f"no HLS scene with eo:cloud_cover in {year}: cannot choose the tropical window "
                       f"(give `season` explicitly)")
    mean, neg_n, first = best
    s = _window(year, first, months)
    return SeasonChoice(year=year, start=s.start.isoformat(), end=s.end.isoformat(), rule=RULE_TROPICAL,
                        mean_cloud_cover=mean, n_scenes=-neg_n, windows=windows)


def year_window(year: int) -> Season:
    """The calendar year: what a tropical window is chosen from."""
    return Season(date(year, 1, 1), date(year, 12, 31))


def needs_search(aoi: Any, season: Any) -> bool:
    """Whether the season of this area comes from the data (tropics, no explicit season)."""
    return not season and is_tropical(parse_aoi(aoi))


@dataclass(frozen=True)
class YearPlan(Contract):
    """Which years a run maps and which seasons it trains on, decided before any data is read.

    ``training_rule``: ``requested season`` (GEDI covers the requested year's season), ``explicit``
    (``training_years`` given) or ``nearest GEDI seasons`` (the requested season has no GEDI shots:
    every season GEDI covers, within ``available`` years when the data has only some years).
    """

    requested_year: int
    map_years: list[int]
    training_years: list[int]
    training_rule: str
    notes: list[str]


def plan_years(aoi: Any, year: int, *, season: Any = None, map_years: Iterable[int] | None = None,
               training_years: Iterable[int] | None = None, available: Iterable[int] | None = None,
               collection: str | None = None, train: bool = True) -> YearPlan:
    """Map and training years for a run; raises :class:`core.timeline.TimelineError` (a ValueError)
    when a year has no HLS scene (before the collection starts, or outside ``available``) or a training
    season has no GEDI shots. ``season`` is the explicit window of ``year`` (other years: default rule)."""
    from core import timeline as T

    avail = sorted(set(available)) if available is not None else None

    def window(y: int) -> Season:
        return Season.from_any(season) if season and y == year else T.season_for_year(aoi, y)

    def check_hls(y: int) -> None:
        if avail is not None and y not in avail:
            raise T.TimelineError(f"no HLS scenes for {y} in this data (it has the years "
                                  f"{', '.join(map(str, avail))})")
        T.check_hls_season(window(y), collection or T.HLS_L30)

    maps = sorted(set(map_years)) if map_years else [year]
    for y in maps:
        check_hls(y)
    notes: list[str] = []
    if not train:
        return YearPlan(year, maps, [], "none", notes)
    if training_years:
        rule, trains = "explicit", sorted(set(training_years))
        for y in trains:
            T.check_gedi_season(aoi, window(y), y, years=avail)
    elif (avail is None or year in avail) and T.GEDI_L4A.overlap_days(window(year)) > 0:
        T.check_gedi_area(aoi)
        rule, trains = "requested season", [year]
    else:
        T.check_gedi_area(aoi)
        trains = T.gedi_years(aoi, years=avail)
        if not trains:
            T.check_gedi_season(aoi, window(year), year, years=avail)  # raises, naming the gap
        rule = "nearest GEDI seasons"
        notes.append(f"{T.GEDI_L4A.product} has no shots in the {year} season "
                     f"({window(year).start}..{window(year).end}); training on the seasons it covers: "
                     f"{', '.join(map(str, trains))}")
    for y in trains:
        check_hls(y)
    return YearPlan(year, maps, trains, rule, notes)
