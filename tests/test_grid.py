"""Grid / MGRS tiling: table tests against real HLS tile origins."""

from __future__ import annotations

import pytest
import rasterio

from core.grid import (
    Grid,
    GridError,
    epsg_of,
    mgrs_square_origin,
    mgrs_tile_grid,
    northing_offset,
    tile_of_item_id,
)


@pytest.mark.parametrize(
    ("tile", "epsg", "ulx", "uly"),
    [
        ("06WVS", 32606, 399960.0, 7200000.0),  # real Fmask in ../shared/realdata (ULX/ULY tags)
        ("19LBJ", 32619, 199980.0, -1099980.0),  # real southern B01: northern zone, negative northing
        ("10TEK", 32610, 499980.0, 4500000.0),
        ("T10TFK", 32610, 600000.0, 4500000.0),
        ("31TCJ", 32631, 300000.0, 4900020.0),  # Toulouse tile: north edge rounded up to 60 m
    ],
)
def test_mgrs_tile_grid_origins(tile: str, epsg: int, ulx: float, uly: float) -> None:
    g = mgrs_tile_grid(tile)
    assert g.crs == f"EPSG:{epsg}"
    assert g.transform == (30.0, 0.0, ulx, 0.0, -30.0, uly)
    assert g.shape == (3660, 3660)


def test_real_files_match_tile_grid(realdata) -> None:
    for name, tile in [("HLS.L30.T06WVS.2024120T211159.v2.0.Fmask.tif", "06WVS"),
                       ("HLS.L30.T19LBJ.2020239T144556.v2.0.B01.tif", "19LBJ")]:
        path = realdata / "hls" / name
        g = Grid.from_raster(str(path))
        assert g.transform == mgrs_tile_grid(tile).transform
        assert g.crs == mgrs_tile_grid(tile).crs  # incl. the authority-less "UTM Zone 19" WKT
        with rasterio.open(path) as ds:
            assert ds.tags()["ULX"] == f"{g.transform[2]:.0f}"


def test_epsg_of_authorityless_wkt(realdata) -> None:
    with rasterio.open(realdata / "hls" / "HLS.L30.T19LBJ.2020239T144556.v2.0.B01.tif") as ds:
        assert ds.crs.to_epsg() is None
        assert epsg_of(ds.crs) == 32619


def test_same_zone_tiles_share_lattice() -> None:
    a, b = mgrs_tile_grid("10TEK"), mgrs_tile_grid("10TFK")
    overlap = (600000.0, 4400000.0, 609780.0, 4500000.0)
    ca, cb = a.clip(overlap), b.clip(overlap)
    assert ca.transform == cb.transform and ca.shape == cb.shape == (3334, 326)


@pytest.mark.parametrize(
    ("bounds", "shape", "origin"),
    [
        ((500000.0, 4490000.0, 500100.0, 4499990.0), (334, 4), (499980.0, 4500000.0)),  # snapped outwards
        ((499000.0, 4300000.0, 700000.0, 4600000.0), (3660, 3660), (499980.0, 4500000.0)),  # clipped to tile
    ],
)
def test_clip_snaps_outwards(bounds, shape, origin) -> None:
    g = mgrs_tile_grid("10TEK").clip(bounds)
    assert g.shape == shape
    assert (g.transform[2], g.transform[5]) == origin


def test_clip_outside_raises() -> None:
    with pytest.raises(GridError, match="do not intersect"):
        mgrs_tile_grid("10TEK").clip((0.0, 0.0, 10.0, 10.0))


def test_roundtrip_and_offsets() -> None:
    g = mgrs_tile_grid("10TEK")
    sub = g.window_bounds(10, 20, 5, 6)
    assert Grid.from_dict(sub.to_dict()) == sub
    assert sub.offset_in(g) == (10, 20)
    with pytest.raises(GridError):
        mgrs_tile_grid("11TEK").offset_in(g)


@pytest.mark.parametrize("bad", ["10TIK", "61TEK", "XYZ", "10TEW"])
def test_bad_tile_ids(bad: str) -> None:
    with pytest.raises(GridError):
        mgrs_square_origin(bad)


def test_tile_of_item_id() -> None:
    assert tile_of_item_id("HLS.L30.T10TEK.2021128T184447.v2.0") == "10TEK"
    assert tile_of_item_id("HLS.L30.T19LBJ.2020239T144556.v2.0.B01.tif") == "19LBJ"
    with pytest.raises(GridError):
        tile_of_item_id("GEDI04_A_2019117051430_O02102_01_T04603_02_002_02_V002.h5")


@pytest.mark.parametrize(("crs", "expected"), [
    ("hls-north:32619", 32619), ("hls-south:32619", 32719), ("EPSG:32719", 32719), ("EPSG:9265", 9265),
    ("EPSG:26910", 26910), ("EPSG:32606", 32606),
])
def test_epsg_of_utm_north_and_south(crs: str, expected: int) -> None:
    """HLS-style authority-less WKTs of both hemispheres; PROJ alone ties the southern one with POSGAR 2007."""
    from sampleworld.synthetic.scenes import hls_wkt

    kind, _, code = crs.partition(":")
    wkt = hls_wkt(int(code)) if kind.startswith("hls") else crs
    if kind == "hls-south":
        wkt = wkt.replace("Northern", "Southern").replace('"false_northing",0', '"false_northing",10000000')
    assert epsg_of(wkt) == expected


@pytest.mark.parametrize(("file_epsg", "grid_epsg", "offset"), [
    (32619, 32619, 0.0), (32719, 32619, -10_000_000.0), (32718, 32619, None), (32611, 32610, None),
    (None, 32610, None), (32619, 32719, None),
])
def test_northing_offset(file_epsg: int | None, grid_epsg: int, offset: float | None) -> None:
    assert northing_offset(file_epsg, grid_epsg) == offset
