"""Small HLS-format scenes for tests and quick benchmarks (not the sample world).

Files look like real HLS v2.0 granule assets (L30 or S30, by the item id ``HLS.L30.``/``HLS.S30.``):
single-band tiled (256 px) deflate GeoTIFFs, int16 reflectance x 10000 with nodata -9999, Fmask uint8 with
fill 255, CRS written as HLS's authority-less "UTM Zone N, Northern Hemisphere" WKT (a grid in another CRS,
e.g. EPSG:327NN, is written with its EPSG code), file name ``<id>.<ASSET>.tif``; items are plain dicts
shaped like CMR-STAC items (no ``type``, no ``proj:*``, only ``eo:cloud_cover`` and the datetimes) with
the collection of their id. S30 scenes use S30's asset names (``S30_ASSETS``: B8A is NIR-narrow, B11/B12
SWIR, B05-B07 red edge).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from core.bands import collection_of_item
from core.constants import HLS_L30, HLS_NODATA
from core.grid import Grid

# Reflective assets of each collection's granules (HLS v2.0 user guide), besides Fmask and the angles.
L30_ASSETS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B09", "B10", "B11")
S30_ASSETS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")

HLS_WKT = (
    'PROJCS["UTM Zone {zone}, Northern Hemisphere",GEOGCS["Unknown datum based upon the WGS 84 ellipsoid",'
    'DATUM["Not specified (based on WGS 84 spheroid)",SPHEROID["WGS 84",6378137,298.257223563,'
    'AUTHORITY["EPSG","7030"]]],PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433,'
    'AUTHORITY["EPSG","9122"]]],PROJECTION["Transverse_Mercator"],PARAMETER["latitude_of_origin",0],'
    'PARAMETER["central_meridian",{cm}],PARAMETER["scale_factor",0.9996],PARAMETER["false_easting",500000],'
    'PARAMETER["false_northing",0],UNIT["metre",1,AUTHORITY["EPSG","9001"]],AXIS["Easting",EAST],'
    'AXIS["Northing",NORTH]]'
)


def hls_wkt(epsg: int) -> str:
    """HLS-style WKT (no EPSG authority) of a northern UTM zone EPSG:326NN."""
    zone = epsg - 32600
    if not 1 <= zone <= 60:
        raise ValueError(f"not a northern UTM EPSG code: {epsg}")
    return HLS_WKT.format(zone=zone, cm=-183 + 6 * zone)


def write_asset(path: Path, array: np.ndarray, grid: Grid, nodata: float, tags: dict[str, str] | None = None,
                scale: float | None = None) -> Path:
    """One HLS-like single-band tiled deflate GeoTIFF (with 2x overviews when larger than a block)."""
    import rasterio
    from rasterio.crs import CRS
    from rasterio.enums import Resampling

    path.parent.mkdir(parents=True, exist_ok=True)
    crs = CRS.from_wkt(hls_wkt(grid.epsg)) if 32601 <= grid.epsg <= 32660 else CRS.from_epsg(grid.epsg)
    with rasterio.open(path, "w", driver="GTiff", width=grid.width, height=grid.height, count=1,
                       dtype=array.dtype, crs=crs, transform=grid.affine,
                       nodata=nodata, tiled=True, blockxsize=256, blockysize=256, compress="deflate") as ds:
        ds.write(array, 1)
        if tags:
            ds.update_tags(**tags)
        if scale is not None:
            ds.scales = [scale]
        if max(grid.width, grid.height) > 512:
            ds.build_overviews([2, 4], Resampling.nearest)
    return path


def write_scene(root: Path, item_id: str, grid: Grid, bands: dict[str, np.ndarray], fmask: np.ndarray,
                datetime: str, cloud_cover: float, footprint: list[list[float]] | None = None) -> dict[str, Any]:
    """Write ``<root>/<id>/<id>.<ASSET>.tif`` for the given bands (asset key -> int16 array) + Fmask;
    return a CMR-STAC-like item whose ``collection`` follows the id (``HLS.S30.`` -> ``HLSS30_2.0``)."""
    folder = root / item_id
    assets: dict[str, Any] = {}
    for key, arr in bands.items():
        if arr.dtype != np.int16:
            raise TypeError(f"{key}: bands must be int16, got {arr.dtype}")
        p = write_asset(folder / f"{item_id}.{key}.tif", arr, grid, HLS_NODATA,
                        {"scale_factor": "0.0001", "_FillValue": "-9999"}, scale=0.0001)
        assets[key] = {"href": str(p), "title": f"Download {p.name}", "roles": ["data"]}
    p = write_asset(folder / f"{item_id}.Fmask.tif", fmask.astype(np.uint8), grid, 255, {"_FillValue": "255"})
    assets["Fmask"] = {"href": str(p), "title": f"Download {p.name}", "roles": ["data"]}
    ring = footprint or _lonlat_ring(grid)
    xs = [c[0] for c in ring]
    ys = [c[1] for c in ring]
    return {"type": "Feature", "stac_version": "1.0.0", "id": item_id,
            "properties": {"datetime": datetime, "start_datetime": datetime, "end_datetime": datetime,
                           "eo:cloud_cover": cloud_cover},
            "geometry": {"type": "Polygon", "coordinates": [ring]}, "links": [], "assets": assets,
            "bbox": [min(xs), min(ys), max(xs), max(ys)], "stac_extensions": [],
            "collection": collection_of_item({"id": item_id}) or HLS_L30}


def _lonlat_ring(grid: Grid) -> list[list[float]]:
    from pyproj import Transformer

    t = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True)
    x0, y0, x1, y1 = grid.bounds
    pts = [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]
    return [list(t.transform(x, y)) for x, y in pts]
