"""The real data timeline, as data: when and where GEDI L4A v2.1 and HLS have acquisitions.

Checked when flow parameters are validated, so a season or an area without data fails at once (before
any search or composite) with a message naming the gap and the nearest seasons that have data. The
sample world follows the same table (its GEDI granules and HLS scenes are refused outside it).

Sources (../shared/FORMATS.md "The real timeline and coverage"): GEDI L4A v2.1 (ORNL DAAC dataset 2056)
has shots from 2019-04-18 to 2024-11-27, none while the instrument was stored on the ISS (last shots of
the first period 2023-03-16; NASA's GEDI collection pages: "No data were acquired during the hibernation
period from March 17, 2023, to April 24, 2024 ... resumed operations as of April 26, 2024"), and only
between 51.6 N and 51.6 S (the ISS orbit). HLS L30 starts with Landsat 8 (2013-04-11); HLS S30 with
Sentinel-2A in late November 2015 (2015-11-28).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from shapely.geometry.base import BaseGeometry

from core.area import Season, default_season, is_tropical, parse_aoi
from core.constants import HLS_L30, HLS_S30


class TimelineError(ValueError):
    """A season or an area for which the data the run needs does not exist (names the gap and the
    nearest seasons that have data)."""


@dataclass(frozen=True)
class Period:
    """An inclusive range of UTC days with acquisitions."""

    start: date
    end: date

    def overlap_days(self, season: Season) -> int:
        lo, hi = max(self.start, season.start), min(self.end, season.end)
        return max(0, (hi - lo).days + 1)


@dataclass(frozen=True)
class GediRecord:
    """Where and when a GEDI product has shots: ``periods`` (inclusive days) and ``max_abs_lat`` (degrees)."""

    product: str
    periods: tuple[Period, ...]
    max_abs_lat: float
    gaps: tuple[tuple[Period, str], ...]  # (days without shots inside the record, why)

    @property
    def first(self) -> date:
        return self.periods[0].start

    @property
    def last(self) -> date:
        return self.periods[-1].end

    def overlap_days(self, season: Season) -> int:
        """Days of ``season`` on which the record has shots (0: none)."""
        return sum(p.overlap_days(season) for p in self.periods)

    def covers(self, day: date) -> bool:
        return any(p.start <= day <= p.end for p in self.periods)

    def to_dict(self) -> dict[str, Any]:
        return {"product": self.product, "max_abs_lat": self.max_abs_lat,
                "periods": [[p.start.isoformat(), p.end.isoformat()] for p in self.periods],
                "gaps": [[g.start.isoformat(), g.end.isoformat(), why] for g, why in self.gaps]}


GEDI_L4A = GediRecord(
    product="GEDI L4A v2.1",
    periods=(Period(date(2019, 4, 18), date(2023, 3, 16)), Period(date(2024, 4, 26), date(2024, 11, 27))),
    max_abs_lat=51.6,
    gaps=((Period(date(2023, 3, 17), date(2024, 4, 25)), "instrument stored on the ISS"),),
)

HLS_START = {HLS_L30: date(2013, 4, 11), HLS_S30: date(2015, 11, 28)}  # first acquisitions (Landsat 8, S2A)
HLS_SENSOR = {HLS_L30: "Landsat 8 (HLS L30)", HLS_S30: "Sentinel-2A (HLS S30)"}
MIN_TROPICAL_GEDI_DAYS = 120  # a tropical year counts as a GEDI year when GEDI has shots on this many days


def _kind(collection: str) -> str:
    return HLS_S30 if "S30" in collection.upper() else HLS_L30


def hls_start(collection: str) -> date:
    """First day with HLS acquisitions for ``collection``: an L30/S30 id in either CMR-STAC spelling, or
    several comma-separated (the earliest of them)."""
    return min(HLS_START[_kind(c)] for c in collection.split(",") if c.strip())


def check_hls_season(season: Season, collection: str = HLS_L30) -> None:
    """Raise :class:`TimelineError` when ``season`` ends before ``collection`` has any acquisition."""
    first = hls_start(collection)
    if season.end < first:
        kinds = [_kind(c) for c in collection.split(",") if c.strip()]
        sensor = HLS_SENSOR[min(kinds, key=HLS_START.__getitem__)]
        raise TimelineError(
            f"season {season.start}..{season.end} is before HLS collection {collection} starts "
            f"({first}, the first {sensor} acquisitions): there is no scene to composite. "
            f"Choose a season that ends after {first}.")


def _lat_range(geom: BaseGeometry) -> tuple[float, float]:
    _, miny, _, maxy = geom.bounds
    return miny, maxy


def check_gedi_area(aoi: Any, record: GediRecord = GEDI_L4A) -> None:
    """Raise when the area lies entirely outside the latitudes GEDI observes."""
    geom = parse_aoi(aoi)
    lo, hi = _lat_range(geom)
    if lo > record.max_abs_lat or hi < -record.max_abs_lat:
        raise TimelineError(
            f"the area (latitudes {lo:.2f} to {hi:.2f}) is outside {record.product}'s coverage: GEDI observes "
            f"only between {record.max_abs_lat} S and {record.max_abs_lat} N (the ISS orbit), so there are no "
            "labels to train on here. Map it with a model trained elsewhere (flow map-biomass, `checkpoint`).")


def gedi_years(aoi: Any, record: GediRecord = GEDI_L4A, years: Any = None) -> list[int]:
    """Years whose default season (hemisphere leaf-on window; in the tropics: the calendar year, counted
    when GEDI has shots on at least 120 of its days) has GEDI shots, ascending; ``years`` restricts them."""
    geom = parse_aoi(aoi)
    out = []
    for y in range(record.first.year - 1, record.last.year + 2):
        if is_tropical(geom):
            ok = record.overlap_days(Season(date(y, 1, 1), date(y, 12, 31))) >= MIN_TROPICAL_GEDI_DAYS
        else:
            ok = record.overlap_days(default_season(geom, y)) > 0
        if ok and (years is None or y in years):
            out.append(y)
    return out


def nearest_gedi_years(aoi: Any, year: int, record: GediRecord = GEDI_L4A, years: Any = None,
                       n: int = 2) -> list[int]:
    """The ``n`` GEDI years closest to ``year`` (ties: both sides), ascending."""
    cands = gedi_years(aoi, record, years)
    if not cands:
        return []
    cands.sort(key=lambda y: (abs(y - year), y))
    cutoff = abs(cands[min(n, len(cands)) - 1] - year)
    return sorted(y for y in cands if abs(y - year) <= cutoff)


def _gap_text(season: Season, record: GediRecord) -> str:
    for gap, why in record.gaps:
        if gap.overlap_days(season):
            return f"it falls in {record.product}'s gap {gap.start}..{gap.end} ({why})"
    if season.end < record.first:
        return f"{record.product} starts on {record.first}"
    if season.start > record.last:
        return f"{record.product} ends on {record.last}"
    return f"{record.product} has no shots in it"


def check_gedi_season(aoi: Any, season: Season, year: int | None = None, record: GediRecord = GEDI_L4A,
                      years: Any = None) -> int:
    """Days of ``season`` with GEDI shots over the area's latitudes; raise :class:`TimelineError` when
    none (naming the gap and the nearest years whose seasons have shots, within ``years`` when given)."""
    check_gedi_area(aoi, record)
    days = record.overlap_days(season)
    if days > 0:
        return days
    ref = year if year is not None else season.end.year
    near = nearest_gedi_years(aoi, ref, record, years)
    hint = (f"the nearest seasons with GEDI shots are {' and '.join(map(str, near))}" if near
            else "no season with GEDI shots is available")
    raise TimelineError(
        f"no GEDI labels for season {season.start}..{season.end}: {_gap_text(season, record)} "
        f"(shots exist {', '.join(f'{p.start}..{p.end}' for p in record.periods)}, "
        f"{record.max_abs_lat} S - {record.max_abs_lat} N); {hint}. Train on those seasons "
        "(`training_years`) and map this one (`map_years`), or map it with an existing model (map-biomass).")


def gedi_covers_year(aoi: Any, year: int, record: GediRecord = GEDI_L4A) -> bool:
    """Whether the year's default season has GEDI shots (tropics: see :func:`gedi_years`)."""
    return year in gedi_years(aoi, record)


def season_for_year(aoi: Any, year: int) -> Season:
    """The window the timeline checks use before any data is searched: the default leaf-on season, or
    the whole calendar year in the tropics (whose window is chosen from the year's scenes)."""
    geom = parse_aoi(aoi)
    if is_tropical(geom):
        return Season(date(year, 1, 1), date(year, 12, 31))
    return default_season(geom, year)


def last_finished_year(aoi: Any, today: date) -> int:
    """Year of the area's most recent default season that has ended by ``today`` (tropics: the last
    whole calendar year, because the window is chosen from all of the year's scenes)."""
    geom = parse_aoi(aoi)
    if is_tropical(geom):
        return today.year - 1
    return today.year if default_season(geom, today.year).end < today else today.year - 1
