"""World specifications: the frozen parameter sets behind ``small``, ``demo`` and ``benchmark``.

All distances are metres in the world's UTM zone (EPSG:326NN), all rasters sit on the zone's 30 m HLS
lattice (every MGRS tile of a zone shares it). Day-of-year values refer to the scene's or granule's
``year`` (None: ``WorldSpec.year``, the world's default year). A world may span several years: scenes and
GEDI granules of other years give training seasons and map-only years (``WorldSpec.years``); they follow
the real timeline (``core.timeline``: no GEDI shot in the 2023-24 storage gap or after 2024-11-27, no
HLS L30 scene before 2013-04-11), checked by :func:`check_timeline`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

SIZES = ("small", "demo", "benchmark", "region")


@dataclass(frozen=True)
class SceneSpec:
    """One Landsat acquisition (one HLS granule per MGRS tile it touches).

    ``cloud``: target cloud fraction (0-1) of the world window; ``swath_cut``: fraction of the window's
    width that lies outside the Landsat swath (bands -9999, Fmask 255), 0 = full coverage, negative = cut
    from the west side; ``snow``: snow on high ground; ``haze``: 0-1 strength of high-aerosol patches.
    """

    doy: int
    time: str = "184447"  # HHMMSS of the Landsat scene centre (UTC)
    cloud: float = 0.05
    swath_cut: float = 0.0
    snow: bool = False
    haze: float = 0.0
    sensor: str = "LC08"
    year: int | None = None  # None: the world's year


@dataclass(frozen=True)
class GediSpec:
    """One GEDI L4A granule (one sub-orbit).

    ``beams``: beam group names present; ``crossing_frac``: where the central track crosses the world
    window, as a fraction of its width (0-1; values outside place the tracks outside the window);
    ``length_km``: along-track length of the granule (real sub-orbits are thousands of km long, shots
    outside the area are real data the reader must skip); ``prod_version``: ``01`` or ``02``.
    """

    doy: int
    time: str = "051430"
    beams: tuple[str, ...] = ("BEAM0000", "BEAM0001", "BEAM0010", "BEAM0011",
                              "BEAM0101", "BEAM0110", "BEAM1000", "BEAM1011")
    crossing_frac: float = 0.5
    ascending: bool = True
    length_km: float = 0.0  # 0 = just across the window plus margin
    prod_version: str = "02"
    degraded_frac: float = 0.03  # shots with a non-zero degrade_flag (4, 34 or 74)
    all_degraded: bool = False   # as in one real granule: every shot degrade_flag != 0
    fill_beams: tuple[str, ...] = ()  # beams holding only fill shots (agbd -9999), as in a real granule
    year: int | None = None  # None: the world's year


@dataclass(frozen=True)
class Disturbance:
    """A clear-cut: from ``year`` on, the forest inside a disc (centre as fractions of the world window's
    width and height from its top-left corner, radius in 30 m pixels) is grass with 2-8 Mg/ha."""

    year: int
    center_frac: tuple[float, float] = (0.5, 0.5)
    radius_px: int = 100


@dataclass(frozen=True)
class WorldSpec:
    """Everything that determines a world; two equal specs and seeds give byte-identical data arrays."""

    size: str
    year: int
    tiles: tuple[str, ...]
    aoi_center: tuple[float, float]  # UTM easting, northing (m)
    aoi_px: int                      # AOI side, 30 m pixels
    margin_px: int                   # window margin around the AOI, pixels
    scenes: tuple[SceneSpec, ...]
    gedi: tuple[GediSpec, ...]
    full_tiles: bool = False         # write full 3660 x 3660 tiles instead of windows
    zone: int = 10
    workers: int = 1                 # process pool size for scene writing
    disturbances: tuple[Disturbance, ...] = ()  # clear-cuts: the truth (and so the data) changes by year

    @property
    def epsg(self) -> int:
        return 32600 + self.zone

    def year_of(self, item: SceneSpec | GediSpec) -> int:
        """The calendar year of a scene or granule (its own, else the world's)."""
        return item.year if item.year is not None else self.year

    @property
    def years(self) -> list[int]:
        """Years with HLS scenes, ascending."""
        return sorted({self.year_of(s) for s in self.scenes})

    @property
    def gedi_years(self) -> list[int]:
        """Years with GEDI granules, ascending."""
        return sorted({self.year_of(g) for g in self.gedi})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WorldSpec:
        d = dict(d)
        d["scenes"] = tuple(SceneSpec(**s) for s in d["scenes"])
        d["gedi"] = tuple(GediSpec(**{**g, "beams": tuple(g["beams"]), "fill_beams": tuple(g["fill_beams"])})
                          for g in d["gedi"])
        d["tiles"] = tuple(d["tiles"])
        d["aoi_center"] = tuple(d["aoi_center"])
        d["disturbances"] = tuple(Disturbance(**{**x, "center_frac": tuple(x["center_frac"])})
                                  for x in d.get("disturbances", ()))
        return cls(**d)


_ALL = GediSpec.__dataclass_fields__["beams"].default
_COVER_ONLY_MISSING = ("BEAM0000", "BEAM0001", "BEAM0101", "BEAM0110", "BEAM1000", "BEAM1011")


def _small() -> WorldSpec:
    # 2024 (default year): the GEDI edge cases; 2022: a second season with GEDI; 2025: map-only (no GEDI).
    scenes = (
        SceneSpec(doy=44, cloud=0.10, snow=True),                           # winter, snow
        SceneSpec(doy=124, cloud=0.30, haze=0.0),                           # spring, cloudy
        SceneSpec(doy=172, cloud=0.06, haze=1.0),                           # leaf-on, high aerosol
        SceneSpec(doy=204, cloud=0.12, swath_cut=0.35, sensor="LC09"),      # leaf-on, partial swath
        SceneSpec(doy=236, cloud=0.02),                                     # leaf-on, clear
        SceneSpec(doy=300, cloud=0.45),                                     # autumn, very cloudy
        SceneSpec(doy=181, cloud=0.08, year=2022),
        SceneSpec(doy=229, cloud=0.15, sensor="LC09", year=2022),
        SceneSpec(doy=197, cloud=0.05, year=2025),
        SceneSpec(doy=245, cloud=0.20, sensor="LC09", year=2025),
    )
    gedi = (
        GediSpec(doy=160, time="051430", crossing_frac=0.45, ascending=True),
        GediSpec(doy=221, time="193012", beams=_COVER_ONLY_MISSING, crossing_frac=0.6, ascending=False,
                 degraded_frac=0.1),
        GediSpec(doy=250, time="102233", crossing_frac=0.3, ascending=True, prod_version="01",
                 fill_beams=("BEAM0010", "BEAM0011"), all_degraded=True),
        GediSpec(doy=175, time="061215", crossing_frac=0.5, ascending=True, year=2022),
        GediSpec(doy=232, time="171044", crossing_frac=0.25, ascending=False, year=2022),
    )
    return WorldSpec(size="small", year=2024, tiles=("10TEK", "10TFK"), aoi_center=(604890.0, 4440000.0),
                     aoi_px=290, margin_px=6, scenes=scenes, gedi=gedi)


def _demo() -> WorldSpec:
    # 2022 and 2024: training seasons with GEDI; 2023 (default year): GEDI was stored on the ISS, so a
    # map-only year, with the off-season scenes that the season filter must drop.
    # The leaf-on dates of the three years are within two days of each other: composites of other
    # phenological dates differ systematically (tens of Mg/ha in the maps), which is not the change to show.
    plan = {2022: ((173, 0.10), (190, 0.05), (205, 0.15), (221, 0.08)),
            2023: ((28, 0.25), (172, 0.04), (188, 0.08), (204, 0.20), (220, 0.03), (316, 0.40)),
            2024: ((174, 0.12), (189, 0.03), (206, 0.20), (222, 0.06))}
    scenes = tuple(
        SceneSpec(doy=d, cloud=c, snow=(d < 60), haze=1.0 if (y, d) == (2023, 188) else 0.0,
                  swath_cut=0.3 if (y, d) == (2023, 220) else 0.0, sensor="LC09" if i % 2 else "LC08",
                  year=None if y == 2023 else y)
        for y, dates in plan.items() for i, (d, c) in enumerate(dates)
    )
    # Three passes a season (every 224 px chip gets labelled pixels in each season).
    gedi = (
        GediSpec(doy=170, time="051430", crossing_frac=0.15, year=2022),
        GediSpec(doy=195, time="193012", crossing_frac=0.5, ascending=False, beams=_COVER_ONLY_MISSING, year=2022),
        GediSpec(doy=230, time="102233", crossing_frac=0.85, degraded_frac=0.05, year=2022),
        GediSpec(doy=165, time="081155", crossing_frac=0.2, ascending=False, prod_version="01", year=2024),
        GediSpec(doy=201, time="120519", crossing_frac=0.5, fill_beams=("BEAM0010",), year=2024),
        GediSpec(doy=225, time="064402", crossing_frac=0.82, ascending=False, year=2024),
    )
    # A ~4,000 ha clear-cut in 2023: the change table shows the loss.
    cut = (Disturbance(year=2023, center_frac=(0.3, 0.35), radius_px=120),)
    return WorldSpec(size="demo", year=2023, tiles=("10TEK",), aoi_center=(572000.0, 4445000.0),
                     aoi_px=1344, margin_px=16, scenes=scenes, gedi=gedi, workers=2, disturbances=cut)


def _benchmark() -> WorldSpec:
    # Two Landsat paths overlap this tile: with Landsat 8 + 9 that is an acquisition every ~4 days.
    leaf_on = tuple(range(153, 273, 6))  # 20 dates, Jun 2 - Sep 24
    off = (20, 70, 110, 300, 330)
    scenes = []
    for i, d in enumerate(sorted(off + leaf_on)):
        side = i % 2 == 1  # the neighbouring path covers only part of the tile
        scenes.append(SceneSpec(doy=d, time="183812" if side else "184447",
                                cloud=(0.05, 0.15, 0.3, 0.02, 0.08)[i % 5],
                                swath_cut=-0.4 if side else 0.0, snow=d < 80,
                                haze=1.0 if i % 7 == 3 else 0.0, sensor="LC09" if i % 4 >= 2 else "LC08"))
    # Ten 1000 km passes plus one ~170 MB, 10,000 km (a whole sub-orbit), 8-beam granule of which ~100 km
    # cross the tile.
    gedi = tuple(
        GediSpec(doy=150 + 9 * k, time=f"{(5 + 3 * k) % 24:02d}1430", crossing_frac=0.05 + 0.09 * k,
                 ascending=k % 2 == 0, beams=_ALL if k % 3 else _COVER_ONLY_MISSING, length_km=1000.0)
        for k in range(10)
    ) + (GediSpec(doy=214, time="221705", crossing_frac=0.93, length_km=10000.0),)
    return WorldSpec(size="benchmark", year=2022, tiles=("10TEK",), aoi_center=(554880.0, 4445100.0),
                     aoi_px=2400, margin_px=0, scenes=tuple(scenes), gedi=gedi, full_tiles=True, workers=2)


def _region() -> WorldSpec:
    # Four MGRS tiles in two UTM zones: 10TGK/10TGL at the east edge of zone 10 and 11TKE/11TKF at the west
    # edge of zone 11 cover the same ground around the zone boundary (-120 deg) near 40.6 N. The world
    # (landscape, scenes) is rendered in zone 10; the zone-11 granules are resampled onto their own grid.
    # Tile windows of ~2400 x 1300 px (not full tiles: 4 full tiles x 12 scenes would be ~12 GB here).
    doys = tuple(range(160, 256, 8))  # 12 leaf-on dates
    scenes = tuple(SceneSpec(doy=d, time="183812" if i % 3 == 1 else "184447",
                             cloud=(0.05, 0.2, 0.35, 0.1)[i % 4], swath_cut=-0.3 if i % 3 == 1 else 0.0,
                             sensor="LC09" if i % 2 else "LC08") for i, d in enumerate(doys))
    gedi = (GediSpec(doy=170, crossing_frac=0.3), GediSpec(doy=205, time="193012", crossing_frac=0.7,
                                                            ascending=False, beams=_COVER_ONLY_MISSING))
    return WorldSpec(size="region", year=2022, tiles=("10TGK", "10TGL", "11TKE", "11TKF"),
                     aoi_center=(760000.0, 4495000.0), aoi_px=2400, margin_px=0, scenes=scenes, gedi=gedi,
                     workers=2)


_PRESETS = {"small": _small, "demo": _demo, "benchmark": _benchmark, "region": _region}


def check_timeline(spec: WorldSpec) -> None:
    """Raise ValueError when a scene or GEDI granule lies where the real data has none (``core.timeline``)."""
    from datetime import datetime, timedelta

    from core.timeline import GEDI_L4A, hls_start

    first_hls = hls_start("HLSL30_2.0")
    for sc in spec.scenes:
        day = datetime(spec.year_of(sc), 1, 1).date() + timedelta(days=sc.doy - 1)
        if day < first_hls:
            raise ValueError(f"sample world {spec.size}: scene on {day} is before HLS L30 starts ({first_hls})")
    for g in spec.gedi:
        start = datetime(spec.year_of(g), 1, 1, int(g.time[:2]), int(g.time[2:4])) + timedelta(days=g.doy - 1)
        end = start + timedelta(minutes=25)  # a sub-orbit (a quarter of a 92.6 min orbit) at most
        if not (GEDI_L4A.covers(start.date()) and GEDI_L4A.covers(end.date())):
            raise ValueError(f"sample world {spec.size}: GEDI granule at {start} is outside the {GEDI_L4A.product} "
                             f"record ({', '.join(f'{p.start}..{p.end}' for p in GEDI_L4A.periods)})")


def preset(size: str) -> WorldSpec:
    """The named preset (``small``: tests, ``demo``: the make demo default, ``benchmark``: a full tile,
    ``region``: four tile windows in two UTM zones for the distributed benchmark)."""
    if size not in _PRESETS:
        raise ValueError(f"unknown sample world size {size!r}; choose one of {', '.join(SIZES)}")
    return _PRESETS[size]()


def with_overrides(spec: WorldSpec, **overrides: Any) -> WorldSpec:
    """``spec`` with fields replaced (unknown names are an error)."""
    names = {f.name for f in dataclasses.fields(WorldSpec)}
    bad = sorted(set(overrides) - names)
    if bad:
        raise ValueError(f"unknown WorldSpec fields: {bad}; known: {sorted(names)}")
    return dataclasses.replace(spec, **overrides)


def cloudy_scenes(spec: WorldSpec, cloud: float | Sequence[float]) -> tuple[SceneSpec, ...]:
    """``spec``'s scenes with their target cloud fractions (0-1) replaced: one value for every scene, or a
    list that cycles over the scenes, e.g. ``(0.97, 0.9, 0.3, 0.95, 0.15)`` for a season of mostly overcast
    scenes and a few broken ones (mean 0.65), the way a cloudy season looks in HLS."""
    values = [float(cloud)] if isinstance(cloud, int | float) else [float(c) for c in cloud]
    if not values or not all(0.0 <= c <= 1.0 for c in values):
        raise ValueError(f"cloud fractions must be in [0, 1], got {cloud}")
    return tuple(dataclasses.replace(s, cloud=values[i % len(values)]) for i, s in enumerate(spec.scenes))


__all__ = ["SceneSpec", "GediSpec", "Disturbance", "WorldSpec", "preset", "with_overrides", "check_timeline",
           "cloudy_scenes", "SIZES"]
