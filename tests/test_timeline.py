"""The real data timeline (core.timeline), the year plan and season windows (core.seasons), and the flow
parameter validation that uses them: a season or area without data fails at once with a clear message."""

from __future__ import annotations

from datetime import date

import pytest
from pydantic import ValidationError

from core.area import AoiError, Season
from core.seasons import lowest_cloud_window, plan_years
from core.timeline import (
    GEDI_L4A,
    TimelineError,
    check_gedi_season,
    check_hls_season,
    gedi_years,
    last_finished_year,
    nearest_gedi_years,
)

NORTH = [-122.1, 44.2, -121.9, 44.35]      # Willamette NF, Oregon
TROPICS = [-69.3, -12.65, -69.1, -12.5]     # Tambopata, Peru
SOUTH = [-72.0, -40.2, -71.8, -40.0]        # Los Lagos, Chile (outside the tropics)
ARCTIC = [25.0, 60.0, 25.5, 60.3]           # Finland: north of GEDI's orbit


def _s(a: str, b: str) -> Season:
    return Season(date.fromisoformat(a), date.fromisoformat(b))


@pytest.mark.parametrize(("season", "days"), [
    (_s("2019-06-01", "2019-09-30"), 122),          # north 2019: whole season
    (_s("2022-12-01", "2023-03-31"), 106),          # south 2022/23: until 2023-03-16
    (_s("2023-06-01", "2023-09-30"), 0),            # storage gap
    (_s("2024-04-01", "2024-05-01"), 6),            # resumed 2024-04-26
    (_s("2024-06-01", "2024-09-30"), 122),
    (_s("2024-11-01", "2025-03-31"), 27),           # record ends 2024-11-27
    (_s("2025-06-01", "2025-09-30"), 0),
    (_s("2018-06-01", "2018-09-30"), 0),            # before 2019-04-18
])
def test_gedi_overlap_days(season: Season, days: int) -> None:
    assert GEDI_L4A.overlap_days(season) == days


def test_gedi_years_per_area() -> None:
    assert gedi_years(NORTH) == [2019, 2020, 2021, 2022, 2024]
    assert gedi_years(SOUTH) == [2020, 2021, 2022, 2023]       # Dec 2019 - Mar 2020 ... Dec 2022 - Mar 2023
    assert gedi_years(TROPICS) == [2019, 2020, 2021, 2022, 2024]  # >= 120 days of shots in the calendar year
    assert gedi_years(NORTH, years=[2022, 2023, 2024]) == [2022, 2024]
    assert nearest_gedi_years(NORTH, 2023) == [2022, 2024]
    assert nearest_gedi_years(NORTH, 2026) == [2022, 2024]
    assert nearest_gedi_years(NORTH, 2020, n=1) == [2020]


@pytest.mark.parametrize(("aoi", "season", "year", "words"), [
    (NORTH, _s("2023-06-01", "2023-09-30"), 2023,
     ["2023-03-17..2024-04-25", "stored on the ISS", "2022 and 2024", "training_years"]),
    (NORTH, _s("2025-06-01", "2025-09-30"), 2025, ["ends on 2024-11-27", "2022 and 2024"]),
    (SOUTH, _s("2023-12-01", "2024-03-31"), 2024, ["stored on the ISS", "2023"]),
    (NORTH, _s("2018-06-01", "2018-09-30"), 2018, ["starts on 2019-04-18", "2019"]),
    (ARCTIC, _s("2022-06-01", "2022-09-30"), 2022, ["51.6 S and 51.6 N", "map-biomass"]),
])
def test_seasons_and_areas_without_gedi_name_the_gap_and_nearest_seasons(aoi, season, year, words) -> None:
    with pytest.raises(TimelineError) as err:
        check_gedi_season(aoi, season, year)
    for w in words:
        assert w in str(err.value), (w, str(err.value))


def test_hls_before_the_collection_starts() -> None:
    check_hls_season(_s("2013-06-01", "2013-09-30"), "HLSL30_2.0")
    with pytest.raises(TimelineError, match="2013-04-11"):
        check_hls_season(_s("2012-06-01", "2012-09-30"), "HLSL30_2.0")
    with pytest.raises(TimelineError, match="2015-11-28"):
        check_hls_season(_s("2015-06-01", "2015-09-30"), "HLSS30_2.0")
    check_hls_season(_s("2015-12-01", "2016-03-31"), "HLSS30.v2.0")  # the pre-2024 CMR-STAC spelling
    check_hls_season(_s("2014-06-01", "2014-09-30"), "HLSL30_2.0,HLSS30_2.0")  # both: L30 has scenes
    with pytest.raises(TimelineError, match="2013-04-11"):
        check_hls_season(_s("2012-06-01", "2012-09-30"), "HLSL30_2.0,HLSS30_2.0")


