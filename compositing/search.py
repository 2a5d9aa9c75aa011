"""HLS L30 search on any STAC API (NASA CMR-STAC by default), saved with the outputs for re-runs and audits.

* Server-side cloud filter (``query`` ``eo:cloud_cover lte``) only where the API declares the STAC
  ``query`` conformance class; the client filter always runs again (CMR treats ``lt`` as ``lte``; some
  servers ignore or do not support ``query``). ``max_cloud_cover`` is inclusive (percent).
* Items are also kept only when their datetime is inside the season and their footprint meets the AOI.
* Paging guard: a repeated item id is dropped and counted; a page made only of already-seen ids ends the
  paging (CMR cursor bugs repeated pages).
* Retries: one policy (:class:`RetryPolicy`) for every HTTP request of the search: HTTP 429/5xx, timeouts
  and connection errors are retried with exponential backoff, honouring ``Retry-After``, within a bounded
  number of attempts and total waiting budget; then :class:`SearchError` says what failed.

Writes ``<output_dir>/search/hls_items.json`` (a FeatureCollection of the items exactly as returned),
``hls_items.csv`` (id, datetime, tile, eo:cloud_cover) and ``hls_search.json`` (parameters and counts).
A re-run with the same parameters reuses the saved search without contacting the server.
"""

from __future__ import annotations

import csv
import email.utils
import hashlib
import io
import logging
import random
import time
from copy import deepcopy
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shapely.geometry import shape

from .aoi import Season, parse_aoi, resolve_season
from .grid import GridError, tile_of_item_id
from .io_utils import atomic_path, read_json, write_json_atomic

log = logging.getLogger(__name__)

DEFAULT_STAC_URL = "https://cmr.earthdata.nasa.gov/stac/LPCLOUD"
DEFAULT_COLLECTION = "HLSL30_2.0"
MAX_PAGES = 10_000


