"""The fast chip GeoTIFF writer reads back in GDAL exactly like a rasterio-written chip."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine

from chips.export import export_chips
from chips.geotiff import geotiff_bytes, write_geotiff
from chips.manifest import ExportResult
from chips.params import ChipParams
from core.grid import mgrs_tile_grid
from sampleworld.synthetic.pairs import write_pair


def run_export(*, composites: Any, labels: Any, output_dir: Any, **params: Any) -> ExportResult:
    """export_chips with the chip parameters given as keywords (tests vary them one at a time)."""
    return export_chips(composites=composites, labels=labels, output_dir=output_dir, params=ChipParams(**params))



@pytest.mark.parametrize(
    ("bands", "epsg", "nodata", "transform"),
    [
        (1, 32610, -1.0, (30.0, 0.0, 499980.0, 0.0, -30.0, 4500000.0)),
        (6, 32614, -9999.0, (30.0, 0.0, 440280.0, 0.0, -30.0, 3159720.0)),
        (7, 32619, -9999.0, (30.0, 0.0, 199980.0, 0.0, -30.0, -1090200.0)),  # southern tile, negative northing
        (2, 32606, 0.5, (10.0, 0.0, 0.0, 0.0, -10.0, 10.0)),
        (3, 32610, None, (30.0, 0.0, 500000.0, 0.0, -30.0, 5000000.0)),
    ],
)
def test_fast_writer_matches_rasterio(tmp_path: Path, bands: int, epsg: int, nodata: float | None,
                                      transform: tuple[float, ...]) -> None:
    rng = np.random.default_rng(bands)
    arr = rng.normal(1000, 300, size=(bands, 37, 41)).astype(np.float32)
    arr[0, 0, :3] = -9999
    desc = [f"band <{i}> & co" for i in range(bands)]
    units = ["Mg/ha", *[f"u<{i}>" if i % 2 else "" for i in range(1, bands)]]  # GDAL band unit types
    fast = tmp_path / "fast.tif"
    ref = tmp_path / "ref.tif"
    write_geotiff(fast, arr, epsg, transform, nodata, desc, units)
    with rasterio.open(ref, "w", driver="GTiff", width=41, height=37, count=bands, dtype="float32",
                       crs=f"EPSG:{epsg}", transform=Affine(*transform), nodata=nodata, interleave="band") as ds:
        ds.write(arr)
        ds.descriptions = tuple(desc)
        ds.units = tuple(units)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # GDAL/rasterio must not warn about the fast file
        with rasterio.open(fast) as a, rasterio.open(ref) as b:
            assert a.profile["interleave"] == b.profile["interleave"] == "band"
            assert a.crs == b.crs and a.crs.to_epsg() == epsg
            assert a.transform == b.transform
            assert a.nodata == b.nodata
            assert a.descriptions == b.descriptions
            assert a.units == b.units and a.units[0] == "Mg/ha"
            assert a.tags(ns="IMAGE_STRUCTURE") .get("COMPRESSION") is None
            np.testing.assert_array_equal(a.read(), arr)
            if nodata is not None:
                assert int(a.read(1, masked=True).mask.sum()) == int((arr[0] == nodata).sum())
    assert fast.read_bytes() == geotiff_bytes(arr, epsg, transform, nodata, desc, units)


@pytest.mark.parametrize(
    ("arr", "transform", "match"),
    [(np.zeros((2, 3), np.float32), (1, 0, 0, 0, -1, 0), "bands, height, width"),
     (np.zeros((1, 2, 3), np.float64), (1, 0, 0, 0, -1, 0), "float32"),
     (np.zeros((1, 2, 3), np.float32), (1, 0.5, 0, 0, -1, 0), "north-up")],
)
def test_fast_writer_rejects(arr: np.ndarray, transform: tuple[float, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        geotiff_bytes(arr, 32610, transform, -9999.0)


def test_export_identical_with_either_writer(tmp_path: Path) -> None:
    g = mgrs_tile_grid("10TEK").clip((520000, 4450000, 520000 + 30 * 100, 4450000 + 30 * 100))
    write_pair(tmp_path / "in", g, compress=None)
    kw = dict(composites=tmp_path / "in", labels=tmp_path / "in", chip_size=32, split_block_m=1000,
              split_buffer_m=100)
    a = run_export(output_dir=tmp_path / "a", **kw)
    b = run_export(output_dir=tmp_path / "b", chip_writer="rasterio", **kw)
    assert a.n_chips == b.n_chips > 0
    for kind in ("images", "labels"):
        for fa in sorted((Path(a.esri_dir) / kind).glob("*.tif")):
            fb = Path(b.esri_dir) / kind / fa.name
            with rasterio.open(fa) as x, rasterio.open(fb) as y:
                assert (x.crs, x.transform, x.nodata, x.descriptions) == (y.crs, y.transform, y.nodata, y.descriptions)
                np.testing.assert_array_equal(x.read(), y.read())
