"""core.grid.owned_mask: the one rule for overlapping MGRS tiles, used by area totals and the change table.

Geometry is real: 10TEK and 10TFK (one zone, 10TEK's tile reaching 9.8 km into 10TFK's square and into
10SEJ's to the south), 10SGH and 11SKC across the zone edge at 120 W, and 10SEK / 10TEK (two ids of one
100 km square at a latitude band edge).
"""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine
from pyproj import Transformer

from core.grid import mgrs_square_origin, mgrs_tile_grid, owned_mask

E0F, N0 = mgrs_square_origin("10TFK")  # 600000, 4400000: 10TEK's square ends here to the east, 10SEJ's below
# a 4 x 4 raster on the zone's 30 m lattice over the SE corner of 10TEK's square: rows 0-1 / cols 0-1 in
# 10TEK's square, cols 2-3 in 10TFK's, rows 2-3 in 10SEJ's / 10SFJ's (not mapped)
CORNER = Affine(30, 0, E0F - 60, 0, -30, N0 + 60)
T, F = True, False


@pytest.mark.parametrize(("tile", "tiles", "expected"), [
    # the only tile: every pixel it covers
    ("10TEK", ["10TEK"], [[T] * 4] * 4),
    # 10TFK mapped too: its square's pixels are its; 10SEJ/10SFJ unmapped: their pixels go to the first
    # mapped tile (name order) whose 109.8 km tile covers them -> 10TEK (10TFK covers cols 2-3 only)
    ("10TEK", ["10TEK", "10TFK"], [[T, T, F, F], [T, T, F, F], [T] * 4, [T] * 4]),
    # the same pixels seen from 10TFK's raster: its square only (10TEK came first for the orphans)
    ("10TFK", ["10TEK", "10TFK"], [[F, F, T, T], [F, F, T, T], [F] * 4, [F] * 4]),
    # 10SEJ mapped as well: the rows of its square are its own, and 10SFJ's (unmapped) go to 10SEJ, the
    # first in name order of the three tiles covering them
    ("10TEK", ["10TEK", "10TFK", "10SEJ"], [[T, T, F, F], [T, T, F, F], [F] * 4, [F] * 4]),
    ("10SEJ", ["10TEK", "10TFK", "10SEJ"], [[F] * 4, [F] * 4, [T] * 4, [T] * 4]),
    # two ids of one square (latitude band edge): the first in name order owns it and the orphans
    ("10TEK", ["10SEK", "10TEK"], [[F] * 4] * 4),
    ("10SEK", ["10SEK", "10TEK"], [[T, T, T, T], [T, T, T, T], [T, T, T, T], [T, T, T, T]]),
])
def test_one_zone(tile, tiles, expected):
    got = owned_mask(CORNER, (4, 4), "EPSG:32610", tile, tiles)
    assert got.tolist() == expected


def test_each_ground_pixel_counts_once_over_tiles_of_one_zone():
    # 10TEK's raster over the corner and 10TFK's raster over the same ground east of 600000 (its tile starts
    # there): the owned pixels of both cover the 4 x 4 ground pixels exactly once
    ek = owned_mask(CORNER, (4, 4), "EPSG:32610", "10TEK", ["10TEK", "10TFK"])
    fk = owned_mask(Affine(30, 0, E0F, 0, -30, N0 + 60), (4, 2), "EPSG:32610", "10TFK", ["10TEK", "10TFK"])
    assert ek.sum() + fk.sum() == 16 and not (ek[:, 2:] & fk).any()


def _lons(transform: Affine, shape: tuple[int, int], crs: str) -> np.ndarray:
    h, w = shape
    xs, ys = np.meshgrid(transform.c + 30 * (np.arange(w) + 0.5), transform.f - 30 * (np.arange(h) + 0.5))
    return np.asarray(Transformer.from_crs(crs, 4326, always_xy=True).transform(xs, ys)[0])


def test_across_the_zone_edge():
    """10SGH (zone 10) reaches east of 120 W, 11SKC (zone 11) west of it: each owns its zone's side."""
    to10 = Transformer.from_crs(4326, 32610, always_xy=True)
    to11 = Transformer.from_crs(4326, 32611, always_xy=True)
    x10, y10 = to10.transform(-120.0, 38.0)
    x11, y11 = to11.transform(-120.0, 38.0)
    g10, g11 = mgrs_tile_grid("10SGH"), mgrs_tile_grid("11SKC")
    # 40 x 40 pixels centred on the edge, on each tile's lattice
    t10 = Affine(30, 0, g10.affine.c + 30 * round((x10 - 600 - g10.affine.c) / 30), 0, -30,
                 g10.affine.f - 30 * round((g10.affine.f - y10 - 600) / 30))
    t11 = Affine(30, 0, g11.affine.c + 30 * round((x11 - 600 - g11.affine.c) / 30), 0, -30,
                 g11.affine.f - 30 * round((g11.affine.f - y11 - 600) / 30))
    both = ["10SGH", "11SKC"]
    m10 = owned_mask(t10, (40, 40), "EPSG:32610", "10SGH", both)
    m11 = owned_mask(t11, (40, 40), "EPSG:32611", "11SKC", both)
    lon10, lon11 = _lons(t10, (40, 40), "EPSG:32610"), _lons(t11, (40, 40), "EPSG:32611")
    assert 0 < m10.sum() < 1600 and 0 < m11.sum() < 1600
    assert (m10 == (lon10 < -120.0)).all() and (m11 == (lon11 >= -120.0)).all()
    # one tile mapped: it keeps the other zone's side (no one else covers it)
    assert owned_mask(t10, (40, 40), "EPSG:32610", "10SGH", ["10SGH"]).all()


def test_not_an_mgrs_tile_counts_every_pixel():
    assert owned_mask(CORNER, (4, 4), "EPSG:32610", "truth", ["truth", "10TEK"]) is None
