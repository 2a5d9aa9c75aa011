"""xarray views of the pipeline's rasters (composites, GEDI labels, biomass maps), lazy through rioxarray.

    from core.xr import open_composite, open_labels, open_map

    comp = open_composite("out/composites/10TEK/2023-06-01_2023-09-30.tif", scale=True)
    ndvi = (comp.NIR_Narrow - comp.Red) / (comp.NIR_Narrow + comp.Red)

Each function returns an ``xarray.Dataset`` with one variable per raster band, named by the band
description the pipeline's writer set (composites: ``Blue Green Red NIR_Narrow SWIR1 SWIR2 count``;
labels: ``agbd shot_count``; maps: ``agb``), dims ``(y, x)`` with pixel-centre coordinates in metres of
the grid CRS, and the CRS/transform in the ``spatial_ref`` coordinate (``ds.rio.crs``,
``ds.rio.transform()``). Value bands are float32 with the file's nodata (-9999, or -1 for granite-style
labels) as NaN; the nodata stays the encoded ``_FillValue``, so ``ds.rio.to_raster(path)`` writes it back.
Count bands (``count``, ``shot_count``) are integers and never masked. Units and the writer's tags are
carried as attributes (dataset tags on the Dataset, band tags on each variable). Data are Dask-backed by
default (``chunks=True``: chunks of whole file blocks, as rioxarray chooses them); ``chunks=None`` reads
NumPy arrays eagerly.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.bands import BAND_NAMES, L30_BANDS
from core.constants import AGB_UNITS, HLS_REFLECTANCE_SCALE

REFLECTANCE_UNITS = "HLS surface reflectance x 10000"
COMPOSITE_VARS: tuple[str, ...] = (*BAND_NAMES, "count")
LABEL_VARS: tuple[str, ...] = ("agbd", "shot_count")
MAP_VARS: tuple[str, ...] = ("agb",)


class RasterLayoutError(ValueError):
    """A raster whose bands are not the layout the opener expects (the message names the file)."""


@dataclass(frozen=True)
class VarSpec:
    """How one band becomes a variable: ``count`` bands are cast to ``dtype`` and never masked; value
    bands stay float32 with nodata as NaN."""

    name: str
    units: str
    count: bool = False
    dtype: str = "float32"
    attrs: tuple[tuple[str, Any], ...] = ()
    band_id: str | None = None  # the band's description in files written since band ids name bands (B02..)


def composite_specs() -> list[VarSpec]:
    """The seven composite bands (six mean reflectances in HLS units, then the valid-observation count)."""
    specs = [VarSpec(b.name, REFLECTANCE_UNITS, attrs=(("hls_band", b.asset), ("wavelength_um", b.wavelength_um),
                                                       ("scale_factor", HLS_REFLECTANCE_SCALE)), band_id=b.asset)
             for b in L30_BANDS]
    return [*specs, VarSpec("count", "observations", count=True, dtype="uint16")]


LABEL_SPECS = (VarSpec("agbd", AGB_UNITS), VarSpec("shot_count", "shots", count=True, dtype="int32"))
MAP_SPECS = (VarSpec("agb", AGB_UNITS),)


def spatial_coords(transform: Sequence[float], width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """(y, x) pixel-centre coordinates in the grid CRS, with rioxarray's arithmetic (so they compare equal)."""
    a, b, c, d, e, f = (float(v) for v in transform[:6])
    x = np.arange(width) * a + (a * 0.5 + b * 0.5 + c)
    y = np.arange(height) * e + (d * 0.5 + e * 0.5 + f)
    return y, x


def bands_to_dataset(arr: Any, specs: Sequence[VarSpec], nodata: float | None, attrs: dict[str, Any],
                     band_attrs: Sequence[dict[str, Any]] | None = None, scale: bool = False) -> Any:
    """Dataset of a ``(band, y, x)`` DataArray (CRS/transform already written): one variable per spec.

    Value bands: ``nodata`` -> NaN, ``_FillValue`` encoded as ``nodata``; with ``scale``, reflectance bands
    (those with a ``scale_factor`` attribute) are multiplied by it and their units become ``"1"``.
    """
    import xarray as xr

    if arr.sizes["band"] != len(specs):
        raise RasterLayoutError(f"{arr.sizes['band']} bands for {len(specs)} variables {[s.name for s in specs]}")
    out = {}
    for i, spec in enumerate(specs):
        band = arr.isel(band=i, drop=True)
        va = {**(band_attrs[i] if band_attrs else {}), **dict(spec.attrs), "long_name": spec.name,
              "units": spec.units}
        if spec.count:
            band = band.astype(spec.dtype)
        else:
            band = band.astype("float32")
            if nodata is not None and not np.isnan(nodata):
                band = band.where(band != nodata)
            if scale and "scale_factor" in va:
                band = band * np.float32(va.pop("scale_factor"))
                va["units"] = "1"
        band.attrs = va
        band.encoding = {"grid_mapping": "spatial_ref"}
        if nodata is not None and not spec.count:
            band = band.rio.write_nodata(nodata, encoded=True)
        out[spec.name] = band
    return xr.Dataset(out, attrs=dict(attrs))


