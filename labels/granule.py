"""GEDI granule names and product checks (no I/O beyond HDF5 metadata).

File names follow ``GEDI04_A_{YYYYDDDHHMMSS}_O{orbit}_{sub}_T{track}_{PPDS}_{PGE}_{prodver}_V002.h5``
(../shared/FORMATS.md). The production version ``{prodver}`` ``01`` carries wrong AGBD for
``selected_algorithm == 10``; ``02`` is the corrected release.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlparse

GEDI_EPOCH = datetime(2018, 1, 1, tzinfo=UTC)
"""``delta_time`` counts seconds from this instant."""

BEAM_NAMES = ("BEAM0000", "BEAM0001", "BEAM0010", "BEAM0011", "BEAM0101", "BEAM0110", "BEAM1000", "BEAM1011")

_NAME_RE = re.compile(
    r"^GEDI04_A_(?P<start>\d{13})_O(?P<orbit>\d{5})_(?P<sub>\d{2})_T(?P<track>\d{5})_"
    r"(?P<ppds>\d{2})_(?P<pge>\d{3})_(?P<prodver>\d{2})_V(?P<version>\d{3})\.h5$"
)
_PRODUCT_RE = re.compile(r"^GEDI(?P<level>\d{2})_(?P<sub>[A-Z])_")


class GediReadError(ValueError):
    """A GEDI file that cannot be used as L4A: the message names the file and what is wrong."""


@dataclass(frozen=True)
class GranuleName:
    """The fields of a GEDI L4A file name. ``start`` is the sub-orbit start time (UTC)."""

    granule_id: str
    start: datetime
    orbit: int
    sub_orbit: int
    track: int
    ppds: str
    pge: str
    production_version: str
    version: str

    @property
    def key(self) -> tuple[int, int]:
        """(orbit, sub-orbit): the same granule in two production versions shares it."""
        return (self.orbit, self.sub_orbit)


def basename_of(href: str) -> str:
    """File name of a local path or URL."""
    path = urlparse(href).path if "://" in href else href
    return PurePosixPath(path.replace("\\", "/")).name


def product_of(name: str) -> str | None:
    """``"L4A"``, ``"L2A"``, ... from a GEDI file-name prefix, or None when it is no GEDI name."""
    m = _PRODUCT_RE.match(name)
    if not m:
        return None
    return f"L{int(m.group('level'))}{m.group('sub')}"


def parse_granule_name(href: str) -> GranuleName:
    """Parse an L4A file name (path or URL); raises :class:`GediReadError` on any other name."""
    name = basename_of(href)
    product = product_of(name)
    if product is not None and product != "L4A":
        raise GediReadError(f"{name}: is a GEDI {product} granule (file name prefix "
                            f"{name[:8]}), not GEDI L4A (GEDI04_A_...)")
    m = _NAME_RE.match(name)
    if not m:
        raise GediReadError(f"{name}: not a GEDI L4A V2 file name "
                            "(GEDI04_A_YYYYDDDHHMMSS_Oooooo_ss_Ttttt_PP_GGG_vv_V002.h5)")
    try:
        start = datetime.strptime(m.group("start"), "%Y%j%H%M%S").replace(tzinfo=UTC)
    except ValueError as exc:
        raise GediReadError(f"{name}: start time {m.group('start')} is not a date YYYYDDDHHMMSS ({exc})") from None
    return GranuleName(granule_id=name[:-3], start=start, orbit=int(m.group("orbit")),
                       sub_orbit=int(m.group("sub")), track=int(m.group("track")), ppds=m.group("ppds"),
                       pge=m.group("pge"), production_version=m.group("prodver"), version=m.group("version"))


def metadata_file_name(h5: Any) -> str | None:
    """``METADATA/DatasetIdentification`` ``fileName`` attribute, when the granule has it."""
    try:
        attrs = h5["METADATA/DatasetIdentification"].attrs
    except KeyError:
        return None
    value = attrs.get("fileName")
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def check_l4a_structure(h5: Any, name: str, required: tuple[str, ...]) -> list[str]:
    """Beam groups of an open L4A granule that hold every ``required`` dataset.

    Raises :class:`GediReadError` naming the file when it is another product (root ``short_name``
    attribute, or beams without ``agbd`` but with L2A/L2B datasets) or a beam lacks a required dataset.
    """
    short = h5.attrs.get("short_name")
    short = short.decode() if isinstance(short, bytes) else short
    if short is not None and short != "GEDI_L4A":
        raise GediReadError(f"{name}: root attribute short_name is {short!r}, not 'GEDI_L4A'")
    beams = sorted(k for k in h5.keys() if k.startswith("BEAM"))
    if not beams:
        raise GediReadError(f"{name}: no BEAM groups (found root groups: {sorted(h5.keys())})")
    for beam in beams:
        group = h5[beam]
        missing = [d for d in required if d not in group]
        if not missing:
            continue
        found = sorted(group.keys())
        if "agbd" not in group:
            hint = _other_product_hint(found)
            raise GediReadError(f"{name}: {beam} has no 'agbd' dataset, so this is not a GEDI L4A granule"
                                f"{hint} (found datasets: {', '.join(found[:12])}"
                                f"{', ...' if len(found) > 12 else ''})")
        raise GediReadError(f"{name}: {beam} lacks dataset(s) {', '.join(missing)} "
                            f"(found: {', '.join(found[:20])}{', ...' if len(found) > 20 else ''})")
    return beams


def _other_product_hint(found: list[str]) -> str:
    if "rh" in found or "elev_highestreturn" in found:
        return "; it looks like GEDI L2A (has 'rh')"
    if "cover" in found or "pai" in found or "pavd_z" in found:
        return "; it looks like GEDI L2B (has cover/pai)"
    return ""
