"""HLS L30/S30 search on any STAC API (NASA CMR-STAC by default), saved with the outputs for re-runs and audits.

* Server-side cloud filter (``query`` ``eo:cloud_cover lte``) only where the API declares the STAC
  ``query`` conformance class; the client filter always runs again (CMR treats ``lt`` as ``lte``; some
  servers ignore or do not support ``query``). ``max_cloud_cover`` is inclusive (percent).
* Items are also kept only when their datetime is inside the season and their footprint meets the AOI.
* Paging and retries: :mod:`core.http` (the one retrying layer, shared with the GEDI search): a repeated
  item id is dropped and counted; a page made only of already-seen ids is re-requested, then the search
  fails (never a silently truncated list); 429/5xx/timeouts/bad bodies are retried within the policy's
  budget, then :class:`SearchError` names the endpoint and the last status.

Writes ``<output_dir>/search/hls_items.json`` (a FeatureCollection of the items exactly as returned),
``hls_items.csv`` (id, datetime, tile, eo:cloud_cover) and ``hls_search.json`` (parameters and counts).
A re-run with the same parameters reuses the saved search without contacting the server.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shapely.geometry import shape

from compositing.contracts import SearchOptions, SearchResult
from core.area import Season, parse_aoi, resolve_season, search_bboxes
from core.bands import parse_collections
from core.files import read_json, staged, write_json_atomic
from core.grid import GridError, tile_of_item_id
from core.http import HttpError, PageStats, RetryPolicy, conforms_to_query, open_stac, search_boxes

log = logging.getLogger(__name__)



class SearchError(RuntimeError):
    """A search that could not be completed (server errors after retries, bad items, ...)."""


# ------------------------------------------------------------------------------------------------ filters
def _item_time(item: dict[str, Any]) -> datetime | None:
    props = item.get("properties") or {}
    value = props.get("datetime") or props.get("start_datetime")
    if not value:
        return None
    try:
        t = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise SearchError(f"item {item.get('id')}: unreadable datetime {value!r}") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def keep_item(item: dict[str, Any], max_cloud_cover: float | None, season: Season, aoi_geom: Any,
              collection: str) -> str | None:
    """None to keep the item, else the reason to drop it: ``cloud``, ``season``, ``aoi``, ``collection``.

    ``collection``: one collection id or several, comma-separated."""
    if item.get("collection") not in (None, *parse_collections(collection)):
        return "collection"
    cc = (item.get("properties") or {}).get("eo:cloud_cover")
    if max_cloud_cover is not None and cc is not None and float(cc) > max_cloud_cover:
        return "cloud"
    t = _item_time(item)
    if t is not None and not (season.start <= t.astimezone(UTC).date() <= season.end):
        return "season"
    geom = item.get("geometry")
    if geom:
        try:
            if not shape(geom).intersects(aoi_geom):
                return "aoi"
        except (ValueError, TypeError, AttributeError):
            raise SearchError(f"item {item.get('id')}: invalid geometry") from None
    return None


def _csv_text(items: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", "datetime", "tile", "eo:cloud_cover"])
    for it in items:
        props = it.get("properties") or {}
        w.writerow([it["id"], props.get("datetime", ""), tile_of_item_id(it["id"]), props.get("eo:cloud_cover", "")])
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------ search
def _fetch(stac_url: str, collection: str, bboxes: list[tuple[float, ...]], season: Season, limit: int,
           max_items: int | None, max_cloud_cover: float | None, policy: RetryPolicy,
           server_cloud_filter: bool | None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Unique items as returned (server order) and paging statistics."""
    try:
        client, io = open_stac(stac_url, policy)
        use_query = conforms_to_query(client) if server_cloud_filter is None else server_cloud_filter
        query = {"eo:cloud_cover": {"lte": max_cloud_cover}} if use_query and max_cloud_cover is not None else None
        pages = PageStats()
        items = list(search_boxes(client, io, collection=collection, bboxes=[list(b) for b in bboxes],
                                  datetime_range=season.datetime_range, limit=limit, query=query,
                                  max_items=max_items, stats=pages))
    except HttpError as exc:
        raise SearchError(f"HLS search at {stac_url} (collection {collection}) failed: {exc}") from exc
    stats = {"n_returned": pages.n_returned, "duplicates": pages.duplicates, "repeated_pages": pages.repeated_pages,
             "pages": pages.pages, "server_cloud_filter": query is not None, "retries": io.stats.retries,
             "retry_wait_s": round(io.stats.waited_s, 3)}
    return items, stats


