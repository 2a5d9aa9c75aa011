"""The kept shots as a GeoDataFrame / GeoParquet (EPSG:4326 points), one row per shot.

Columns: ``shot_number`` (uint64), ``time`` (UTC), ``delta_time`` (s since 2018-01-01), ``beam``,
``lon``/``lat`` (degrees, float64), ``agbd``/``agbd_se`` (Mg/ha float32; ``agbd_se`` NaN when the granule
lacks it), ``pft_class``, ``leaf_off_flag``, ``l4_quality_flag``, ``l2_quality_flag``, ``degrade_flag``,
``selected_algorithm`` (uint8, 255 = not in the granule), ``sensitivity`` (float32), ``granule``,
``production_version``, ``geometry``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.files import atomic_path

_RENAME = {"lon_lowestmode": "lon", "lat_lowestmode": "lat", "land_cover_data/pft_class": "pft_class",
           "land_cover_data/leaf_off_flag": "leaf_off_flag"}
_DTYPES: dict[str, Any] = {
    "shot_number": np.uint64, "delta_time": np.float64, "beam": object, "lon": np.float64,
    "lat": np.float64, "agbd": np.float32, "agbd_se": np.float32, "pft_class": np.uint8,
    "leaf_off_flag": np.uint8, "l4_quality_flag": np.uint8, "l2_quality_flag": np.uint8,
    "degrade_flag": np.uint8, "selected_algorithm": np.uint8, "sensitivity": np.float32,
}
COLUMNS = ("shot_number", "time", "delta_time", "beam", "lon", "lat", "agbd", "agbd_se", "pft_class",
           "leaf_off_flag", "l4_quality_flag", "l2_quality_flag", "degrade_flag", "selected_algorithm",
           "sensitivity", "granule", "production_version")


def delta_time_to_utc(delta_time: np.ndarray) -> pd.DatetimeIndex:
    """GEDI ``delta_time`` (s since 2018-01-01T00:00Z) to UTC timestamps (ns)."""
    ns = np.round(np.asarray(delta_time, dtype=np.float64) * 1e9).astype("int64").astype("timedelta64[ns]")
    return pd.DatetimeIndex(np.datetime64("2018-01-01T00:00:00", "ns") + ns).tz_localize("UTC")


def shots_frame(columns: dict[str, np.ndarray], granule_id: str, production_version: str) -> Any:
    """GeoDataFrame of one granule's kept shots (``columns`` as :class:`labels.reader.GranuleShots`)."""
    import geopandas as gpd

    cols = {_RENAME.get(k, k): v for k, v in columns.items()}
    n = len(cols.get("agbd", ()))
    data: dict[str, Any] = {}
    for name in COLUMNS:
        if name == "time":
            data[name] = delta_time_to_utc(cols.get("delta_time", np.zeros(0)))
        elif name == "granule":
            data[name] = np.full(n, granule_id, dtype=object)
        elif name == "production_version":
            data[name] = np.full(n, production_version, dtype=object)
        else:
            data[name] = np.asarray(cols.get(name, np.zeros(0)), dtype=_DTYPES[name])
    df = pd.DataFrame(data)
    geometry = gpd.points_from_xy(df["lon"].to_numpy(), df["lat"].to_numpy(), crs="EPSG:4326")
    return gpd.GeoDataFrame(df, geometry=geometry, crs="EPSG:4326")


def write_shots(gdf: Any, path: str | Path) -> Path:
    """Write a shots GeoDataFrame as GeoParquet atomically."""
    with atomic_path(path) as tmp:
        gdf.to_parquet(tmp, index=False)
    return Path(path)


_EPSG_4326 = {"authority": "EPSG", "code": 4326}


def read_shots(path: str | Path, columns: list[str] | None = None) -> Any:
    """Read a shots GeoParquet (all columns, or ``columns`` plus geometry).

    The frame ``geopandas.read_parquet`` gives; for a file whose geometry CRS is EPSG:4326 (every file
    this project writes) built without parsing the file's PROJJSON CRS, which costs ~30 ms a file (the
    per-granule files of a season are read one after another)."""
    import geopandas as gpd
    import pyarrow.parquet as pq
    import shapely

    cols = None if columns is None else [*columns, "geometry"]
    with pq.ParquetFile(path) as pf:  # (read_table would import pyarrow.dataset: ~0.5 s, once)
        geo = json.loads((pf.schema_arrow.metadata or {}).get(b"geo", b"{}"))
        meta = geo.get("columns", {}).get("geometry", {})
        if geo.get("primary_column") != "geometry" or meta.get("encoding", "").upper() != "WKB" or \
                (meta.get("crs") or {}).get("id") != _EPSG_4326:
            return gpd.read_parquet(path, columns=cols)
        df = pf.read(columns=cols).to_pandas()
    df["geometry"] = shapely.from_wkb(df["geometry"].to_numpy())
    return gpd.GeoDataFrame(df, geometry="geometry", crs="EPSG:4326")


def concat_shots(frames: list[Any]) -> Any:
    """One GeoDataFrame of several granules' shots (an empty one when ``frames`` is empty)."""
    import geopandas as gpd

    frames = [f for f in frames if f is not None]
    if not frames:
        return shots_frame({}, "", "")
    out = pd.concat(frames, ignore_index=True)
    return gpd.GeoDataFrame(out, geometry="geometry", crs="EPSG:4326")
