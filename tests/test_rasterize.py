"""Rasterizing shots: pixel assignment at edges, mean/count against an independent loop, COG output."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio

from core.grid import Grid, mgrs_tile_grid
from labels.rasterize import pixel_index, rasterize_mean, rasterize_shots, write_label_cog

GRID = Grid("EPSG:32610", (30.0, 0.0, 600000.0, 0.0, -30.0, 4500000.0), 4, 3, "10TEK")


@pytest.mark.parametrize("x, y, expected", [
    (600000.0, 4500000.0, 0),             # upper-left corner belongs to pixel (0, 0)
    (600029.999, 4499970.001, 0),
    (600030.0, 4500000.0, 1),             # left edge of column 1
    (600000.0, 4499970.0, 4),             # top edge of row 1
    (600119.999, 4499910.001, 11),        # last pixel
    (600120.0, 4499950.0, -1),            # right of the grid
    (600010.0, 4499910.0, -1),            # below the grid (bottom edge is open)
    (599999.999, 4499950.0, -1),
    (np.nan, 4499950.0, -1),
])
def test_pixel_index_edges(x: float, y: float, expected: int) -> None:
    assert pixel_index(np.array([x]), np.array([y]), GRID)[0] == expected


def _loop_mean(x, y, v, grid: Grid, nodata: float) -> tuple[np.ndarray, np.ndarray]:
    """Independent reference: a plain Python loop over shots with float64 sums."""
    a, _, c, _, e, f = grid.transform
    s = np.zeros(grid.shape)
    n = np.zeros(grid.shape, dtype=np.int64)
    for xi, yi, vi in zip(x, y, v, strict=True):
        col, row = int(np.floor((xi - c) / a)), int(np.floor((yi - f) / e))
        if 0 <= row < grid.height and 0 <= col < grid.width:
            s[row, col] += float(vi)
            n[row, col] += 1
    out = np.full(grid.shape, nodata, dtype=np.float32)
    out[n > 0] = (s[n > 0] / n[n > 0]).astype(np.float32)
    return out, n


@pytest.mark.parametrize("nodata", [-9999.0, -1.0])
def test_rasterize_mean_equals_loop(nodata: float) -> None:
    rng = np.random.default_rng(1)
    grid = Grid("EPSG:32610", (30.0, 0.0, 600000.0, 0.0, -30.0, 4500000.0), 50, 40, "10TEK")
    x = rng.uniform(599900, 601600, 3000)
    y = rng.uniform(4498700, 4500100, 3000)
    v = rng.gamma(2.0, 50.0, 3000).astype(np.float32)
    r = rasterize_mean(x, y, v, grid, nodata)
    ref, n = _loop_mean(x, y, v, grid, nodata)
    np.testing.assert_array_equal(r.agbd, ref)
    np.testing.assert_array_equal(r.count, n)
    assert r.agbd.dtype == np.float32 and (r.agbd[n == 0] == nodata).all()
    assert r.n_labelled == int((n > 0).sum()) and not r.all_nodata


def test_two_shots_in_one_pixel_are_averaged() -> None:
    r = rasterize_mean(np.array([600001.0, 600029.0, 600031.0]), np.array([4499999.0, 4499971.0, 4499999.0]),
                       np.array([10.0, 20.0, 7.0], np.float32), GRID)
    assert r.agbd[0, 0] == 15.0 and r.count[0, 0] == 2
    assert r.agbd[0, 1] == 7.0 and r.count[0, 1] == 1
    assert r.n_labelled == 2


def test_no_shots_gives_all_nodata() -> None:
    r = rasterize_mean(np.zeros(0), np.zeros(0), np.zeros(0, np.float32), GRID, -1.0)
    assert r.all_nodata and (r.agbd == -1.0).all() and (r.count == 0).all()


def test_lonlat_projection_lands_in_the_right_tile_pixel() -> None:
    grid = mgrs_tile_grid("10TEK")
    # the centre of pixel (row 100, col 200), expressed in lon/lat
    from pyproj import Transformer

    x, y = grid.affine @ (200.5, 100.5)
    lon, lat = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True).transform(x, y)
    r = rasterize_shots(np.array([lon]), np.array([lat]), np.array([42.0], np.float32), grid)
    assert r.count[100, 200] == 1 and r.agbd[100, 200] == np.float32(42.0) and r.n_labelled == 1


def test_label_cog_bands_tags_and_nodata(tmp_path) -> None:
    r = rasterize_mean(np.array([600001.0]), np.array([4499999.0]), np.array([12.5], np.float32), GRID, -1.0)
    path = write_label_cog(tmp_path / "10TEK" / "2023-06-01_2023-09-30.tif", r, GRID,
                           {"SEASON": "2023-06-01_2023-09-30", "GRANULE_IDS": ["a", "b"]})
    with rasterio.open(path) as ds:
        assert ds.count == 2 and ds.dtypes == ("float32", "float32") and ds.nodata == -1.0
        assert ds.descriptions == ("agbd", "shot_count") and ds.units == ("Mg/ha", "shots")
        assert Grid.from_raster(str(path)) == GRID
        assert ds.read(1)[0, 0] == 12.5 and ds.read(2)[0, 0] == 1 and ds.read(1)[2, 3] == -1.0
        tags = ds.tags()
        assert tags["MGRS_TILE"] == "10TEK" and json.loads(tags["GRANULE_IDS"]) == ["a", "b"]
        assert tags["UNITS"] == "Mg/ha" and tags["N_LABELLED_PIXELS"] == "1"
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left


def test_fast_projection_gives_the_exact_pixels() -> None:
    """project_for_grid (validated polynomial + exact re-projection near pixel edges) lands every shot in
    the pixel pyproj's exact projection gives, also for shots within 1e-7..1e-3 m of a pixel edge."""
    from pyproj import Transformer

    from core.grid import mgrs_tile_grid
    from labels.rasterize import project_for_grid, project_lonlat

    g = mgrs_tile_grid("10TEK")
    rng = np.random.default_rng(3)
    minx, miny, maxx, maxy = g.bounds
    n = 300_000  # above the size where the polynomial path is used
    x = rng.uniform(minx - 2000, maxx + 2000, n)
    y = rng.uniform(miny - 2000, maxy + 2000, n)
    k = n // 3
    x[:k] = g.transform[2] + np.round((x[:k] - g.transform[2]) / 30) * 30 + rng.choice([-1, 1], k) * 10 ** rng.uniform(-7, -3, k)
    y[k:2 * k] = g.transform[5] - np.round((g.transform[5] - y[k:2 * k]) / 30) * 30 + rng.choice([-1, 1], k) * 1e-6
    lon, lat = Transformer.from_crs(g.crs, "EPSG:4326", always_xy=True).transform(x, y)
    ex, ey = project_lonlat(lon, lat, g.crs)
    fx, fy = project_for_grid(lon, lat, g)
    assert np.abs(fx - ex).max() < 1e-3 and np.abs(fy - ey).max() < 1e-3
    assert np.array_equal(pixel_index(fx, fy, g), pixel_index(ex, ey, g))
