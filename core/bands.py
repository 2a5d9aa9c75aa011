"""Band tables per HLS collection: asset id, common name, description, Esri name and centre wavelength.

The biomass model uses six reflective bands. L30 (Landsat 8/9 OLI) and S30 (Sentinel-2 MSI) name them
differently: the same quantities are L30 B02 B03 B04 B05 B06 B07 and S30 B02 B03 B04 B8A B11 B12 (LP DAAC
HLS user guide; ../shared/FORMATS.md). S30's own B05-B07 are red-edge bands and must never be read as
NIR/SWIR. Fmask is the same in both collections.

**One naming everywhere.** Composites, chips, the export manifest and checkpoints name the six bands by
their HLS **L30 band ids** ``B02``..``B07`` (the ids granite-geospatial-biomass's 10-band chips use,
B01..B07, B09, B10, B11): composite and chip band descriptions are these ids; the common name
(``common``, TerraTorch's ``HLSBands``), the human name and the wavelength are per-band tags. An S30 or
mixed composite stores S30 B8A/B11/B12 in the slots B05/B06/B07 and records the source asset per
collection in its band tags. Centre wavelengths in micrometres (the values DOFA/TerraTorch use).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from core.constants import HLS_L30, HLS_S30

FMASK = "Fmask"


@dataclass(frozen=True)
class Band:
    """One band of an HLS collection."""

    asset: str
    common: str
    name: str
    esri_name: str
    wavelength_um: float


L30_BANDS: tuple[Band, ...] = (
    Band("B02", "BLUE", "Blue", "Blue", 0.49),
    Band("B03", "GREEN", "Green", "Green", 0.56),
    Band("B04", "RED", "Red", "Red", 0.665),
    Band("B05", "NIR_NARROW", "NIR_Narrow", "NearInfrared", 0.864),
    Band("B06", "SWIR_1", "SWIR1", "ShortWaveInfrared_1", 1.61),
    Band("B07", "SWIR_2", "SWIR2", "ShortWaveInfrared_2", 2.20),
)
S30_BANDS: tuple[Band, ...] = (
    Band("B02", "BLUE", "Blue", "Blue", 0.49),
    Band("B03", "GREEN", "Green", "Green", 0.56),
    Band("B04", "RED", "Red", "Red", 0.665),
    Band("B8A", "NIR_NARROW", "NIR_Narrow", "NearInfrared", 0.865),
    Band("B11", "SWIR_1", "SWIR1", "ShortWaveInfrared_1", 1.61),
    Band("B12", "SWIR_2", "SWIR2", "ShortWaveInfrared_2", 2.19),
)
BAND_TABLES: dict[str, tuple[Band, ...]] = {HLS_L30: L30_BANDS, HLS_S30: S30_BANDS}
# HLS granule id prefix -> collection (``HLS.L30.T10TEK.2021128T184447.v2.0``).
ID_PREFIXES: dict[str, str] = {"HLS.L30.": HLS_L30, "HLS.S30.": HLS_S30}

# The six model bands as the pipeline names them in composites, chips and checkpoints (L30 asset ids).
MODEL_BANDS: tuple[str, ...] = tuple(b.asset for b in L30_BANDS)
BAND_NAMES: tuple[str, ...] = tuple(b.name for b in L30_BANDS)
ESRI_BAND_NAMES: tuple[str, ...] = tuple(b.esri_name for b in L30_BANDS)
WAVELENGTHS_UM: tuple[float, ...] = tuple(b.wavelength_um for b in L30_BANDS)

# L30 bands the pipeline does not composite; granite's chips carry them (nodata in this project's files).
L30_OTHER_BANDS: tuple[Band, ...] = (
    Band("B01", "COASTAL_AEROSOL", "Coastal_Aerosol", "CoastalBlue", 0.44),
    Band("B09", "CIRRUS", "Cirrus", "Cirrus", 1.37),
    Band("B10", "THERMAL_INFRARED_1", "Thermal_1", "Thermal_1", 10.9),
    Band("B11", "THERMAL_INFRARED_2", "Thermal_2", "Thermal_2", 12.0),
)
L30_BY_ID: dict[str, Band] = {b.asset: b for b in (*L30_BANDS, *L30_OTHER_BANDS)}
COMMON_NAMES: dict[str, str] = {b.asset: b.common for b in L30_BY_ID.values()}

# granite-geospatial-biomass chip layout (its published config selects bands by position: 2-7 are used).
GRANITE_BANDS: tuple[str, ...] = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B09", "B10", "B11")
GRANITE_PLACEHOLDERS: tuple[str, ...] = tuple(b for b in GRANITE_BANDS if b not in MODEL_BANDS)


class UnknownCollectionError(ValueError):
    """A collection the band tables do not know."""


def bands_of(collection: str) -> tuple[Band, ...]:
    """The six reflective bands of ``collection`` (``HLSL30_2.0`` or ``HLSS30_2.0``), in model order."""
    try:
        return BAND_TABLES[collection]
    except KeyError:
        legacy = " (CMR-STAC renamed 'HLSL30.v2.0'/'HLSS30.v2.0' to these ids in 2024)" if ".v2.0" in collection else ""
        raise UnknownCollectionError(
            f"collection {collection!r} is not supported: the composite knows the band tables of "
            f"{', '.join(BAND_TABLES)} only (HLS v2.0 L30 and S30; give both, comma-separated, to composite "
            f"them together){legacy}") from None


def parse_collections(value: str | Sequence[str]) -> tuple[str, ...]:
    """Collection ids of an option value: one id, ids joined by ``,``/``+``, or a list; each must have a band
    table (:class:`UnknownCollectionError` otherwise). Order kept, duplicates dropped."""
    parts = value.replace("+", ",").split(",") if isinstance(value, str) else [str(v) for v in value]
    out = tuple(dict.fromkeys(p.strip() for p in parts if p.strip()))
    if not out:
        raise UnknownCollectionError(f"no HLS collection given ({value!r})")
    for c in out:
        bands_of(c)
    return out


def collection_of_item(item: dict[str, Any]) -> str | None:
    """The HLS collection of a STAC item: from its granule id prefix (``HLS.L30.``/``HLS.S30.``), else its
    ``collection`` field; None when neither names a known collection."""
    for prefix, coll in ID_PREFIXES.items():
        if str(item.get("id", "")).startswith(prefix):
            return coll
    coll = item.get("collection")
    return coll if coll in BAND_TABLES else None


def band_aliases(band_id: str) -> set[str]:
    """Lower-case names a raster band description may use for model band ``band_id`` (the id itself, the
    human name, the common name): older composites described their bands as Blue..SWIR2."""
    b = L30_BY_ID.get(band_id)
    names = {band_id} if b is None else {b.asset, b.name, b.common}
    return {n.lower() for n in names}


def find_bands(descriptions: Sequence[str | None], bands: Sequence[str]) -> tuple[list[int], list[str]]:
    """1-based positions of ``bands`` in a raster by band description (:func:`band_aliases`, any case), and
    the bands not found."""
    descs = [(d or "").lower() for d in descriptions]
    idx: list[int] = []
    missing: list[str] = []
    for b in bands:
        aliases = band_aliases(b) if b in L30_BY_ID else {b.lower()}
        hit = [i + 1 for i, d in enumerate(descs) if d in aliases]
        if hit:
            idx.append(hit[0])
        else:
            missing.append(b)
    return idx, missing
