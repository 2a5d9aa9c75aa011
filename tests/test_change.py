"""Biomass change between two years' maps (training.change): difference raster, table, area totals."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from core.constants import IMAGE_NODATA
from training.change import ChangeError, ChangeOptions, ChangeResult, compute_change

CRS = "EPSG:32610"


def _map(path: Path, data: np.ndarray, x0: float = 500_000.0, y0: float = 4_400_000.0) -> str:
    with rasterio.open(path, "w", driver="GTiff", count=1, dtype="float32", width=data.shape[1],
                       height=data.shape[0], crs=CRS, transform=from_origin(x0, y0, 30, 30),
                       nodata=IMAGE_NODATA) as ds:
        ds.write(data.astype(np.float32)[None])
    return str(path)


def test_one_tile_difference_raster_and_totals(tmp_path: Path) -> None:
    a = np.full((4, 5), 100.0)
    b = a.copy()
    b[0, :] = 20.0            # 5 px lost 80 Mg/ha
    b[1, 0] = 170.0           # 1 px gained 70
    a[3, 4] = IMAGE_NODATA    # nodata in the first year
    b[3, 3] = IMAGE_NODATA    # nodata in the second year
    res = compute_change(maps_from={"10TEK": _map(tmp_path / "a.tif", a)},
                         maps_to={"10TEK": _map(tmp_path / "b.tif", b)}, year_from=2022, year_to=2023,
                         output_dir=str(tmp_path / "change"), options=ChangeOptions(loss_threshold=50.0))
    st = res.tiles["10TEK"]
    assert (st.n_area, st.n_valid, st.n_nodata_from, st.n_nodata_to) == (20, 18, 1, 1)
    assert (st.n_loss, st.n_gain) == (5, 1)
    assert st.mean_from == pytest.approx(100.0)
    assert st.total_change_mg == pytest.approx((-80 * 5 + 70) * 0.09)
    assert st.mean_change == pytest.approx((-80 * 5 + 70) / 18, abs=1e-3)
    assert st.area_valid_ha == pytest.approx(18 * 0.09)
    assert res.area == st
    with rasterio.open(res.rasters["10TEK"]) as ds:
        d = ds.read(1)
        assert ds.nodata == IMAGE_NODATA and ds.descriptions == ("agb_change",)
        assert ds.tags()["YEAR_FROM"] == "2022" and ds.tags(1)["UNITS"] == "Mg/ha"
        assert ds.profile["blockxsize"] == 256 or ds.width < 256
    assert d[0, 0] == pytest.approx(-80) and d[1, 0] == pytest.approx(70) and d[2, 2] == 0
    assert d[3, 4] == IMAGE_NODATA and d[3, 3] == IMAGE_NODATA
    rows = list(csv.DictReader(Path(res.table_csv).open()))
    assert [r["tile"] for r in rows] == ["10TEK", "area"] and rows[1]["n_valid"] == "18"
    assert ChangeResult.from_dict(json.loads(Path(res.table_json).read_text())) == res


def test_overlapping_tiles_count_a_ground_pixel_once_in_the_area_row(tmp_path: Path) -> None:
    # 10TEK's tile reaches 9.8 km into 10TFK's square: 10TEK's map has 2 columns west and 2 east of the
    # square edge (on the zone's 30 m lattice), 10TFK's map the same 2 east columns and 2 more.
    # One rule (core.grid.owned_mask): the overlap counts for 10TFK, whose square holds it.
    from core.grid import mgrs_square_origin

    e0, n0 = mgrs_square_origin("10TFK")
    y0 = n0 + 3000.0
    a1, a2 = np.full((3, 4), 50.0), np.full((3, 4), 50.0)
    b1, b2 = np.full((3, 4), 60.0), np.full((3, 4), 60.0)
    b1[:, 2:] = 80.0  # 10TEK's map disagrees in the overlap: the area row takes 10TFK's values there
    res = compute_change(
        maps_from={"10TEK": _map(tmp_path / "a1.tif", a1, x0=e0 - 60, y0=y0),
                   "10TFK": _map(tmp_path / "a2.tif", a2, x0=e0, y0=y0)},
        maps_to={"10TEK": _map(tmp_path / "b1.tif", b1, x0=e0 - 60, y0=y0),
                 "10TFK": _map(tmp_path / "b2.tif", b2, x0=e0, y0=y0)},
        year_from=2024, year_to=2025, output_dir=str(tmp_path / "c"))
    assert res.tiles["10TEK"].n_valid == 12 and res.tiles["10TFK"].n_valid == 12
    assert res.area.n_valid == 18  # 3 x 6 distinct ground pixels
    assert res.area.total_change_mg == pytest.approx(18 * 10 * 0.09)
    # 10TFK not mapped in the later year: only 10TEK is compared, and it keeps every pixel it covers
    only = compute_change(maps_from={"10TEK": str(tmp_path / "a1.tif"), "10TFK": str(tmp_path / "a2.tif")},
                          maps_to={"10TEK": str(tmp_path / "b1.tif")}, year_from=2024, year_to=2025,
                          output_dir=str(tmp_path / "d"))
    assert only.area.n_valid == 12 and only.area.total_change_mg == pytest.approx((6 * 10 + 6 * 30) * 0.09)


def test_area_mask_limits_the_statistics(tmp_path: Path) -> None:
    from pyproj import Transformer

    a, b = np.full((10, 10), 100.0), np.full((10, 10), 90.0)
    to_ll = Transformer.from_crs(CRS, 4326, always_xy=True)
    # the west half of the raster (5 columns), as a lon/lat box
    lon0, lat0 = to_ll.transform(500_000.0 + 1, 4_400_000.0 - 300 + 1)
    lon1, lat1 = to_ll.transform(500_000.0 + 150 - 1, 4_400_000.0 - 1)
    res = compute_change(maps_from={"T": _map(tmp_path / "a.tif", a)}, maps_to={"T": _map(tmp_path / "b.tif", b)},
                         year_from=2022, year_to=2024, aoi=[lon0, lat0, lon1, lat1], output_dir=str(tmp_path))
    assert 40 <= res.area.n_area <= 60 and res.area.n_valid == res.area.n_area
    with rasterio.open(res.rasters["T"]) as ds:
        assert (ds.read(1)[:, 8:] == IMAGE_NODATA).all()


def test_maps_on_different_grids_are_an_error(tmp_path: Path) -> None:
    a, b = np.full((3, 3), 1.0), np.full((3, 4), 1.0)
    with pytest.raises(ChangeError, match="not on the grid"):
        compute_change(maps_from={"T": _map(tmp_path / "a.tif", a)}, maps_to={"T": _map(tmp_path / "b.tif", b)},
                       year_from=2022, year_to=2023, output_dir=str(tmp_path))
    with pytest.raises(ChangeError, match="no tile mapped in both"):
        compute_change(maps_from={"T": str(tmp_path / "a.tif")}, maps_to={"U": str(tmp_path / "b.tif")},
                       year_from=2022, year_to=2023, output_dir=str(tmp_path))