@pytest.mark.parametrize(("aoi", "today", "year"), [
    (NORTH, date(2026, 10, 15), 2026), (NORTH, date(2026, 9, 30), 2025), (NORTH, date(2027, 1, 5), 2026),
    (SOUTH, date(2026, 4, 15), 2026), (SOUTH, date(2026, 3, 31), 2025),
    (TROPICS, date(2026, 1, 15), 2025), (TROPICS, date(2026, 12, 31), 2025),
])
def test_last_finished_year(aoi, today, year) -> None:
    assert last_finished_year(aoi, today) == year


def test_plan_years_defaults_and_notes() -> None:
    p = plan_years(NORTH, 2022)
    assert (p.map_years, p.training_years, p.training_rule) == ([2022], [2022], "requested season")
    p = plan_years(NORTH, 2026, map_years=[2025, 2026])
    assert p.training_years == [2019, 2020, 2021, 2022, 2024] and p.training_rule == "nearest GEDI seasons"
    assert "no shots in the 2026 season" in p.notes[0]
    p = plan_years(NORTH, 2023, available=[2022, 2023, 2024])  # the demo world
    assert p.training_years == [2022, 2024] and p.map_years == [2023]
    p = plan_years(NORTH, 2024, season={"start": "2024-07-01", "end": "2024-08-31"})
    assert p.training_years == [2024]
    assert plan_years(ARCTIC, 2024, train=False).map_years == [2024]  # mapping needs no GEDI


@pytest.mark.parametrize(("kw", "match"), [
    (dict(year=2023, training_years=[2023]), "stored on the ISS"),
    (dict(year=2012), "before HLS collection"),
    (dict(year=2022, map_years=[2012, 2022]), "before HLS collection"),
    (dict(year=2023, available=[2023, 2025]), "no season with GEDI shots"),
    (dict(year=2025, map_years=[2026], available=[2022, 2024, 2025]), "no HLS scenes for 2026"),
])
def test_plan_years_errors(kw, match) -> None:
    with pytest.raises(TimelineError, match=match):
        plan_years(NORTH, **kw)


def test_lowest_cloud_window() -> None:
    clouds = [90, 85, 80, 70, 40, 20, 10, 15, 30, 60, 80, 90]
    scenes = [(date(2024, m, 5), c) for m, c in zip(range(1, 13), clouds, strict=True)]
    scenes += [(date(2023, 7, 1), 0.0)]  # another year: ignored
    c = lowest_cloud_window(scenes, 2024)
    assert (c.start, c.end, c.rule, c.n_scenes) == ("2024-06-01", "2024-09-30", "tropical-lowest-cloud", 4)
    assert c.mean_cloud_cover == pytest.approx(18.75)
    assert set(c.windows) == {f"2024-{m:02d}..2024-{m + 3:02d}" for m in range(1, 10)}
    # a tie goes to the window with more scenes, then to the earlier one
    tie = [(date(2024, 2, 1), 10.0), (date(2024, 9, 1), 10.0), (date(2024, 9, 20), 10.0)]
    assert lowest_cloud_window(tie, 2024).start == "2024-06-01"
    with pytest.raises(AoiError, match="no HLS scene"):
        lowest_cloud_window([], 2024)


def test_flow_parameters_fail_at_once_for_seasons_and_areas_without_data(tmp_path) -> None:
    from flows.params import BiomassPipelineParams, GediLabelsParams, HlsCompositeParams, MapBiomassParams

    out = str(tmp_path)
    cases = [
        (GediLabelsParams, dict(aoi=NORTH, year=2023, output_dir=out), "2023-03-17..2024-04-25"),
        (BiomassPipelineParams, dict(aoi=NORTH, year=2024, training_years=[2023, 2024], output_dir=out),
         "stored on the ISS"),
        (HlsCompositeParams, dict(aoi=NORTH, year=2012, output_dir=out), "2013-04-11"),
        (BiomassPipelineParams, dict(aoi=NORTH, year=2012, output_dir=out), "2013-04-11"),
        (BiomassPipelineParams, dict(aoi=ARCTIC, year=2022, output_dir=out), "51.6 S and 51.6 N"),
        (GediLabelsParams, dict(aoi=ARCTIC, year=2022, output_dir=out), "51.6 S and 51.6 N"),
        (BiomassPipelineParams, dict(aoi=SOUTH, year=2025, training_years=[2025], output_dir=out),
         "ends on 2024-11-27"),
    ]
    for model, raw, match in cases:
        with pytest.raises(ValidationError, match=match):
            model.model_validate(raw)
    # what does have data validates: a gap year maps with the nearest GEDI seasons; mapping needs no GEDI
    p = BiomassPipelineParams.model_validate(dict(aoi=NORTH, year=2023, output_dir=out))
    assert p.year == 2023 and p.training_years is None
    MapBiomassParams.model_validate(dict(aoi=ARCTIC, year=2022, output_dir=out, checkpoint="x.ckpt"))
    HlsCompositeParams.model_validate(dict(aoi=NORTH, year=2023, output_dir=out))
    # a scheduled run "today" maps the season just finished, whatever GEDI covers
    p = BiomassPipelineParams.model_validate(dict(aoi=NORTH, output_dir=out + "/{year}", as_of="2026-10-15"))
    assert p.year == 2026 and p.output_dir.endswith("/2026")


