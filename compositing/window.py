"""The composite window of a year: explicit, the hemisphere leaf-on rule, or (tropics) from the year's scenes.

:func:`choose_season` is the entry point. In the tropics it searches every HLS scene of the calendar
year over the area (no cloud filter: the clouds are what is measured; saved under
``<output_dir>/search/`` like any search) and takes the 4-month window with the lowest mean
``eo:cloud_cover`` (:func:`core.seasons.lowest_cloud_window`).
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from compositing.contracts import SearchOptions
from compositing.search import search_hls
from core.files import read_json
from core.seasons import (
    SeasonChoice,
    explicit_choice,
    hemisphere_choice,
    lowest_cloud_window,
    needs_search,
    year_window,
)


def _scene_clouds(items_json: str) -> list[tuple[datetime, float]]:
    out = []
    for it in read_json(items_json).get("features", []):
        props = it.get("properties") or {}
        when, cloud = props.get("datetime") or props.get("start_datetime"), props.get("eo:cloud_cover")
        if when and cloud is not None:
            out.append((datetime.fromisoformat(str(when).replace("Z", "+00:00")), float(cloud)))
    return out


def choose_season(*, aoi: Any, year: int, season: Any = None, output_dir: str,
                  options: SearchOptions = SearchOptions()) -> SeasonChoice:
    """The window of ``year`` for the area: ``season`` when given; in the tropics the 4-month window
    with the lowest mean cloud cover of the year's scenes (searched with ``options`` minus the cloud
    filter, saved under ``<output_dir>/search/``); elsewhere the hemisphere's leaf-on season."""
    if season:
        return explicit_choice(season, year)
    if not needs_search(aoi, season):
        return hemisphere_choice(aoi, year)
    res = search_hls(aoi=aoi, season=year_window(year).to_dict(), output_dir=output_dir,
                     options=dataclasses.replace(options, max_cloud_cover=None))
    choice = lowest_cloud_window(_scene_clouds(res.items_json), year)
    return dataclasses.replace(choice, search=res.items_json)
