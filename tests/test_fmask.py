"""Fmask decoding: a table of single values, and the real Fmask COG of ../shared/realdata."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import rasterio

from compositing.composite import CompositeError, composite_tile
from compositing.contracts import CompositeOptions
from compositing.fmask import FmaskRule, bit_fractions, clear_mask
from core.grid import mgrs_tile_grid
from sampleworld.synthetic.scenes import write_scene

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"
FMASK = REALDATA / "hls" / "HLS.L30.T06WVS.2024120T211159.v2.0.Fmask.tif"
TRUNCATED_B01 = REALDATA / "hls" / "HLS.L30.T19LBJ.2020239T144556.v2.0.B01.tif"

DEFAULT, SNOW, WATER, AEROSOL = FmaskRule(), FmaskRule(mask_snow=True), FmaskRule(mask_water=True), \
    FmaskRule(mask_high_aerosol=True)
CLEAR_CASES = [  # (fmask value, rule, clear?)
    (0, DEFAULT, True),
    (1, DEFAULT, True),  # cirrus bit is reserved/unused: not masked
    (2, DEFAULT, False), (4, DEFAULT, False), (8, DEFAULT, False),  # cloud, adjacent, shadow
    (16, DEFAULT, True), (16, SNOW, False),
    (32, DEFAULT, True), (32, WATER, False), (32, SNOW, True),
    (64, AEROSOL, True), (128, AEROSOL, True), (192, AEROSOL, False), (192, DEFAULT, True),
    (192 | 32, FmaskRule(True, True, True), False),
    (255, DEFAULT, False), (255, FmaskRule(False, False, False), False),  # fill is never clear
    (254, DEFAULT, False),
]


@pytest.mark.parametrize("value,rule,clear", CLEAR_CASES)
def test_clear_mask_table(value, rule, clear):
    assert bool(clear_mask(np.array([value], np.uint8), rule)[0]) is clear


@pytest.mark.parametrize("snow,water,aerosol", [(a, b, c) for a in (False, True) for b in (False, True)
                                                 for c in (False, True)])
def test_clear_mask_bit_operations_equal_the_table(snow, water, aerosol):
    rule = FmaskRule(snow, water, aerosol)
    values = np.arange(256, dtype=np.uint8).reshape(16, 16)
    np.testing.assert_array_equal(clear_mask(values, rule), rule.lookup_table()[values])
    out = np.ones((16, 16), bool)
    assert clear_mask(values, rule, out=out) is out
    np.testing.assert_array_equal(out, rule.lookup_table()[values])


def test_rule_description_and_dtype_check():
    assert FmaskRule(True, True, True).describe() == "1:cloud,2:adjacent,3:shadow,4:snow_ice,5:water,6-7:aerosol_high"
    with pytest.raises(TypeError, match="uint8"):
        clear_mask(np.zeros(3, np.int16))


def test_real_fmask_bit_fractions_match_readme():
    if not FMASK.exists():
        pytest.skip(f"{FMASK} absent")
    with rasterio.open(FMASK) as ds:
        fm = ds.read(1)
        assert ds.nodata == 255 and fm.dtype == np.uint8
    f = bit_fractions(fm)
    # ../shared/realdata/README: of valid pixels ~4.5 % cloud, 3.7 % adjacent, 1.6 % shadow, 6.9 % snow, 1.2 % water
    assert f["cloud"] == pytest.approx(0.045, abs=0.0006)
    assert f["adjacent"] == pytest.approx(0.037, abs=0.0006)
    assert f["shadow"] == pytest.approx(0.016, abs=0.0006)
    assert f["snow_ice"] == pytest.approx(0.069, abs=0.0006)
    assert f["water"] == pytest.approx(0.012, abs=0.0006)
    assert f["valid_pixels"] + f["fill_pixels"] == 3660 * 3660 and f["fill_pixels"] > 0
    clear = clear_mask(fm)
    masked = ((fm >> 1) & 1) | ((fm >> 2) & 1) | ((fm >> 3) & 1)
    assert int(clear.sum()) == int(((fm != 255) & (masked == 0)).sum())


def test_real_truncated_b01_is_skipped_with_reason_or_fails(tmp_path):
    """A scene whose band is the real truncated HLS COG: skipped and recorded, or a clear failure."""
    if not TRUNCATED_B01.exists():
        pytest.skip(f"{TRUNCATED_B01} absent")
    full = mgrs_tile_grid("19LBJ")
    with rasterio.open(TRUNCATED_B01) as ds:  # the real file lies on the computed tile grid (south: negative y)
        assert tuple(ds.transform)[:6] == full.transform and ds.crs.to_epsg() is None
    aoi = [-71.40, -10.30, -71.35, -10.25]  # inside the window below (x 236-244 km, y -1141..-1133 km)
    win = full.clip((230_000, -1_152_000, 250_000, -1_130_000))
    rng = np.random.default_rng(0)
    good = write_scene(tmp_path / "hls", "HLS.L30.T19LBJ.2020231T144556.v2.0", win,
                       {b: rng.integers(0, 5000, win.shape).astype(np.int16)
                        for b in ("B02", "B03", "B04", "B05", "B06", "B07")},
                       np.zeros(win.shape, np.uint8), "2020-08-18T14:45:56Z", 1.0)
    bad = write_scene(tmp_path / "hls", "HLS.L30.T19LBJ.2020239T144556.v2.0", full, {},
                      np.zeros(full.shape, np.uint8), "2020-08-26T14:45:56Z", 2.0)
    for b in ("B02", "B03", "B04", "B05", "B06", "B07"):
        bad["assets"][b] = {"href": str(TRUNCATED_B01), "roles": ["data"]}
    season = {"start": "2019-12-01", "end": "2020-09-30"}
    t = composite_tile(tile="19LBJ", items=[good, bad], aoi=aoi, season=season, output_dir=str(tmp_path / "o"),
                       threads=2)
    assert t.scenes_used == [good["id"]]
    (skip,) = t.scenes_skipped
    assert skip["id"] == bad["id"] and skip["asset"] == "B02"
    assert re.search(r"^cannot read window rows \d+:\d+ cols \d+:\d+: .*(Decoding error|TIFFRead)", skip["reason"])
    assert json.loads(Path(t.sidecar).read_text())["scenes_skipped"] == [skip]
    with pytest.raises(CompositeError, match=rf"tile 19LBJ: .*{TRUNCATED_B01.name}.*on_read_error='fail'"):
        composite_tile(tile="19LBJ", items=[good, bad], aoi=aoi, season=season, output_dir=str(tmp_path / "f"),
                       options=CompositeOptions(on_read_error="fail"), threads=2)
