"""The one grid value shared by composites, labels and chips.

A :class:`Grid` is a CRS, an affine transform and a shape. Compositing produces it (one per MGRS tile,
on that tile's real 30 m HLS grid, clipped to the area and snapped to the tile's pixel edges); labels and
chips consume it. It round-trips through JSON (``to_dict``/``from_dict``) and through any raster written
on it (``from_raster``), so tasks pass paths, never arrays.

MGRS / Sentinel-2 tiling (HLS uses it): a tile is the 100 km MGRS square of its id, extended to
109.8 km; the upper-left corner is the square's west easting rounded down to a multiple of 60 m and its
north edge (south edge + 100 km) rounded up to a multiple of 60 m. Checked against the real tiles
T06WVS (../shared/realdata) and T10TEK. Southern-hemisphere L30 tiles are written in the northern UTM zone
(EPSG:326NN) with negative northings, as HLS does.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from affine import Affine

TILE_SIZE_M = 109_800.0
HLS_RESOLUTION_M = 30.0
HLS_TILE_PIXELS = 3660

_MGRS_RE = re.compile(r"^T?(\d{1,2})([C-HJ-NP-X])([A-HJ-NP-Z])([A-HJ-NP-V])$")
_COL_SETS = ("ABCDEFGH", "JKLMNPQR", "STUVWXYZ")
_ROW_LETTERS = "ABCDEFGHJKLMNPQRSTUV"
# Minimum northing (m, northern-hemisphere false origin; south with 10,000 km false northing) of each
# latitude band, as in NGA GeoTrans; resolves the 2,000 km ambiguity of the row letter.
_BAND_MIN_NORTHING = {
    "C": 1_100_000, "D": 2_000_000, "E": 2_800_000, "F": 3_700_000, "G": 4_600_000, "H": 5_500_000,
    "J": 6_400_000, "K": 7_300_000, "L": 8_200_000, "M": 9_100_000, "N": 0, "P": 800_000,
    "Q": 1_700_000, "R": 2_600_000, "S": 3_500_000, "T": 4_400_000, "U": 5_300_000, "V": 6_200_000,
    "W": 7_000_000, "X": 7_900_000,
}


class GridError(ValueError):
    """A grid or MGRS tile id that cannot be interpreted."""


@dataclass(frozen=True)
class Grid:
    """A north-up pixel grid.

    ``crs`` is an ``EPSG:NNNNN`` string; ``transform`` the 6 GDAL/affine coefficients
    ``(a, b, c, d, e, f)`` (pixel size ``a`` and ``e`` in metres, ``c``/``f`` the upper-left corner);
    ``width``/``height`` in pixels. ``tile`` is the MGRS tile id the grid belongs to (may be empty).
    """

    crs: str
    transform: tuple[float, float, float, float, float, float]
    width: int
    height: int
    tile: str = ""

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise GridError(f"grid shape must be positive, got {self.height} x {self.width}")
        if len(self.transform) != 6:
            raise GridError(f"transform needs 6 coefficients, got {self.transform!r}")
        object.__setattr__(self, "transform", tuple(float(v) for v in self.transform))

    @property
    def affine(self) -> Affine:
        return Affine(*self.transform)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def resolution(self) -> float:
        return abs(self.transform[0])

    @property
    def epsg(self) -> int:
        return int(self.crs.split(":")[1])

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(minx, miny, maxx, maxy) in the grid CRS, metres."""
        a, _, c, _, e, f = self.transform
        x0, x1 = c, c + a * self.width
        y0, y1 = f, f + e * self.height
        return (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))

    def to_dict(self) -> dict[str, Any]:
        return {"crs": self.crs, "transform": list(self.transform), "width": self.width,
                "height": self.height, "tile": self.tile}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Grid:
        return cls(crs=d["crs"], transform=tuple(d["transform"]), width=int(d["width"]),
                   height=int(d["height"]), tile=d.get("tile", ""))

    @classmethod
    def from_raster(cls, path: str, tile: str = "") -> Grid:
        """The grid of an existing raster (its CRS must have an EPSG equivalent)."""
        import rasterio

        with rasterio.open(path) as ds:
            epsg = epsg_of(ds.crs)
            if epsg is None:
                raise GridError(f"{path}: CRS has no EPSG equivalent: {ds.crs.to_wkt()[:120]}")
            tag_tile = ds.tags().get("MGRS_TILE", "")
            return cls(crs=f"EPSG:{epsg}", transform=tuple(ds.transform)[:6], width=ds.width,
                       height=ds.height, tile=tile or tag_tile)

    def window_bounds(self, row_off: int, col_off: int, height: int, width: int) -> Grid:
        """The sub-grid of a pixel window (rows/cols relative to this grid)."""
        a, b, c, d, e, f = self.transform
        return Grid(self.crs, (a, b, c + a * col_off, d, e, f + e * row_off), width, height, self.tile)

    def offset_in(self, outer: Grid) -> tuple[int, int]:
        """(row, col) of this grid's upper-left pixel inside ``outer``; both must share pixel edges."""
        if self.crs != outer.crs or self.transform[0] != outer.transform[0] or self.transform[4] != outer.transform[4]:
            raise GridError(f"grids differ in CRS or resolution: {self} vs {outer}")
        col = (self.transform[2] - outer.transform[2]) / outer.transform[0]
        row = (self.transform[5] - outer.transform[5]) / outer.transform[4]
        if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
            raise GridError(f"grids are not pixel-aligned: offset ({row}, {col}) px")
        return int(round(row)), int(round(col))

    def clip(self, bounds: tuple[float, float, float, float]) -> Grid:
        """This grid cut to ``bounds`` (grid CRS), snapped outwards to whole pixels."""
        a, _, c, _, e, f = self.transform
        minx, miny, maxx, maxy = bounds
        col0 = max(0, math.floor((minx - c) / a + 1e-9))
        col1 = min(self.width, math.ceil((maxx - c) / a - 1e-9))
        row0 = max(0, math.floor((maxy - f) / e + 1e-9))
        row1 = min(self.height, math.ceil((miny - f) / e - 1e-9))
        if col1 <= col0 or row1 <= row0:
            raise GridError(f"bounds {bounds} do not intersect grid {self.bounds} ({self.tile or self.crs})")
        return self.window_bounds(row0, col0, row1 - row0, col1 - col0)