def test_tropical_window_from_the_years_scenes_on_a_loopback_stac(tmp_path) -> None:
    """Tambopata: the hemisphere rule would composite Dec-Mar (the wet season); the data rule searches the
    year's scenes (no cloud filter) and takes the 4-month window with the lowest mean cloud cover."""
    import json

    from compositing.contracts import SearchOptions
    from compositing.window import choose_season
    from core.area import default_season, parse_aoi
    from sampleworld.stac_server import serve_stac

    ring = [[-69.5, -12.9], [-68.9, -12.9], [-68.9, -12.3], [-69.5, -12.3], [-69.5, -12.9]]
    monthly = [95, 92, 90, 80, 55, 30, 20, 25, 35, 70, 85, 93]  # % cloud: wet Nov-Apr, dry Jun-Sep

    def item(day: date, cloud: float) -> dict:
        iid = f"HLS.L30.T19LBJ.{day:%Y%j}T144556.v2.0"
        dt = f"{day.isoformat()}T14:45:56Z"
        return {"type": "Feature", "stac_version": "1.0.0", "id": iid, "collection": "HLSL30_2.0",
                "properties": {"datetime": dt, "start_datetime": dt, "end_datetime": dt, "eo:cloud_cover": cloud},
                "geometry": {"type": "Polygon", "coordinates": [ring]}, "bbox": [-69.5, -12.9, -68.9, -12.3],
                "links": [], "assets": {"B02": {"href": f"/x/{iid}.B02.tif", "roles": ["data"]}}}

    items = [item(date(2024, m, d), c) for m, c in enumerate(monthly, 1) for d in (5, 21)]
    items += [item(date(2023, 2, 10), 0.0), item(date(2025, 1, 10), 0.0)]  # other years: not counted
    stac = tmp_path / "world" / "stac"
    stac.mkdir(parents=True)
    coll = {"type": "Collection", "stac_version": "1.0.0", "id": "HLSL30_2.0", "description": "t", "license": "x",
            "links": [], "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]},
                                    "temporal": {"interval": [["2013-04-11T00:00:00Z", None]]}}}
    (stac / "hls_collection.json").write_text(json.dumps(coll))
    (stac / "gedi_collection.json").write_text(json.dumps({**coll, "id": "GEDI_L4A_AGB_Density_V2_1_2056_2.1"}))
    (stac / "hls_items.json").write_text(json.dumps({"type": "FeatureCollection", "features": items}))
    (stac / "gedi_items.json").write_text(json.dumps({"type": "FeatureCollection", "features": []}))
    wet = default_season(parse_aoi(TROPICS), 2024)
    assert (wet.start, wet.end) == (date(2023, 12, 1), date(2024, 3, 31))
    with serve_stac(tmp_path / "world") as url:
        c = choose_season(aoi=TROPICS, year=2024, output_dir=str(tmp_path / "out"),
                          options=SearchOptions(stac_url=url, max_cloud_cover=40))
    assert (c.start, c.end, c.rule, c.n_scenes) == ("2024-06-01", "2024-09-30", "tropical-lowest-cloud", 8)
    assert c.mean_cloud_cover == pytest.approx(27.5)
    assert c.windows["2024-01..2024-04"]["mean_cloud_cover"] == pytest.approx(89.25)
    saved = json.loads(open(c.search).read())["features"]
    assert len(saved) == 24  # every scene of 2024, the cloudy ones too (the cloud filter is not applied)
    # outside the tropics no search: the hemisphere's leaf-on season
    n = choose_season(aoi=NORTH, year=2024, output_dir=str(tmp_path / "n"))
    assert (n.start, n.end, n.rule) == ("2024-06-01", "2024-09-30", "hemisphere-leaf-on")
