"""xarray views: the lazy composite (compositing.xr) against the engine's COG; core.xr openers round-trips."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import xarray as xr
from test_composite import world  # noqa: F401 - fixture

from compositing.composite import chunk_windows, composite_tile, group_by_tile
from compositing.contracts import CompositeOptions
from compositing.reader import RasterioReader
from compositing.xr import composite_dataset
from core.grid import Grid, mgrs_tile_grid
from core.xr import RasterLayoutError, open_composite, open_labels, open_map
from labels.rasterize import LabelRaster, write_label_cog

pytestmark = pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")  # rioxarray's affine use
SEASON = {"start": "2021-06-01", "end": "2021-09-30"}
BAND_VARS = ["Blue", "Green", "Red", "NIR_Narrow", "SWIR1", "SWIR2"]


class CountingReader:
    """The real reader, counting pixel reads (headers are not counted)."""

    def __init__(self) -> None:
        self.inner, self.reads = RasterioReader(), 0

    def info(self, href):
        return self.inner.info(href)

    def read(self, href, window, out=None):
        self.reads += 1
        return self.inner.read(href, window, out)


@pytest.fixture(scope="module")
def composite(world, tmp_path_factory):  # noqa: F811
    """The engine's 10TEK COG with every masking option and min_observations=2 (nodata pixels occur)."""
    items = group_by_tile(world["items"])["10TEK"]
    opts = CompositeOptions(mask_snow=True, mask_water=True, mask_high_aerosol=True, min_observations=2,
                            chunk_size=256)
    res = composite_tile(tile="10TEK", items=items, aoi=world["aoi"], season=SEASON, options=opts, threads=2,
                         output_dir=str(tmp_path_factory.mktemp("comp")))
    return {"result": res, "opts": opts, "grid": Grid.from_dict(res.grid)}


def test_lazy_composite_equals_the_written_cog(world, composite, tmp_path):  # noqa: F811
    grid, res = composite["grid"], composite["result"]
    reader = CountingReader()
    ds = composite_dataset(world["items"], grid, options=composite["opts"], reader=reader)
    assert reader.reads == 0  # lazy: only headers were read
    assert list(ds.data_vars) == [*BAND_VARS, "count"]
    keys = [k for k in dict(ds["Red"].data.__dask_graph__()) if str(k).startswith("hls-window-")]
    assert len(keys) == len(chunk_windows(grid, 256)) > 1  # one kernel task per engine window
    assert json.loads(ds.attrs["SCENE_IDS"]) == res.scenes_used and ds.attrs["N_ITEMS_OTHER_TILES"] == "6"
    cog = open_composite(res.path)
    xr.testing.assert_equal(ds.compute(), cog.compute())  # values (NaN = nodata), count, x/y coordinates
    assert reader.reads > 0
    assert ds.rio.crs == cog.rio.crs and ds.rio.crs.to_epsg() == grid.epsg
    assert ds.rio.transform() == cog.rio.transform() == grid.affine
    assert ds["Red"].rio.encoded_nodata == -9999 and ds["count"].dtype == np.uint16
    with rasterio.open(res.path) as src:
        want = src.read()
        r, c = 57, 101
        x, y = src.xy(r, c)
    picked = float(ds["NIR_Narrow"].sel(x=x, y=y, method="nearest"))
    assert picked == want[3, r, c] or (np.isnan(picked) and want[3, r, c] == -9999)
    out = tmp_path / "lazy.tif"
    ds.rio.to_raster(out)
    with rasterio.open(out) as got:
        np.testing.assert_array_equal(got.read(), want)
        assert got.nodata == -9999 and got.transform == grid.affine and got.crs.to_epsg() == grid.epsg
        assert got.descriptions == (*BAND_VARS, "count") and got.scales == (0.0001,) * 6 + (1.0,)


def test_lazy_composite_scale_and_wrong_tile(world, composite):  # noqa: F811
    grid = composite["grid"]
    opts = CompositeOptions(**{**composite["opts"].to_dict(), "chunk_size": 512})
    ds = composite_dataset(world["items"], grid.to_dict(), options=opts, scale=True)
    raw = open_composite(composite["result"].path, chunks=None)
    np.testing.assert_allclose(ds["SWIR1"].values, raw["SWIR1"].values * np.float32(0.0001), rtol=1e-6)
    assert ds["SWIR1"].attrs["units"] == "1" and "scale_factor" not in ds["SWIR1"].attrs
    other = Grid.from_dict({**grid.to_dict(), "tile": "11SKA"})
    with pytest.raises(Exception, match="no item of tile 11SKA"):
        composite_dataset(world["items"], other)


