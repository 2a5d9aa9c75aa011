"""Area of interest and season: parsing the ``aoi`` parameter and the hemisphere's leaf-on window.

``aoi`` is a lon/lat bbox ``[minx, miny, maxx, maxy]``, a GeoJSON geometry / Feature /
FeatureCollection (dict or JSON string), or a path to a GeoJSON file. Everything is EPSG:4326.

Default leaf-on season (documented in README): northern hemisphere (AOI centroid latitude >= 0)
June 1 - September 30 of ``year``; southern hemisphere December 1 of ``year - 1`` - March 31 of ``year``.
That is the rule without data; within the tropics (centroid within 23.44 degrees of the equator,
:func:`is_tropical`) the flows choose the window from the year's scenes instead (``core.seasons``).

Areas are checked for what they mean: an invalid polygon (self-intersecting "bow-tie", overlapping
parts, zero area) is refused with the reason, never repaired (a repair changes the area an MRV
report is about); a ring edge jumping across the antimeridian is refused (split it at +-180, RFC 7946
3.1.9); an area split at the antimeridian is searched as two boxes (:func:`search_bboxes`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from shapely.geometry import box, mapping, shape
from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union


class AoiError(ValueError):
    """An ``aoi`` or ``season`` parameter that cannot be interpreted."""


def parse_aoi(aoi: Any) -> BaseGeometry:
    """The AOI as a shapely (Multi)Polygon in lon/lat (EPSG:4326)."""
    if isinstance(aoi, BaseGeometry):
        geom = aoi
    elif isinstance(aoi, (list, tuple)):
        if len(aoi) != 4 or not all(isinstance(v, (int, float)) for v in aoi):
            raise AoiError(f"aoi bbox must be [minx, miny, maxx, maxy] in degrees, got {aoi!r}")
        minx, miny, maxx, maxy = (float(v) for v in aoi)
        if not (-180 <= minx < maxx <= 180 and -90 <= miny < maxy <= 90):
            raise AoiError(f"aoi bbox {aoi!r} is not a valid lon/lat box (minx < maxx, miny < maxy, degrees; an "
                           "area crossing the antimeridian is given as GeoJSON split at +-180)")
        geom = box(minx, miny, maxx, maxy)
    elif isinstance(aoi, dict):
        geom = _geojson_to_geom(aoi, "aoi")
    elif isinstance(aoi, (str, Path)):
        text = str(aoi).strip()
        if text.startswith("{"):
            try:
                geom = _geojson_to_geom(json.loads(text), "aoi")
            except json.JSONDecodeError as exc:
                raise AoiError(f"aoi is not valid GeoJSON text: {exc}") from exc
        else:
            path = Path(text).expanduser()
            if not path.is_file():
                raise AoiError(f"aoi file not found: {path}")
            try:
                geom = _geojson_to_geom(json.loads(path.read_text()), str(path))
            except json.JSONDecodeError as exc:
                raise AoiError(f"{path}: not valid GeoJSON: {exc}") from exc
    else:
        raise AoiError(f"aoi must be a bbox list, GeoJSON or a file path, got {type(aoi).__name__}")
    if geom.is_empty or geom.geom_type not in ("Polygon", "MultiPolygon"):
        raise AoiError(f"aoi must be a non-empty (Multi)Polygon, got {geom.geom_type}")
    minx, miny, maxx, maxy = geom.bounds
    if minx < -180 or maxx > 180 or miny < -90 or maxy > 90:
        raise AoiError(f"aoi bounds {geom.bounds} are outside lon/lat range (is it projected?)")
    check_area(geom)
    return geom


def check_area(geom: BaseGeometry) -> None:
    """:class:`AoiError` when ``geom`` is not a valid area: invalid (with shapely's reason), zero area, or
    with a ring edge spanning more than 180 degrees of longitude (an unsplit antimeridian crossing)."""
    from shapely.validation import explain_validity

    if not geom.is_valid:
        why = explain_validity(geom)
        raise AoiError(f"aoi is not a valid polygon: {why}. A self-intersecting ring (a 'bow-tie') or "
                       "overlapping parts would be read as a different area than drawn; fix the geometry "
                       "(e.g. reorder the vertices, or give the parts as separate features of a FeatureCollection)")
    if geom.area <= 0:
        raise AoiError(f"aoi has zero area (bounds {geom.bounds})")
    for poly in getattr(geom, "geoms", [geom]):
        if _unsplit_antimeridian(poly):
            raise AoiError(f"aoi polygon with bounds {poly.bounds} has ring edges spanning more than 180 degrees "
                           "of longitude and is far narrower read across the antimeridian: it crosses the "
                           "antimeridian without being split; split it at +-180 into a MultiPolygon (RFC 7946 "
                           "section 3.1.9)")


def _unsplit_antimeridian(poly: BaseGeometry) -> bool:
    """True when an edge of the exterior ring spans > 180 degrees of longitude and the ring read with
    negative longitudes shifted by +360 is a real polygon less than half as wide (a small area drawn across
    the antimeridian). A box from -180 to 180 is not one (shifted, it has no area)."""
    from shapely.geometry import Polygon

    xs = [c[0] for c in poly.exterior.coords]
    if max((abs(b - a) for a, b in zip(xs, xs[1:], strict=False)), default=0.0) <= 180:
        return False
    shifted = Polygon([(x + 360 if x < 0 else x, y) for x, y, *_ in poly.exterior.coords])
    width = max(xs) - min(xs)
    sx = [c[0] for c in shifted.exterior.coords]
    return shifted.area > 0 and max(sx) - min(sx) < width / 2


def search_bboxes(geom: BaseGeometry) -> list[tuple[float, float, float, float]]:
    """Lon/lat boxes to search for ``geom``: its bounds, or, when its parts span more than 180 degrees of
    longitude (an area split at the antimeridian), one box for the parts east of 0 and one for the rest."""
    minx, miny, maxx, maxy = geom.bounds
    parts = list(getattr(geom, "geoms", [geom]))
    if maxx - minx <= 180 or len(parts) < 2:
        return [(minx, miny, maxx, maxy)]
    east = [p for p in parts if p.centroid.x >= 0]
    west = [p for p in parts if p.centroid.x < 0]
    return [tuple(unary_union(g).bounds) for g in (west, east) if g]  # type: ignore[misc]


def _geojson_to_geom(obj: dict[str, Any], where: str) -> BaseGeometry:
    kind = obj.get("type")
    try:
        if kind == "FeatureCollection":
            geoms = [shape(f["geometry"]) for f in obj.get("features", []) if f.get("geometry")]
            if not geoms:
                raise AoiError(f"{where}: FeatureCollection has no geometry")
            return unary_union(geoms)
        if kind == "Feature":
            if not obj.get("geometry"):
                raise AoiError(f"{where}: Feature has no geometry")
            return shape(obj["geometry"])
        return shape(obj)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, AoiError):
            raise
        raise AoiError(f"{where}: not a GeoJSON geometry: {exc}") from exc


def aoi_bbox(aoi: Any) -> tuple[float, float, float, float]:
    """Lon/lat bounds of an AOI parameter."""
    return tuple(parse_aoi(aoi).bounds)  # type: ignore[return-value]


def aoi_geojson(aoi: Any) -> dict[str, Any]:
    """The AOI as a GeoJSON geometry dict (for STAC ``intersects``)."""
    return mapping(parse_aoi(aoi))


@dataclass(frozen=True)
class Season:
    """An inclusive date window ``start`` .. ``end``."""

    start: date
    end: date

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise AoiError(f"season end {self.end} is before start {self.start}")

    @property
    def label(self) -> str:
        return f"{self.start.isoformat()}_{self.end.isoformat()}"

    @property
    def datetime_range(self) -> str:
        """STAC ``datetime`` interval covering whole days (UTC)."""
        return f"{self.start.isoformat()}T00:00:00Z/{self.end.isoformat()}T23:59:59Z"

    def to_dict(self) -> dict[str, str]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat()}

    @classmethod
    def from_any(cls, value: Any) -> Season:
        """From a Season, ``{"start": .., "end": ..}``, ``[start, end]`` or ``"start/end"``."""
        if isinstance(value, Season):
            return value
        if isinstance(value, dict):
            start, end = value.get("start"), value.get("end")
        elif isinstance(value, (list, tuple)) and len(value) == 2:
            start, end = value
        elif isinstance(value, str) and ("/" in value or "_" in value):
            start, end = value.replace("_", "/").split("/", 1)
        else:
            raise AoiError(f"season must be {{'start': 'YYYY-MM-DD', 'end': 'YYYY-MM-DD'}}, got {value!r}")
        try:
            return cls(_to_date(start), _to_date(end))
        except (TypeError, ValueError) as exc:
            if isinstance(exc, AoiError):
                raise
            raise AoiError(f"season dates must be YYYY-MM-DD, got {value!r}: {exc}") from exc


_SEASON_LABEL = re.compile(r"^(\d{4}-\d{2}-\d{2})_(\d{4}-\d{2}-\d{2})$")


def parse_season_label(label: object, where: str = "season label") -> Season:
    """The :class:`Season` of a label ``YYYY-MM-DD_YYYY-MM-DD`` (as in ``composites/<TILE>/<SEASON>.tif``
    and the ``SEASON`` raster tag); :class:`AoiError` naming ``where`` for anything else."""
    m = _SEASON_LABEL.match(str(label)) if isinstance(label, str) else None
    if not m:
        raise AoiError(f"{where}: {label!r} is not a season label YYYY-MM-DD_YYYY-MM-DD")
    try:
        return Season(date.fromisoformat(m.group(1)), date.fromisoformat(m.group(2)))
    except ValueError as exc:
        raise AoiError(f"{where}: {label!r} is not a season label: {exc}") from None


def _to_date(v: Any) -> date:
    if isinstance(v, date):
        return v
    return date.fromisoformat(str(v)[:10])


TROPIC_LAT = 23.44  # degrees: the Tropics of Cancer and Capricorn


def is_tropical(geom: BaseGeometry) -> bool:
    """Whether the AOI's centroid lies between the tropics (no leaf-on season to default to)."""
    return abs(geom.centroid.y) < TROPIC_LAT


def default_season(geom: BaseGeometry, year: int) -> Season:
    """Leaf-on window of the AOI's hemisphere (by centroid latitude)."""
    if geom.centroid.y >= 0:
        return Season(date(year, 6, 1), date(year, 9, 30))
    return Season(date(year - 1, 12, 1), date(year, 3, 31))


def resolve_season(aoi: Any, year: int | None, season: Any = None) -> Season:
    """``season`` if given, else the default leaf-on season of ``year`` for the AOI's hemisphere."""
    if season:
        return Season.from_any(season)
    if year is None:
        raise AoiError("give either `year` or `season`")
    return default_season(parse_aoi(aoi), int(year))
