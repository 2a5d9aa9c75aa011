"""Find GEDI L4A granules through a STAC API (NASA CMR-STAC ORNL_CLOUD by default). Network-bound.

GEDI granules are whole sub-orbits, so a bbox search returns every granule whose track passes near the
area; which shots really fall inside is decided when the granule is read.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from core.area import Season, parse_aoi, search_bboxes
from core.constants import GEDI_L4A_COLLECTION, GEDI_STAC_URL
from core.files import write_json_atomic
from core.http import HttpError, RetryPolicy, open_stac, search_boxes
from labels.granule import GediReadError, basename_of, parse_granule_name, product_of

log = logging.getLogger(__name__)



class GediSearchError(RuntimeError):
    """A STAC search that failed or returned items without a usable L4A file."""


def granule_href(item: dict[str, Any]) -> str:
    """The L4A ``.h5`` asset href of a STAC item dict (https preferred over s3)."""
    hrefs = [a.get("href", "") for a in (item.get("assets") or {}).values()]
    h5 = [h for h in hrefs if h.lower().endswith(".h5") and product_of(basename_of(h)) in (None, "L4A")]
    if not h5:
        raise GediSearchError(f"STAC item {item.get('id')!r}: no .h5 asset (assets: "
                              f"{sorted((item.get('assets') or {}).keys())})")
    h5.sort(key=lambda h: (h.startswith("s3://"), not basename_of(h).startswith("GEDI04_A"), h))
    return h5[0]


def search_items(*, aoi: Any, season: Any, stac_url: str = GEDI_STAC_URL,
                 collection: str = GEDI_L4A_COLLECTION, max_items: int | None = None,
                 retries: RetryPolicy | dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """STAC item dicts of ``collection`` intersecting the AOI bbox within the season (inclusive days).

    Paging guards and retries: :mod:`core.http` (items repeated by buggy cursor paging are dropped).
    """
    geom = parse_aoi(aoi)
    window = Season.from_any(season)
    try:
        client, io = open_stac(stac_url, RetryPolicy.from_any(retries))
        items = list(search_boxes(client, io, collection=collection, bboxes=[list(b) for b in search_bboxes(geom)],
                                  datetime_range=window.datetime_range, limit=100, max_items=max_items))
    except HttpError as exc:
        raise GediSearchError(f"GEDI STAC search at {stac_url} (collection {collection}) failed: {exc}") from exc
    return sorted(items, key=lambda it: (it.get("properties", {}).get("datetime") or "", it["id"]))


def search_granules(*, aoi: Any, season: Any, stac_url: str = GEDI_STAC_URL,
                    collection: str = GEDI_L4A_COLLECTION, output_dir: str | None = None,
                    max_items: int | None = None, retries: RetryPolicy | dict[str, Any] | None = None) -> list[str]:
    """Hrefs (URLs or local paths) of the L4A granules found; writes ``search/gedi_items.json``.

    ``season``: ``{"start": "YYYY-MM-DD", "end": "YYYY-MM-DD"}`` (or anything ``Season.from_any`` takes).
    """
    items = search_items(aoi=aoi, season=season, stac_url=stac_url, collection=collection,
                         max_items=max_items, retries=retries)
    if not items:  # nothing to label with: fail here, leaving an earlier run's search record as it was
        raise GediSearchError(f"GEDI STAC search at {stac_url} (collection {collection}) found no granule for the "
                              f"area {[round(v, 5) for v in parse_aoi(aoi).bounds]} in "
                              f"{Season.from_any(season).label}")
    hrefs = []
    for item in items:
        href = granule_href(item)
        try:
            parse_granule_name(href)
        except GediReadError as exc:
            log.warning("STAC item %s: %s (kept; the reader decides)", item.get("id"), exc)
        hrefs.append(href)
    if output_dir is not None:
        write_json_atomic(Path(output_dir) / "search" / "gedi_items.json",
                          {"type": "FeatureCollection", "features": items})
    log.info("GEDI search: %d granule(s) in %s", len(hrefs), collection)
    return hrefs