def epsg_of(crs: Any) -> int | None:
    """EPSG code of a rasterio/pyproj CRS, also for HLS's authority-less "UTM Zone N" WKT.

    A CRS carrying an EPSG authority gives that code. An authority-less WGS 84 "UTM Zone N" WKT is then
    matched against EPSG:326NN and 327NN before PROJ's own identification, which ties a southern one
    between EPSG:32719 and POSGAR 2007 (EPSG:9265) and returns the latter.
    """
    from pyproj import CRS

    c = CRS.from_user_input(crs.to_wkt() if hasattr(crs, "to_wkt") else crs)
    exact = c.to_epsg(min_confidence=100)  # a CRS that carries its EPSG authority
    if exact is not None:
        return int(exact)
    # HLS WKT: "UTM Zone 19, Northern Hemisphere" with transverse-Mercator parameters but no authority.
    m = re.search(r"UTM[ _]Zone[ _](\d{1,2})", c.to_wkt(), re.IGNORECASE)
    ell = c.ellipsoid
    wgs84 = ell is not None and abs(ell.semi_major_metre - 6378137.0) < 1e-6 and abs(
        ell.inverse_flattening - 298.257223563) < 1e-6
    if m and c.is_projected and wgs84:
        for code in (32600 + int(m.group(1)), 32700 + int(m.group(1))):  # north, then south (false northing)
            candidate = CRS.from_epsg(code)
            if c.equals(candidate, ignore_axis_order=True) or _same_utm(c, candidate):
                return code
    code = c.to_epsg(min_confidence=20)
    return int(code) if code is not None else None


SOUTH_FALSE_NORTHING_M = 10_000_000.0


def northing_offset(file_epsg: int | None, grid_epsg: int) -> float | None:
    """Metres to add to a northing of ``file_epsg`` to express it in ``grid_epsg``.

    0 for the same CRS; -10,000,000 for a file in EPSG:327NN (UTM south) on an EPSG:326NN grid of the same
    zone, as HLS writes southern tiles with negative northings (same 30 m lattice, only the false
    northing differs); None for any other pair (another zone or datum: not the tile's lattice).
    """
    if file_epsg is None:
        return None
    if file_epsg == grid_epsg:
        return 0.0
    if 32601 <= grid_epsg <= 32660 and file_epsg == grid_epsg + 100:
        return -SOUTH_FALSE_NORTHING_M
    return None