def _fetch_all(stac_url: str, collection: str, bboxes: list[tuple[float, ...]], season: Season, limit: int,
               max_items: int | None, max_cloud_cover: float | None, policy: RetryPolicy,
               server_cloud_filter: bool | None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """:func:`_fetch` for each collection of ``collection`` (comma-separated ids); items concatenated in
    collection order without repeats, paging statistics summed."""
    items: list[dict[str, Any]] = []
    seen: set[str] = set()
    total: dict[str, Any] = {}
    for coll in parse_collections(collection):
        got, stats = _fetch(stac_url, coll, bboxes, season, limit, max_items, max_cloud_cover, policy,
                            server_cloud_filter)
        for it in got:
            if it.get("id") not in seen:
                seen.add(it.get("id"))
                items.append(it)
        for k, v in stats.items():
            total[k] = (total.get(k, False) or v) if isinstance(v, bool) else total.get(k, 0) + v
    total["retry_wait_s"] = round(total["retry_wait_s"], 3)
    return items, total


def _select(items: list[dict[str, Any]], max_cloud_cover: float | None, seas: Season, geom: Any, collection: str,
            stac_url: str) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """(kept items, counts of dropped items per reason); an item whose id is no HLS id is refused."""
    kept, dropped = [], {"cloud": 0, "season": 0, "aoi": 0, "collection": 0}
    for it in items:
        why = keep_item(it, max_cloud_cover, seas, geom, collection)
        if why:
            dropped[why] += 1
            continue
        try:
            tile_of_item_id(it["id"])
        except GridError as exc:
            raise SearchError(f"{stac_url}: item {it['id']!r} is not an HLS granule id ({exc})") from None
        kept.append(it)
    return kept, dropped


def search_hls(*, aoi: Any, year: int | None = None, season: Any = None, output_dir: str,
               options: SearchOptions = SearchOptions(), retries: RetryPolicy | dict[str, Any] | None = None,
               server_cloud_filter: bool | None = None, refresh: bool = False) -> SearchResult:
    """Search HLS items for the AOI and season; save them under ``<output_dir>/search/``.

    ``aoi``: lon/lat bbox, GeoJSON geometry/Feature(Collection) or a GeoJSON file path. ``season``
    (``{"start", "end"}`` dates, inclusive) overrides the hemisphere's leaf-on window of ``year``.
    ``options``: endpoint, collection, cloud filter, paging. ``retries``: :class:`core.http.RetryPolicy`
    (or its fields). ``server_cloud_filter``: None = use ``query`` when the API declares it.
    """
    geom = parse_aoi(aoi)
    seas = resolve_season(aoi, year, season)
    stac_url, collection, max_cloud_cover = options.stac_url, options.collection, options.max_cloud_cover
    limit, max_items = options.limit, options.max_items
    policy = RetryPolicy.from_any(retries)
    out = Path(output_dir) / "search"
    paths = {"items_json": out / "hls_items.json", "items_csv": out / "hls_items.csv",
             "search_json": out / "hls_search.json"}
    request = {"aoi_bounds": list(geom.bounds), "aoi_wkt_sha256": hashlib.sha256(geom.wkt.encode()).hexdigest(),
               "season": seas.to_dict(), "max_cloud_cover": max_cloud_cover, "stac_url": stac_url,
               "collection": collection, "max_items": max_items}
    if not refresh and all(p.exists() for p in paths.values()):
        saved = read_json(paths["search_json"])
        if saved.get("request") == request:
            return SearchResult.from_dict({**saved["result"], "reused": True})
    items, stats = _fetch_all(stac_url, collection, search_bboxes(geom), seas, limit, max_items, max_cloud_cover,
                              policy, server_cloud_filter)
    kept, dropped = _select(items, max_cloud_cover, seas, geom, collection, stac_url)
    if not kept:  # an empty search is no result: the previous run's search record is left as it was
        raise SearchError(f"HLS search at {stac_url} (collection {collection}) found no usable item for the area "
                          f"{[round(v, 5) for v in geom.bounds]} in {seas.label}: {stats['n_returned']} returned, "
                          f"dropped: cloud {dropped['cloud']} (max_cloud_cover {max_cloud_cover}), season "
                          f"{dropped['season']}, outside the area {dropped['aoi']}, other collection "
                          f"{dropped['collection']}")
    by_tile: dict[str, list[str]] = {}
    for it in kept:
        by_tile.setdefault(tile_of_item_id(it["id"]), []).append(it["id"])
    result = SearchResult(**{k: str(v) for k, v in paths.items()}, n_items=len(kept), **stats,
                          dropped_cloud=dropped["cloud"], dropped_season=dropped["season"],
                          dropped_aoi=dropped["aoi"], dropped_collection=dropped["collection"],
                          tiles=sorted(by_tile), ids_by_tile=dict(sorted(by_tile.items())), season=seas.to_dict(),
                          stac_url=stac_url, collection=collection, max_cloud_cover=max_cloud_cover,
                          searched_at=datetime.now(UTC).isoformat(timespec="seconds"), reused=False)
    with staged() as st:  # the three files replace the previous search's together, after success only
        write_json_atomic(st.path(paths["items_json"]), {"type": "FeatureCollection", "features": kept})
        st.path(paths["items_csv"]).write_text(_csv_text(kept))
        write_json_atomic(st.path(paths["search_json"]), {"request": request, "retry_policy": asdict(policy),
                                                          "result": result.to_dict()})
    log.info("HLS search: %d items kept of %d returned (%d duplicates, %d over cloud cover)", len(kept),
             stats["n_returned"], stats["duplicates"], dropped["cloud"])
    return result

