"""AOI parsing and the hemisphere's default leaf-on season."""

from __future__ import annotations

import json
from datetime import date

import pytest

from core.area import AoiError, Season, aoi_bbox, default_season, parse_aoi, resolve_season

SQUARE = {"type": "Polygon", "coordinates": [[[-122, 40], [-121.9, 40], [-121.9, 40.1], [-122, 40.1], [-122, 40]]]}


@pytest.mark.parametrize(
    "aoi",
    [
        [-122, 40, -121.9, 40.1],
        SQUARE,
        {"type": "Feature", "properties": {}, "geometry": SQUARE},
        {"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {}, "geometry": SQUARE}]},
        json.dumps(SQUARE),
    ],
)
def test_parse_aoi_forms(aoi) -> None:
    assert aoi_bbox(aoi) == pytest.approx((-122, 40, -121.9, 40.1))


def test_parse_aoi_file(tmp_path) -> None:
    p = tmp_path / "area.geojson"
    p.write_text(json.dumps({"type": "Feature", "properties": {}, "geometry": SQUARE}))
    assert parse_aoi(str(p)).bounds == pytest.approx((-122, 40, -121.9, 40.1))


@pytest.mark.parametrize(
    ("aoi", "message"),
    [
        ([-121, 40, -122, 41], "not a valid lon/lat box"),
        ([1, 2, 3], r"\[minx, miny, maxx, maxy\]"),
        ([500000, 4400000, 510000, 4410000], "not a valid lon/lat box"),
        ({"type": "Point", "coordinates": [0, 0]}, "Polygon"),
        ({"type": "FeatureCollection", "features": []}, "no geometry"),
        ("/nonexistent/area.geojson", "aoi file not found"),
        (42, "must be a bbox"),
    ],
)
def test_parse_aoi_errors(aoi, message: str) -> None:
    with pytest.raises(AoiError, match=message):
        parse_aoi(aoi)


@pytest.mark.parametrize(
    ("bbox", "year", "start", "end"),
    [
        ([-122, 40, -121, 41], 2023, date(2023, 6, 1), date(2023, 9, 30)),
        ([-60, -10, -59, -9], 2021, date(2020, 12, 1), date(2021, 3, 31)),
        ([10, -0.5, 11, 0.6], 2020, date(2020, 6, 1), date(2020, 9, 30)),  # centroid north of the equator
    ],
)
def test_default_season(bbox, year, start, end) -> None:
    s = default_season(parse_aoi(bbox), year)
    assert (s.start, s.end) == (start, end)
    assert s.label == f"{start.isoformat()}_{end.isoformat()}"


def test_resolve_season_override_and_errors() -> None:
    s = resolve_season([-122, 40, -121, 41], 2023, {"start": "2023-07-01", "end": "2023-07-31"})
    assert s == Season(date(2023, 7, 1), date(2023, 7, 31))
    assert s.datetime_range == "2023-07-01T00:00:00Z/2023-07-31T23:59:59Z"
    assert Season.from_any("2023-07-01/2023-07-31") == s
    with pytest.raises(AoiError, match="before start"):
        Season.from_any({"start": "2023-08-01", "end": "2023-07-01"})
    with pytest.raises(AoiError, match="year"):
        resolve_season([-122, 40, -121, 41], None, None)