def _same_utm(a: Any, b: Any) -> bool:
    """Both transverse Mercator with the same origin, scale factor and false easting/northing."""

    def params(c: Any) -> dict[str, float] | None:
        op = c.coordinate_operation
        if op is None or "transverse mercator" not in op.method_name.lower():
            return None
        return {q.name.lower(): float(q.value) for q in op.params}

    pa, pb = params(a), params(b)
    keys = ("latitude of natural origin", "longitude of natural origin", "scale factor at natural origin",
            "false easting", "false northing")
    return pa is not None and pb is not None and all(
        k in pa and k in pb and abs(pa[k] - pb[k]) < 1e-6 for k in keys)


def parse_mgrs_tile(tile: str) -> tuple[int, str, str, str]:
    """Split ``"10TEK"`` / ``"T10TEK"`` into (zone, band, column letter, row letter)."""
    m = _MGRS_RE.match(tile.upper())
    if not m:
        raise GridError(f"not an MGRS tile id: {tile!r}")
    zone = int(m.group(1))
    if not 1 <= zone <= 60:
        raise GridError(f"MGRS zone out of range in {tile!r}")
    return zone, m.group(2), m.group(3), m.group(4)


def normalise_tile(tile: str) -> str:
    r"""The canonical MGRS tile id ``NNBCC`` (upper case, no HLS ``T`` prefix); :class:`GridError` when
    ``tile`` is not a tile id (``\d{1,2}[C-X][A-Z]{2}``, optionally prefixed with ``T``)."""
    zone, band, col, row = parse_mgrs_tile(str(tile).strip())
    return f"{zone:02d}{band}{col}{row}"


def mgrs_square_origin(tile: str) -> tuple[float, float]:
    """South-west corner (easting, northing) of the 100 km MGRS square, in EPSG:326NN (south negative)."""
    zone, band, col, row = parse_mgrs_tile(tile)
    col_set = _COL_SETS[(zone - 1) % 3]
    if col not in col_set:
        raise GridError(f"column letter {col!r} is not used in zone {zone} ({tile!r})")
    easting = (col_set.index(col) + 1) * 100_000.0
    row_offset = 5 if zone % 2 == 0 else 0  # even zones start the row letters at F
    northing = ((_ROW_LETTERS.index(row) - row_offset) % 20) * 100_000.0
    min_n = _BAND_MIN_NORTHING[band]
    while northing < min_n:
        northing += 2_000_000.0
    if band < "N":  # southern hemisphere: HLS keeps the northern zone, northings negative
        northing -= 10_000_000.0
    return easting, northing


def mgrs_tile_grid(tile: str, resolution: float = HLS_RESOLUTION_M) -> Grid:
    """The full HLS grid of an MGRS tile (3660 x 3660 at 30 m), EPSG:326NN."""
    zone, *_ = parse_mgrs_tile(tile)
    e0, n0 = mgrs_square_origin(tile)
    ulx = math.floor(e0 / 60.0) * 60.0
    uly = math.ceil((n0 + 100_000.0) / 60.0) * 60.0
    n = int(round(TILE_SIZE_M / resolution))
    tid = normalise_tile(tile)
    return Grid(f"EPSG:{32600 + zone}", (resolution, 0.0, ulx, 0.0, -resolution, uly), n, n, tid)


_HLS_ID_RE = re.compile(r"^HLS\.[LS]30\.T(\d{2}[C-HJ-NP-X][A-HJ-NP-Z]{2})\.\d{7}T\d{6}\.v\d+\.\d+(\.[A-Za-z0-9_]+)*$")


def tile_of_item_id(item_id: str) -> str:
    """MGRS tile of an HLS item id or file name (``HLS.L30.T10TEK.2021128T184447.v2.0`` -> ``10TEK``).

    The whole id must follow HLS's grammar (``HLS.<L30|S30>.T<tile>.<YYYYDDD>T<HHMMSS>.v<M>.<m>``, then
    optional ``.<suffix>`` parts such as ``.B04.tif``); anything else is a :class:`GridError`."""
    m = _HLS_ID_RE.match(str(item_id))
    if not m:
        raise GridError(f"{item_id!r} is not an HLS granule id (HLS.L30.T<tile>.<YYYYDDD>T<HHMMSS>.v2.0)")
    return normalise_tile(m.group(1))


# --- the one rule for overlapping tiles (totals, change) -------------------------------------------------


def _mgrs_or_none(tile: str) -> str | None:
    try:
        return normalise_tile(tile)
    except GridError:
        return None


def _zone_lon(zone: int) -> tuple[float, float]:
    return -180.0 + 6.0 * (zone - 1), -180.0 + 6.0 * zone