class SearchError(RuntimeError):
    """A search that could not be completed (server errors after retries, bad items, ...)."""


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of every HTTP request of a search.

    ``max_attempts`` per request (first try included); waits ``backoff_s * 2**(n-1)`` (+ up to 10 %
    jitter, at most ``max_backoff_s``) or the server's ``Retry-After`` when given; all waits of one search
    together may not exceed ``budget_s`` seconds. ``timeout_s``: connect/read timeout of one request.
    """

    max_attempts: int = 6
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    budget_s: float = 300.0
    timeout_s: float = 60.0
    retry_statuses: tuple[int, ...] = (429, 500, 502, 503, 504)

    @classmethod
    def from_any(cls, value: RetryPolicy | dict[str, Any] | None) -> RetryPolicy:
        if value is None:
            return cls()
        if isinstance(value, RetryPolicy):
            return value
        names = {f.name for f in fields(cls)}
        unknown = set(value) - names
        if unknown:
            raise ValueError(f"unknown retry options {sorted(unknown)}; known: {sorted(names)}")
        if "retry_statuses" in value:
            value = {**value, "retry_statuses": tuple(value["retry_statuses"])}
        return cls(**value)

    def delay(self, attempt: int, retry_after: str | None) -> float:
        """Seconds to wait before attempt ``attempt + 1``."""
        parsed = _parse_retry_after(retry_after)
        if parsed is not None:
            return max(0.0, parsed)
        base = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
        return base * (1 + 0.1 * random.random())


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (when - datetime.now(UTC)).total_seconds()


def _retrying_io(policy: RetryPolicy) -> Any:
    """A pystac-client ``StacApiIO`` whose requests follow ``policy`` (urllib3's own retries off)."""
    import requests
    from pystac_client.stac_api_io import StacApiIO

    class RetryingStacApiIO(StacApiIO):
        def __init__(self) -> None:
            super().__init__(timeout=policy.timeout_s, max_retries=None)
            self.waited_s = 0.0
            self.retries = 0

        def request(self, href: str, method: str | None = None, headers: dict[str, str] | None = None,
                    parameters: dict[str, Any] | None = None) -> str:
            method = (method or "GET").upper()
            attempt = 0
            while True:
                attempt += 1
                if method in ("POST", "PUT", "PATCH"):
                    req = requests.Request(method=method, url=href, headers=headers, json=parameters)
                else:
                    req = requests.Request(method=method, url=href, headers=headers,
                                           params=deepcopy(parameters) or {})
                prepped = self.session.prepare_request(req)
                settings = self.session.merge_environment_settings(prepped.url, {}, None, True, None)
                retry_after = None
                try:
                    resp = self.session.send(prepped, timeout=self.timeout, **settings)
                except (requests.Timeout, requests.ConnectionError) as exc:
                    why = f"{type(exc).__name__}: {str(exc)[:200]}"
                else:
                    if 200 <= resp.status_code < 300:
                        return resp.content.decode("utf-8")
                    why = f"HTTP {resp.status_code}: {resp.text[:200]!r}"
                    if resp.status_code not in policy.retry_statuses:
                        raise SearchError(f"{method} {href} failed: {why}")
                    retry_after = resp.headers.get("Retry-After")
                wait = policy.delay(attempt, retry_after)
                if attempt >= policy.max_attempts or self.waited_s + wait > policy.budget_s:
                    raise SearchError(
                        f"{method} {href} failed after {attempt} attempts ({self.waited_s:.1f} s waited; "
                        f"retry budget {policy.max_attempts} attempts / {policy.budget_s:g} s): last error {why}")
                log.warning("%s %s: %s; retry %d in %.1f s", method, href, why, attempt, wait)
                time.sleep(wait)
                self.waited_s += wait
                self.retries += 1

    return RetryingStacApiIO()


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
    """None to keep the item, else the reason to drop it: ``cloud``, ``season``, ``aoi``, ``collection``."""
    if item.get("collection") not in (None, collection):
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
def _fetch(stac_url: str, collection: str, bbox: tuple[float, ...], season: Season, limit: int,
           max_items: int | None, max_cloud_cover: float | None, policy: RetryPolicy,
           server_cloud_filter: bool | None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Unique items as returned (server order) and paging statistics."""
    from pystac_client import Client
    from pystac_client.exceptions import APIError

    stac_io = _retrying_io(policy)
    try:
        client = Client.open(stac_url, stac_io=stac_io)
    except APIError as exc:
        raise SearchError(f"{stac_url}: cannot open the STAC API: {exc}") from exc
    conforms = any(c.endswith("item-search#query") for c in (client.to_dict().get("conformsTo") or []))
    use_query = conforms if server_cloud_filter is None else server_cloud_filter
    kwargs: dict[str, Any] = {}
    if use_query and max_cloud_cover is not None:
        kwargs["query"] = {"eo:cloud_cover": {"lte": max_cloud_cover}}
    search = client.search(collections=[collection], bbox=list(bbox), datetime=season.datetime_range,
                           limit=limit, method="POST", **kwargs)
    seen: set[str] = set()
    items: list[dict[str, Any]] = []
    stats = {"n_returned": 0, "duplicates": 0, "repeated_pages": 0, "pages": 0,
             "server_cloud_filter": bool(kwargs), "retries": 0}
    try:
        for page in search.pages_as_dicts():
            stats["pages"] += 1
            feats = page.get("features") or []
            stats["n_returned"] += len(feats)
            new = [f for f in feats if f.get("id") not in seen]
            stats["duplicates"] += len(feats) - len(new)
            if feats and not new:
                stats["repeated_pages"] += 1
                log.warning("%s: a page repeated only items already seen; paging stopped", stac_url)
                break
            for f in new:
                if "id" not in f:
                    raise SearchError(f"{stac_url}: an item without id: {str(f)[:200]}")
                if f["id"] in seen:  # duplicate inside the same page
                    stats["duplicates"] += 1
                    continue
                seen.add(f["id"])
                items.append(f)
            if (max_items and len(items) >= max_items) or stats["pages"] >= MAX_PAGES:
                items = items[:max_items] if max_items else items
                break
    except APIError as exc:
        raise SearchError(f"{stac_url}: search failed: {exc}") from exc
    stats["retries"] = stac_io.retries
    stats["retry_wait_s"] = round(stac_io.waited_s, 3)
    return items, stats


def search_hls(*, aoi: Any, year: int | None = None, season: Any = None, max_cloud_cover: float | None = None,
               stac_url: str = DEFAULT_STAC_URL, collection: str = DEFAULT_COLLECTION, output_dir: str,
               limit: int = 100, max_items: int | None = None, retries: dict[str, Any] | None = None,
               server_cloud_filter: bool | None = None, refresh: bool = False) -> dict[str, Any]:
    """Search HLS items for the AOI and season; save them under ``<output_dir>/search/``.

    ``aoi``: lon/lat bbox, GeoJSON geometry/Feature(Collection) or a GeoJSON file path. ``season``
    (``{"start", "end"}`` dates, inclusive) overrides the hemisphere's leaf-on window of ``year``.
    ``max_cloud_cover``: percent, inclusive. ``limit``: page size (CMR caps it at 100). ``max_items``:
    stop after that many unique items. ``retries``: :class:`RetryPolicy` fields. ``server_cloud_filter``:
    None = use ``query`` when the API declares it. Returns paths, counts and the item ids per tile.
    """
    geom = parse_aoi(aoi)
    seas = resolve_season(aoi, year, season)
    if max_cloud_cover is not None and not 0 <= float(max_cloud_cover) <= 100:
        raise ValueError(f"max_cloud_cover must be a percentage 0..100, got {max_cloud_cover}")
    if not 1 <= limit <= 1000:
        raise ValueError(f"limit (page size) must be 1..1000, got {limit}")
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
            return {**saved["result"], "reused": True}
    items, stats = _fetch(stac_url, collection, geom.bounds, seas, limit, max_items, max_cloud_cover, policy,
                          server_cloud_filter)
    kept, dropped = [], {"cloud": 0, "season": 0, "aoi": 0, "collection": 0}
    for it in items:
        why = keep_item(it, max_cloud_cover, seas, geom, collection)
        if why:
            dropped[why] += 1
        else:
            try:
                tile_of_item_id(it["id"])
            except GridError as exc:
                raise SearchError(f"{stac_url}: item {it['id']!r} is not an HLS granule id ({exc})") from None
            kept.append(it)
    by_tile: dict[str, list[str]] = {}
    for it in kept:
        by_tile.setdefault(tile_of_item_id(it["id"]), []).append(it["id"])
    write_json_atomic(paths["items_json"], {"type": "FeatureCollection", "features": kept})
    with atomic_path(paths["items_csv"]) as tmp:
        tmp.write_text(_csv_text(kept))
    result = {**{k: str(v) for k, v in paths.items()}, "n_items": len(kept), **stats,
              "dropped_cloud": dropped["cloud"], "dropped_season": dropped["season"], "dropped_aoi": dropped["aoi"],
              "dropped_collection": dropped["collection"], "tiles": sorted(by_tile),
              "ids_by_tile": dict(sorted(by_tile.items())), "season": seas.to_dict(), "stac_url": stac_url,
              "collection": collection, "max_cloud_cover": max_cloud_cover, "reused": False,
              "searched_at": datetime.now(UTC).isoformat(timespec="seconds")}
    write_json_atomic(paths["search_json"], {"request": request, "retry_policy": asdict(policy), "result": result})
    log.info("HLS search: %d items kept of %d returned (%d duplicates, %d over cloud cover)", len(kept),
             stats["n_returned"], stats["duplicates"], dropped["cloud"])
    return result

