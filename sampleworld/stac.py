"""STAC JSON shaped like NASA CMR-STAC's: HLS L30 items/collection and GEDI L4A items/collection.

Item shape copied from the real CMR-STAC item in ../shared/realdata/stac (links, asset keys, titles,
roles and descriptions; no media type on data assets, no ``proj:*``, properties only ``datetime``,
``start_datetime``, ``end_datetime`` and ``eo:cloud_cover``). Asset hrefs are absolute local paths; links
that CMR points at its own services point at ``https://sampleworld.invalid/...`` (a name that can never
resolve) with CMR's path layout.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np

HLS_COLLECTION = "HLSL30_2.0"
GEDI_COLLECTION = "GEDI_L4A_AGB_Density_V2_1_2056_2.1"
EO_EXT = "https://stac-extensions.github.io/eo/v1.0.0/schema.json"
FAKE_ROOT = "https://sampleworld.invalid/stac"


def iso_ms(t: datetime, micro: bool = False) -> str:
    """``2021-05-08T18:44:47.423Z`` (``micro``: ``...47.423000Z``), as CMR-STAC writes times."""
    return t.strftime("%Y-%m-%dT%H:%M:%S.%f")[: None if micro else -3] + "Z"


def _links(provider: str, collection: str, item_id: str, concept: str) -> list[dict[str, Any]]:
    root = f"{FAKE_ROOT}/{provider}"
    coll = f"{root}/collections/{collection}/"
    return [
        {"rel": "self", "href": f"{coll[:-1]}/items/{item_id}", "type": "application/geo+json"},
        {"rel": "parent", "href": coll, "type": "application/geo+json"},
        {"rel": "collection", "href": coll, "type": "application/geo+json"},
        {"rel": "root", "href": root, "type": "application/json", "title": f"{provider} STAC Catalog"},
        {"rel": "provider", "href": root, "type": "application/json"},
        {"rel": "via", "href": f"https://sampleworld.invalid/search/concepts/{concept}.json",
         "type": "application/json", "title": "CMR JSON metadata for item"},
        {"rel": "via", "href": f"https://sampleworld.invalid/search/concepts/{concept}.umm_json",
         "type": "application/vnd.nasa.cmr.umm+json", "title": "CMR UMM_JSON metadata for item"},
    ]


def bbox_of(ring: list[tuple[float, float]]) -> list[float]:
    lons = [p[0] for p in ring]
    lats = [p[1] for p in ring]
    return [round(min(lons), 7), round(min(lats), 7), round(max(lons), 7), round(max(lats), 7)]


def hls_item(item_id: str, ring: list[tuple[float, float]], start: datetime, end: datetime,
             cloud_cover: int, files: dict[str, str], concept: str, rng: np.random.Generator) -> dict[str, Any]:
    """One HLS L30 item. ``ring``: closed lon/lat footprint; ``files``: asset key -> absolute path
    (``.tif`` assets plus ``browse`` (.jpg) and ``metadata`` (.cmr.xml))."""
    assets: dict[str, Any] = {
        "browse": {"href": files["browse"], "type": "image/jpeg", "title": f"Download {item_id}.jpg",
                   "roles": ["browse"]},
        "thumbnail_0": {"href": files["browse"], "title": "Thumbnail [0]",
                        "description": f"Download {item_id}.jpg", "roles": ["thumbnail"]},
        "thumbnail_1": {"href": files["browse"], "title": "Thumbnail [1]",
                        "description": "This link provides direct download access via S3 to the granule",
                        "roles": ["thumbnail"]},
    }
    tif_keys = sorted(k for k in files if k not in ("browse", "metadata"))
    order = [tif_keys[i] for i in rng.permutation(len(tif_keys))]  # CMR lists assets in no fixed order
    for i, key in enumerate(order):
        assets[key] = {"href": files[key], "title": f"Direct Download [{i}]",
                       "description": f"Download {item_id}.{key}.tif", "roles": ["data"]}
    assets["metadata"] = {"href": files["metadata"], "type": "application/xml",
                          "title": f"CMR XML metadata for {concept}", "roles": ["metadata"]}
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": item_id,
        "properties": {"datetime": iso_ms(start, micro=True), "eo:cloud_cover": int(cloud_cover),
                       "start_datetime": iso_ms(start), "end_datetime": iso_ms(end)},
        "geometry": {"type": "Polygon", "coordinates": [[[round(x, 7), round(y, 7)] for x, y in ring]]},
        "links": _links("LPCLOUD", HLS_COLLECTION, item_id, concept),
        "assets": assets,
        "bbox": bbox_of(ring),
        "stac_extensions": [EO_EXT],
        "collection": HLS_COLLECTION,
    }


def gedi_item(granule_name: str, ring: list[tuple[float, float]], start: datetime, end: datetime,
              path: str, concept: str) -> dict[str, Any]:
    """One GEDI L4A item (ORNL_CLOUD provider): the ``.h5`` data asset plus its metadata link."""
    item_id = f"GEDI_L4A_AGB_Density_V2_1.{granule_name}"
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": item_id,
        "properties": {"datetime": iso_ms(start, micro=True), "start_datetime": iso_ms(start),
                       "end_datetime": iso_ms(end)},
        "geometry": {"type": "Polygon", "coordinates": [[[round(x, 7), round(y, 7)] for x, y in ring]]},
        "links": _links("ORNL_CLOUD", GEDI_COLLECTION, item_id, concept),
        "assets": {
            "data": {"href": path, "title": "Direct Download [0]", "description": f"Download {granule_name}",
                     "roles": ["data"]},
            "metadata": {"href": f"https://sampleworld.invalid/search/concepts/{concept}.xml",
                         "type": "application/xml", "title": f"CMR XML metadata for {concept}",
                         "roles": ["metadata"]},
        },
        "bbox": bbox_of(ring),
        "stac_extensions": [],
        "collection": GEDI_COLLECTION,
    }


def collection(cid: str, title: str, description: str, bbox: list[float], interval: list[str | None],
               provider: str) -> dict[str, Any]:
    """A CMR-STAC-like collection document."""
    root = f"{FAKE_ROOT}/{provider}"
    return {
        "type": "Collection",
        "id": cid,
        "stac_version": "1.0.0",
        "description": description,
        "title": title,
        "license": "not-provided",
        "extent": {"spatial": {"bbox": [bbox]}, "temporal": {"interval": [interval]}},
        "links": [
            {"rel": "self", "href": f"{root}/collections/{cid}", "type": "application/json"},
            {"rel": "root", "href": root, "type": "application/json", "title": f"{provider} STAC Catalog"},
            {"rel": "parent", "href": root, "type": "application/json"},
            {"rel": "items", "href": f"{root}/collections/{cid}/items", "type": "application/geo+json"},
        ],
        "stac_extensions": [],
    }


def feature_collection(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "FeatureCollection", "features": items}
