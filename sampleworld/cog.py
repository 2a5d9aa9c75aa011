"""Writing rasters the way HLS writes them: tiled 256 px, deflate + predictor 2, nearest overviews.

The CRS is written in HLS's authority-less form ``UTM Zone NN, Northern Hemisphere`` (copied from the
real T19LBJ B01 file in ../shared/realdata); :func:`core.grid.epsg_of` maps it back to EPSG:326NN.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.io import MemoryFile

from core.files import temp_sibling
from core.grid import Grid


def hls_utm_wkt(zone: int) -> str:
    """The WKT HLS v2.0 writes for a UTM zone (northern form, also used south of the equator)."""
    cm = -183 + 6 * zone
    return (
        f'PROJCS["UTM Zone {zone}, Northern Hemisphere",GEOGCS["Unknown datum based upon the WGS 84 '
        'ellipsoid",DATUM["Not specified (based on WGS 84 spheroid)",SPHEROID["WGS 84",6378137,'
        '298.257223563,AUTHORITY["EPSG","7030"]]],PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433,'
        'AUTHORITY["EPSG","9122"]]],PROJECTION["Transverse_Mercator"],PARAMETER["latitude_of_origin",0],'
        f'PARAMETER["central_meridian",{cm}],PARAMETER["scale_factor",0.9996],PARAMETER["false_easting",'
        '500000],PARAMETER["false_northing",0],UNIT["metre",1,AUTHORITY["EPSG","9001"]],'
        'AXIS["Easting",EAST],AXIS["Northing",NORTH]]'
    )


def overview_factors(width: int, height: int, block: int = 256) -> list[int]:
    """Overview levels as GDAL's COG rule gives them: halve until a level fits in one block
    (3660 px -> 2, 4, 8, 16 like the real HLS files; <= 256 px -> none)."""
    factors: list[int] = []
    f = 1
    while max(width, height) / f > block:
        f *= 2
        factors.append(f)
    return factors


def write_cog(path: Path, array: np.ndarray, grid: Grid, *, nodata: float | None, tags: dict[str, str],
              crs_wkt: str | None = None, description: str | None = None,
              scale: float | None = None, offset: float | None = None) -> Path:
    """Write one band as a tiled COG (atomic: temp name in the same folder, then ``os.replace``).

    ``crs_wkt`` defaults to the grid's EPSG code; ``scale``/``offset`` set GDAL band scale/offset.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = array.shape
    if (h, w) != (grid.height, grid.width):
        raise ValueError(f"{path.name}: array shape {array.shape} != grid shape {grid.shape}")
    crs = CRS.from_wkt(crs_wkt) if crs_wkt else CRS.from_string(grid.crs)
    profile = dict(driver="GTiff", width=w, height=h, count=1, dtype=array.dtype.name, crs=crs,
                   transform=grid.affine, nodata=nodata)
    tmp = temp_sibling(path)
    with MemoryFile() as mf:
        with mf.open(**profile) as mem:
            mem.write(array, 1)
            mem.update_tags(**tags)
            if description:
                mem.set_band_description(1, description)
            if scale is not None:
                mem.scales = (scale,)
                mem.offsets = (offset or 0.0,)
            factors = overview_factors(w, h)
            if factors:
                mem.build_overviews(factors, Resampling.nearest)
        with mf.open() as src:
            rasterio.shutil.copy(src, tmp, driver="GTiff", tiled=True, blockxsize=256, blockysize=256,
                                 compress="deflate", predictor=2, copy_src_overviews=True)
    os.replace(tmp, path)
    return path
