"""``run_hls_composite``: the HLS search and the per-tile composites in one call (what the flow wraps)."""

from __future__ import annotations

from typing import Any

from .aoi import resolve_season
from .composite import DEFAULT_CHUNK, build_composites
from .search import DEFAULT_COLLECTION, DEFAULT_STAC_URL, SearchError, search_hls


def run_hls_composite(*, aoi: Any, year: int | None = None, season: Any = None,
                      max_cloud_cover: float | None = None, stac_url: str = DEFAULT_STAC_URL,
                      collection: str = DEFAULT_COLLECTION, output_dir: str, mask_snow: bool = False,
                      mask_water: bool = False, mask_high_aerosol: bool = False, min_observations: int = 1,
                      on_read_error: str = "skip", dask_address: str | None = None,
                      chunk_size: int = DEFAULT_CHUNK, tiles: list[str] | None = None,
                      limit: int = 100, max_items: int | None = None, retries: dict[str, Any] | None = None,
                      refresh_search: bool = False) -> dict[str, Any]:
    """Search HLS L30 for the area and season, then composite every MGRS tile found.

    Returns ``{"season", "search": search_hls result, "tiles": {TILE: {"path", "grid", "scenes_used",
    "scenes_skipped": [{"id", "asset", "reason"}], "valid_obs", ...}}, "output_dir"}``.
    """
    seas = resolve_season(aoi, year, season)
    search = search_hls(aoi=aoi, year=year, season=seas.to_dict(), max_cloud_cover=max_cloud_cover,
                        stac_url=stac_url, collection=collection, output_dir=output_dir, limit=limit,
                        max_items=max_items, retries=retries, refresh=refresh_search)
    if search["n_items"] == 0:
        raise SearchError(f"no {collection} scene for aoi {aoi} in {seas.label} "
                           f"(max_cloud_cover {max_cloud_cover}) at {stac_url}")
    comp = build_composites(items_json=search["items_json"], aoi=aoi, season=seas.to_dict(), output_dir=output_dir,
                            mask_snow=mask_snow, mask_water=mask_water, mask_high_aerosol=mask_high_aerosol,
                            min_observations=min_observations, on_read_error=on_read_error,
                            dask_address=dask_address, chunk_size=chunk_size, tiles=tiles, collection=collection)
    return {"season": seas.to_dict(), "search": search, "tiles": comp["tiles"],
            "tiles_outside_aoi": comp["tiles_outside_aoi"], "output_dir": str(output_dir)}
