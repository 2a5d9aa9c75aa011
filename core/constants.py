"""The pipeline's constants, defined once: nodata values, scale factors, default endpoints and collections.

Nodata semantics:

* ``IMAGE_NODATA`` (-9999.0): composites, image chips and biomass maps; HLS's own int16 reflectance
  nodata has the same value (``HLS_NODATA``).
* ``LABEL_NODATA`` (-9999.0) is the default nodata of label rasters and label chips;
  ``GRANITE_LABEL_NODATA`` (-1.0) the granite/TerraTorch alternative (TerraTorch's ignore index).
  ``LABEL_NODATA_CHOICES`` lists the two; a label pixel is labelled when finite, >= 0 and not nodata.
* ``AGBD_FILL`` (-9999.0): GEDI L4A's fill value for ``agbd``/``agbd_se`` (no ``_FillValue`` attribute).
* ``FMASK_FILL`` (255): HLS Fmask fill; ``CLASS_NONE`` (255): "no class" in uint8 class rasters
  (plant functional type, land cover).
"""

from __future__ import annotations

IMAGE_NODATA = -9999.0
HLS_NODATA = -9999
LABEL_NODATA = -9999.0
GRANITE_LABEL_NODATA = -1.0
LABEL_NODATA_CHOICES = (LABEL_NODATA, GRANITE_LABEL_NODATA)
AGBD_FILL = -9999.0
FMASK_FILL = 255
CLASS_NONE = 255

HLS_REFLECTANCE_SCALE = 0.0001  # HLS surface reflectance: int16 x 10000
HLS_THERMAL_SCALE = 0.01  # HLS L30 B10/B11: degrees C x 100

AGB_UNITS = "Mg/ha"

HLS_STAC_URL = "https://cmr.earthdata.nasa.gov/stac/LPCLOUD"
HLS_L30 = "HLSL30_2.0"
HLS_S30 = "HLSS30_2.0"
HLS_L30_S30 = f"{HLS_L30},{HLS_S30}"  # both, one composite (the harmonised product)
GEDI_STAC_URL = "https://cmr.earthdata.nasa.gov/stac/ORNL_CLOUD"
GEDI_L4A_COLLECTION = "GEDI_L4A_AGB_Density_V2_1_2056_2.1"

EARTHDATA_CHECK_URLS = {
    "HLS L30 COG (LP DAAC)": "https://data.lpdaac.earthdatacloud.nasa.gov/lp-prod-protected/HLSL30.020/"
                             "HLS.L30.T10TEK.2021128T184447.v2.0/HLS.L30.T10TEK.2021128T184447.v2.0.Fmask.tif",
    "GEDI L4A granule (ORNL DAAC)": "https://data.ornldaac.earthdata.nasa.gov/protected/gedi/"
                                    "GEDI_L4A_AGB_Density_V2_1/data/"
                                    "GEDI04_A_2020036151358_O06515_02_T00198_02_002_01_V002.h5",
}
"""One protected file per data host, for ``python -m flows check-earthdata`` (an authenticated HEAD each;
the HLS one is the real CMR-STAC item in ../shared/realdata/stac, the GEDI one a real granule name)."""