def test_open_composite_masks_nodata_scales_and_keeps_the_grid(composite):
    path, grid = composite["result"].path, composite["grid"]
    with rasterio.open(path) as src:
        raw = src.read()
    ds = open_composite(path)
    assert ds["Blue"].chunks is not None  # Dask-backed by default
    eager = open_composite(path, chunks=None)
    assert isinstance(eager["Blue"].data, np.ndarray)
    for i, name in enumerate(BAND_VARS):
        v = eager[name].values
        np.testing.assert_array_equal(np.isnan(v), raw[i] == -9999)
        np.testing.assert_array_equal(v[~np.isnan(v)], raw[i][raw[i] != -9999])
        assert eager[name].attrs["units"] == "HLS surface reflectance x 10000"
    assert np.isnan(eager["Red"].values).any()
    np.testing.assert_array_equal(eager["count"].values, raw[6].astype(np.uint16))
    scaled = open_composite(path, scale=True, chunks=None)
    np.testing.assert_array_equal(scaled["Red"].values, eager["Red"].values * np.float32(0.0001))
    assert scaled["Red"].attrs["units"] == "1" and scaled["Red"].dtype == np.float32
    assert scaled["count"].attrs["units"] == "observations"
    assert ds.rio.crs.to_epsg() == 32610 and ds.rio.transform() == grid.affine
    assert ds.x.values[0] == grid.transform[2] + 15 and ds.y.values[0] == grid.transform[5] - 15
    assert ds.attrs["MGRS_TILE"] == "10TEK" and ds["Red"].attrs["hls_band"] == "B04"
    assert ds["Red"].attrs["wavelength_um"] == 0.665


@pytest.mark.parametrize("nodata", [-9999.0, -1.0])
def test_open_labels_round_trip(tmp_path, nodata):
    grid = mgrs_tile_grid("10TEK").window_bounds(100, 200, 300, 260)
    rng = np.random.default_rng(1)
    count = (rng.random(grid.shape) < 0.1).astype(np.int32) * rng.integers(1, 4, grid.shape, dtype=np.int32)
    agbd = np.where(count > 0, rng.gamma(2.0, 50.0, grid.shape), nodata).astype(np.float32)
    path = write_label_cog(tmp_path / "labels.tif", LabelRaster(agbd, count, nodata), grid, {"SEASON": "s"})
    ds = open_labels(path)
    np.testing.assert_array_equal(np.isnan(ds["agbd"].values), count == 0)
    np.testing.assert_array_equal(ds["agbd"].values[count > 0], agbd[count > 0])
    np.testing.assert_array_equal(ds["shot_count"].values, count)
    assert ds["shot_count"].dtype == np.int32 and ds["agbd"].attrs["units"] == "Mg/ha"
    assert ds["agbd"].rio.encoded_nodata == nodata and ds.attrs["SEASON"] == "s"
    assert ds.rio.transform() == grid.affine and ds.rio.crs.to_epsg() == grid.epsg
    ds.rio.to_raster(tmp_path / "again.tif")
    with rasterio.open(path) as a, rasterio.open(tmp_path / "again.tif") as b:
        np.testing.assert_array_equal(a.read(), b.read())
        assert b.nodata == nodata and b.descriptions == ("agbd", "shot_count")
    with pytest.raises(RasterLayoutError, match=r"labels.tif is not a composite .*\['agbd', 'shot_count'\]"):
        open_composite(path)


def test_open_map(tmp_path):
    from training.mapping import MAP_NODATA, _write_cog

    grid = mgrs_tile_grid("10TEK").window_bounds(0, 0, 280, 300)
    agb = np.random.default_rng(2).gamma(2.0, 60.0, grid.shape).astype(np.float32)
    agb[:20] = MAP_NODATA
    path = tmp_path / "10TEK_agb.tif"
    _write_cog(path, agb, {"width": grid.width, "height": grid.height, "crs": grid.crs, "transform": grid.affine},
               {"UNITS": "Mg/ha", "MGRS_TILE": "10TEK"})
    ds = open_map(path, chunks=None)
    assert list(ds.data_vars) == ["agb"] and ds["agb"].attrs["units"] == "Mg/ha"
    assert np.isnan(ds["agb"].values[:20]).all() and not np.isnan(ds["agb"].values[20:]).any()
    np.testing.assert_array_equal(ds["agb"].values[20:], agb[20:])
    assert ds.rio.transform() == grid.affine and ds.attrs["MGRS_TILE"] == "10TEK"
    with pytest.raises(FileNotFoundError, match="biomass map .*missing.tif does not exist"):
        open_map(tmp_path / "missing.tif")
