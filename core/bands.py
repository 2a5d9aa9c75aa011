"""Band tables per HLS collection: asset id, common name, description, Esri name and centre wavelength.

The biomass model uses six reflective bands. L30 (Landsat 8/9 OLI) and S30 (Sentinel-2 MSI) name them
differently: the same quantities are L30 B02 B03 B04 B05 B06 B07 and S30 B02 B03 B04 B8A B11 B12 (LP DAAC
HLS user guide; ../shared/FORMATS.md). ``common`` is granite/TerraTorch's band name (``HLSBands``),
``name`` the description written on composite bands, ``esri_name`` ArcGIS's well-known band name.
Centre wavelengths in micrometres (the values DOFA/TerraTorch use).
"""

from __future__ import annotations

from dataclasses import dataclass

from core.constants import HLS_L30, HLS_S30

FMASK = "Fmask"


@dataclass(frozen=True)
class Band:
    """One reflective band of an HLS collection."""

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

# The six model bands as the pipeline names them in composites, chips and checkpoints (L30 asset ids).
MODEL_BANDS: tuple[str, ...] = tuple(b.asset for b in L30_BANDS)
BAND_NAMES: tuple[str, ...] = tuple(b.name for b in L30_BANDS)
ESRI_BAND_NAMES: tuple[str, ...] = tuple(b.esri_name for b in L30_BANDS)
WAVELENGTHS_UM: tuple[float, ...] = tuple(b.wavelength_um for b in L30_BANDS)
COMMON_NAMES: dict[str, str] = {b.asset: b.common for b in L30_BANDS}


class UnknownCollectionError(ValueError):
    """A collection the band tables do not know."""


def bands_of(collection: str) -> tuple[Band, ...]:
    """The six reflective bands of ``collection`` (``HLSL30_2.0`` or ``HLSS30_2.0``)."""
    try:
        return BAND_TABLES[collection]
    except KeyError:
        raise UnknownCollectionError(
            f"collection {collection!r} is not supported: the composite knows the band tables of "
            f"{', '.join(BAND_TABLES)} only (HLS v2.0 L30 and S30)") from None
