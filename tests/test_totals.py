"""Area totals and change with intervals, against a hand computation on a 4 x 4 map; overlapping MGRS tiles
counted once; AOI limit; the CSV table."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from core.grid import mgrs_square_origin
from training.totals import TotalsError, TotalsOptions, area_totals, total_change, totals_table
from training.uncertainty import BinCalibration, Calibration

ND = -9999.0
Z90 = 1.6448536269514722  # standard normal 95th percentile
MAP1 = [[50, 50, 150, 150], [50, ND, 150, 150], [80, 80, 200, 200], [80, 80, 200, ND]]
MAP2 = [[150, 150, 150, 150], [150, ND, 150, 150], [80, 80, 200, 200], [80, 80, 200, ND]]


def _calibration(path: Path, m1: float = 10.0) -> str:
    """Two bins split at 100 Mg/ha: below m=-5 sd=10 se=2; above m=m1 sd=30 se=4."""
    Calibration(level=0.9, split="val", n_pixels=400, n_clusters=20, bins=[
        BinCalibration(lo=None, hi=100.0, n=200, n_clusters=10, lower_offset=-20.0, upper_offset=20.0,
                       residual_mean=-5.0, residual_sd=10.0, mean_se=2.0),
        BinCalibration(lo=100.0, hi=None, n=200, n_clusters=10, lower_offset=-50.0, upper_offset=60.0,
                       residual_mean=m1, residual_sd=30.0, mean_se=4.0)]).write(path)
    return str(path)


def _map(path: Path, values: list[list[float]], *, x0: float = 500000.0, y0: float = 4400000.0,
         tile: str = "") -> str:
    arr = np.asarray(values, np.float32)
    with rasterio.open(path, "w", driver="GTiff", width=arr.shape[1], height=arr.shape[0], count=1,
                       dtype="float32", crs="EPSG:32610", transform=Affine(30, 0, x0, 0, -30, y0), nodata=ND) as ds:
        ds.write(arr, 1)
        if tile:
            ds.update_tags(MGRS_TILE=tile)
    return str(path)


def test_totals_equal_the_hand_computation(tmp_path):
    cal = _calibration(tmp_path / "cal.json")
    t = area_totals(maps=[_map(tmp_path / "m1.tif", MAP1)], calibration=cal, year=2023,
                    options=TotalsOptions(block_m=60.0))  # 2 x 2 pixel blocks
    a = 0.09  # ha per 30 m pixel
    # 14 valid pixels: 7 below 100 Mg/ha (bin 0), 7 above (bin 1)
    map_sum = a * (50 * 3 + 150 * 4 + 80 * 4 + 200 * 3)
    bias = a * (7 * -5.0 + 7 * 10.0)
    # blocks: TL 3 px x sd 10, TR 4 x 30, BL 4 x 10, BR 3 x 30
    v_random = a**2 * (30**2 + 120**2 + 40**2 + 90**2)
    sd_sys = a * (7 * 2.0 + 7 * 4.0)
    sd = math.sqrt(v_random + sd_sys**2)
    assert t.pixels == 14 and t.pixels_per_bin == [7, 7] and t.area_ha == pytest.approx(14 * a)
    assert t.map_sum_mg == pytest.approx(map_sum) and t.bias_adjustment_mg == pytest.approx(bias)
    assert t.agb_mg.value == pytest.approx(150.3 + 3.15)
    assert t.sd_random_mg == pytest.approx(math.sqrt(202.5)) and t.sd_systematic_mg == pytest.approx(3.78)
    assert t.agb_mg.sd == pytest.approx(sd)
    assert (t.agb_mg.lower, t.agb_mg.upper) == (pytest.approx(153.45 - Z90 * sd), pytest.approx(153.45 + Z90 * sd))
    assert t.carbon_mg.value == pytest.approx(0.47 * 153.45) and t.carbon_mg.sd == pytest.approx(0.47 * sd)
    assert t.co2e_mg.value == pytest.approx(44 / 12 * 0.47 * 153.45)
    assert t.sd_bounds["independent_pixels"] == pytest.approx(math.sqrt(a**2 * (3 * 100 + 4 * 900 + 4 * 100
                                                                                 + 3 * 900) + 3.78**2))
    assert t.sd_bounds["fully_correlated"] == pytest.approx(a * (30 + 120 + 40 + 90) + 3.78)
    assert t.sd_bounds["independent_pixels"] < t.agb_mg.sd < t.sd_bounds["fully_correlated"]
    assert t.mean_agb_mg_ha == pytest.approx(153.45 / (14 * a))


def test_change_equals_the_hand_computation(tmp_path):
    cal = _calibration(tmp_path / "cal.json")
    opts = TotalsOptions(block_m=60.0)
    t1 = area_totals(maps=[_map(tmp_path / "m1.tif", MAP1)], calibration=cal, year=2023, options=opts)
    t2 = area_totals(maps=[_map(tmp_path / "m2.tif", MAP2)], calibration=cal, year=2024, options=opts)
    # year 2: the top-left block's three pixels moved to bin 1: N = (4, 10)
    assert t2.pixels_per_bin == [4, 10]
    assert t2.agb_mg.value == pytest.approx(0.09 * 1970 + 0.09 * (4 * -5 + 10 * 10))  # 177.3 + 7.2
    v2 = 0.09**2 * (90**2 + 120**2 + 40**2 + 90**2)
    c = total_change(t1, t2)
    sd_sys = 0.09 * abs((4 - 7) * 2.0 + (10 - 7) * 4.0)  # the shared bin biases cancel where counts do not change
    sd = math.sqrt(202.5 + v2 + sd_sys**2)
    assert c.same_calibration and (c.from_year, c.to_year) == ("2023", "2024")
    assert c.agb_mg.value == pytest.approx(184.5 - 153.45) and c.sd_systematic_mg == pytest.approx(0.54)
    assert c.agb_mg.sd == pytest.approx(sd)
    assert c.agb_mg.lower == pytest.approx(31.05 - Z90 * sd) and c.agb_mg.upper == pytest.approx(31.05 + Z90 * sd)
    assert c.carbon_mg.value == pytest.approx(0.47 * 31.05)
    other = area_totals(maps=[_map(tmp_path / "m2b.tif", MAP2)], calibration=_calibration(tmp_path / "c2.json", 12.0),
                        year=2024, options=opts)
    c2 = total_change(t1, other)  # different calibrations: independent systematic parts add
    assert not c2.same_calibration
    assert c2.sd_systematic_mg == pytest.approx(math.hypot(t1.sd_systematic_mg, other.sd_systematic_mg))


def test_without_bias_correction_and_with_other_carbon_fraction(tmp_path):
    cal = _calibration(tmp_path / "cal.json")
    t = area_totals(maps=[_map(tmp_path / "m1.tif", MAP1)], calibration=cal, year="2023",
                    options=TotalsOptions(block_m=60.0, bias_correction=False, carbon_fraction=0.5, level=0.95))
    assert t.bias_adjustment_mg == 0.0 and t.agb_mg.value == pytest.approx(150.3)
    assert t.carbon_mg.value == pytest.approx(75.15)
    assert t.agb_mg.upper - t.agb_mg.value == pytest.approx(1.959964 * t.agb_mg.sd, rel=1e-5)


def test_overlapping_mgrs_tiles_are_counted_once(tmp_path):
    """10TEK reaches 9.8 km into 10TFK's square: a pixel there is counted by 10TFK only."""
    cal = _calibration(tmp_path / "cal.json")
    e0, n0 = mgrs_square_origin("10TFK")
    x0, y0 = e0 - 30 * 10, n0 + 30 * 100
    vals = np.arange(20 * 6, dtype=np.float32).reshape(6, 20) + 1
    ek = _map(tmp_path / "ek.tif", vals.tolist(), x0=x0, y0=y0, tile="10TEK")
    fk = _map(tmp_path / "fk.tif", vals.tolist(), x0=x0, y0=y0, tile="10TFK")
    both = area_totals(maps=[ek, fk], calibration=cal, year=2023)
    assert both.pixels == 120 and both.map_sum_mg == pytest.approx(0.09 * vals.sum())
    # 10TEK alone: 10TFK was not mapped, so 10TEK keeps every pixel it covers (core.grid.owned_mask)
    only_ek = area_totals(maps=[ek], calibration=cal, year=2023)
    assert only_ek.pixels == 120 and only_ek.map_sum_mg == pytest.approx(0.09 * vals.sum())