def _in_square(x: Any, y: Any, tile: str) -> Any:
    e0, n0 = mgrs_square_origin(tile)
    return (x >= e0) & (x < e0 + 100_000.0) & (y >= n0) & (y < n0 + 100_000.0)


def _in_tile(x: Any, y: Any, tile: str) -> Any:
    left, bottom, right, top = mgrs_tile_grid(tile).bounds
    return (x >= left) & (x < right) & (y > bottom) & (y <= top)


def _to_zone(crs: Any, zone: int, x: Any, y: Any) -> tuple[Any, Any]:
    """Points of ``crs`` in the zone's EPSG:326NN (south: negative northings, as the tile grids)."""
    if epsg_of(crs) == 32600 + zone:
        return x, y
    from pyproj import Transformer

    return Transformer.from_crs(crs, f"EPSG:{32600 + zone}", always_xy=True).transform(x, y)


def owned_mask(transform: Any, shape: tuple[int, int], crs: Any, tile: str, tiles: Any = ()) -> Any:
    """The one rule for overlapping MGRS tiles (area totals, the change table): which pixels (by their centres)
    of a raster of ``tile`` on ``transform``/``shape``/``crs`` count for ``tile`` when the rasters of ``tiles``
    (every tile counted together) are summed. Returns a boolean (h, w) array, or None when ``tile`` is not an
    MGRS id (then every pixel counts).

    A pixel belongs to the tile whose 100 km MGRS square, inside that square's UTM zone, holds its centre
    (HLS tiles reach 9.8 km beyond their square to the east and south, and across zone edges); the first in
    name order where two ids share one square. When that tile is not among ``tiles`` (not mapped), the pixel
    belongs to the first of ``tiles``, in name order, whose 109.8 km tile covers it. So each ground point is
    counted once, whichever tiles were mapped. Zones are the plain 6 degree bands (no Norway/Svalbard
    exceptions).
    """
    import numpy as np

    me = _mgrs_or_none(tile)
    if me is None:
        return None
    others = sorted({t for t in map(_mgrs_or_none, tiles) if t and t != me})
    if not others:
        return np.ones(shape, bool)  # the only tile: every pixel it covers is its own
    zone = parse_mgrs_tile(me)[0]
    h, w = shape
    gx = np.broadcast_to((transform.c + transform.a * (np.arange(w) + 0.5))[None, :], shape)
    gy = np.broadcast_to((transform.f + transform.e * (np.arange(h) + 0.5))[:, None], shape)
    zx, zy = _to_zone(crs, zone, gx, gy)
    own = np.array(_in_square(zx, zy, me), dtype=bool)
    if any(u < me and parse_mgrs_tile(u)[0] == zone and mgrs_square_origin(u) == mgrs_square_origin(me)
           for u in others):
        own[:] = False  # a duplicate id of one square: the first in name order owns it
    lon = _lon_outside_zone(crs, zone, gx, gy)
    lo, hi = _zone_lon(zone)
    if lon is not None:
        own &= (lon >= lo) & (lon < hi)
    cand = ~own
    cx, cy = gx[cand], gy[cand]
    clon = lon[cand] if lon is not None else np.full(cx.shape, (lo + hi) / 2.0)
    claimed = np.zeros(cx.shape, bool)
    earlier = np.zeros(cx.shape, bool)
    for u in others:
        uz = parse_mgrs_tile(u)[0]
        ux, uy = _to_zone(crs, uz, cx, cy)
        ulo, uhi = _zone_lon(uz)
        claimed |= _in_square(ux, uy, u) & (clon >= ulo) & (clon < uhi)
        if u < me:
            earlier |= _in_tile(ux, uy, u)
    own[cand] = ~claimed & ~earlier
    return own


def _lon_outside_zone(crs: Any, zone: int, gx: Any, gy: Any) -> Any:
    """Longitudes of the pixel centres, or None when the raster's corners (so, all its pixels: meridians are
    concave in UTM) lie inside the zone's 6 degree band."""
    import numpy as np
    from pyproj import Transformer

    to_ll = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    lo, hi = _zone_lon(zone)
    corner_lon, _ = to_ll.transform(gx[[0, 0, -1, -1], [0, -1, 0, -1]], gy[[0, 0, -1, -1], [0, -1, 0, -1]])
    if np.all((np.asarray(corner_lon) >= lo) & (np.asarray(corner_lon) < hi)):
        return None
    return np.asarray(to_ll.transform(np.asarray(gx), np.asarray(gy))[0])