# ------------------------------------------------------------------------------------------------ files
def _header(path: str) -> dict[str, Any]:
    import rasterio

    with rasterio.open(path) as src:
        return {"count": src.count, "descriptions": list(src.descriptions), "tags": src.tags(),
                "band_tags": [src.tags(i) for i in range(1, src.count + 1)], "nodata": src.nodata,
                "block": src.block_shapes[0], "shape": (src.height, src.width), "dtype": src.dtypes[0]}


def _chunks(chunks: Any, head: dict[str, Any]) -> Any:
    """rioxarray's block-aware automatic chunks as a dict (its own tuple form is deprecated by xarray)."""
    if chunks not in (True, "auto"):
        return chunks
    from dask.array.core import normalize_chunks

    _, ys, xs = normalize_chunks((1, "auto", "auto"), shape=(head["count"], *head["shape"]), dtype=head["dtype"],
                                 previous_chunks=(1, *head["block"]))
    return {"band": 1, "y": ys, "x": xs}


def open_bands(path: str | os.PathLike[str], specs: Sequence[VarSpec], *, kind: str, chunks: Any = True,
               lock: Any = None, scale: bool = False) -> Any:
    """Open a raster written by the pipeline as a Dataset (see the module doc); ``kind`` names it in errors."""
    import rioxarray

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{kind} {path} does not exist")
    head = _header(path)
    names = [s.name for s in specs]
    ids = [s.band_id or s.name for s in specs]
    if head["descriptions"] not in (names, ids):
        raise RasterLayoutError(f"{path} is not a {kind} written by this pipeline: its band descriptions are "
                                f"{head['descriptions']}, expected {ids} (or, in older files, {names})")
    with warnings.catch_warnings():  # per-band scales are handled here, from the band metadata
        warnings.filterwarnings("ignore", "Scales differ across bands", UserWarning)
        arr = rioxarray.open_rasterio(path, chunks=_chunks(chunks, head), lock=lock, masked=False,
                                      mask_and_scale=False)
    arr = arr.assign_coords(band=np.arange(1, head["count"] + 1))
    band_attrs = [{k.lower(): v for k, v in t.items() if k not in ("BAND_NAME", "SCALE_FACTOR", "UNITS")}
                  for t in head["band_tags"]]
    attrs = {k: v for k, v in head["tags"].items() if k != "AREA_OR_POINT"}
    return bands_to_dataset(arr, specs, head["nodata"], attrs, band_attrs, scale=scale)


def open_composite(path: str | os.PathLike[str], *, scale: bool = False, chunks: Any = True,
                   lock: Any = None) -> Any:
    """A composite COG (``composites/<TILE>/<SEASON>.tif``) as an ``xarray.Dataset``.

    Variables ``Blue Green Red NIR_Narrow SWIR1 SWIR2`` (float32 mean surface reflectance in HLS units
    = reflectance x 10000, NaN where the file has nodata -9999, i.e. fewer valid observations than
    ``MIN_OBSERVATIONS``) and ``count`` (uint16 valid observations, never masked). ``scale=True``
    multiplies the six reflectances by 0.0001 (units ``"1"``). Attributes: the COG's tags (``MGRS_TILE``,
    ``SEASON``, ``SCENE_IDS``, ``MASKED_BITS`` ...) and per band ``hls_band``, ``wavelength_um``, ``units``.
    """
    return open_bands(path, composite_specs(), kind="composite", chunks=chunks, lock=lock, scale=scale)


def open_labels(path: str | os.PathLike[str], *, chunks: Any = True, lock: Any = None) -> Any:
    """A GEDI label COG (``labels/<TILE>/<SEASON>.tif``) as an ``xarray.Dataset``.

    ``agbd``: float32 mean GEDI L4A AGBD of the shots in the pixel (Mg/ha), NaN where no shot fell (the
    file's nodata, -9999 or -1, is the encoded ``_FillValue``); ``shot_count``: int32 shots per pixel.
    """
    return open_bands(path, LABEL_SPECS, kind="label raster", chunks=chunks, lock=lock)


def open_map(path: str | os.PathLike[str], *, chunks: Any = True, lock: Any = None) -> Any:
    """A biomass map COG (``maps/<TILE>_agb.tif``) as an ``xarray.Dataset``: ``agb`` float32 Mg/ha, NaN
    where any input band of the composite was nodata (file nodata -9999)."""
    return open_bands(path, MAP_SPECS, kind="biomass map", chunks=chunks, lock=lock)