def test_aoi_limits_the_total(tmp_path):
    cal = _calibration(tmp_path / "cal.json")
    path = _map(tmp_path / "m.tif", [[10.0] * 8] * 4)
    from pyproj import Transformer

    to_ll = Transformer.from_crs("EPSG:32610", "EPSG:4326", always_xy=True)
    (lon0, lon1), (lat0, lat1) = to_ll.transform([500000.0 - 1, 500000.0 + 30 * 4], [4400000.0 - 30 * 4 - 1,
                                                                                      4400000.0 + 1])
    t = area_totals(maps=[path], calibration=cal, year=2023, aoi=[lon0, lat0, lon1, lat1])
    assert t.pixels == 16  # the western half: 4 x 4 pixel centres inside the box


def test_errors_are_named(tmp_path):
    cal = _calibration(tmp_path / "cal.json")
    with pytest.raises(TotalsError, match="no map"):
        area_totals(maps=[], calibration=cal, year=2023)
    geo = tmp_path / "geo.tif"
    with rasterio.open(geo, "w", driver="GTiff", width=2, height=2, count=1, dtype="float32", crs="EPSG:4326",
                       transform=Affine(0.001, 0, 10, 0, -0.001, 50), nodata=ND) as ds:
        ds.write(np.ones((1, 2, 2), np.float32))
    with pytest.raises(TotalsError, match="geo.tif"):
        area_totals(maps=[str(geo)], calibration=cal, year=2023)
    with pytest.raises(TotalsError, match="carbon_fraction"):
        TotalsOptions(carbon_fraction=1.5)


def test_totals_table(tmp_path):
    cal = _calibration(tmp_path / "cal.json")
    t1 = area_totals(maps=[_map(tmp_path / "m1.tif", MAP1)], calibration=cal, year=2023)
    t2 = area_totals(maps=[_map(tmp_path / "m2.tif", MAP2)], calibration=cal, year=2024)
    path = totals_table([t1, t2], [total_change(t1, t2)], tmp_path / "totals.csv")
    lines = Path(path).read_text().splitlines()
    assert lines[0].startswith("kind,year,from_year,to_year,quantity,value_mg") and len(lines) == 1 + 6 + 3
    assert lines[1].split(",")[:5] == ["total", "2023", "", "", "agb"]
    assert float(lines[1].split(",")[5]) == pytest.approx(t1.agb_mg.value, rel=1e-5)
    assert lines[-1].split(",")[:5] == ["change", "", "2023", "2024", "co2e"]
