"""Choosing the L4A file among a STAC item's assets (CMR-STAC ORNL items list https and s3 hrefs)."""

from __future__ import annotations

import pytest

from labels.search import GediSearchError, granule_href

N = "GEDI04_A_2023160051430_O25001_02_T01234_02_004_02_V002.h5"
HTTPS = f"https://data.ornldaac.earthdata.nasa.gov/protected/gedi/GEDI_L4A_AGB_Density_V2_1/data/{N}"
S3 = f"s3://ornl-cumulus-prod-protected/gedi/GEDI_L4A_AGB_Density_V2_1/data/{N}"


@pytest.mark.parametrize("assets, expected", [
    ({"data": {"href": HTTPS}}, HTTPS),
    ({"s3": {"href": S3}, "data": {"href": HTTPS}}, HTTPS),               # https preferred
    ({"data": {"href": S3}}, S3),                                          # s3 only: still returned
    ({"metadata": {"href": "https://x/concept.xml"}, "data": {"href": "/local/" + N}}, "/local/" + N),
    ({"sha": {"href": HTTPS + ".sha256"}, "data": {"href": HTTPS}}, HTTPS),
    ({"browse": {"href": "https://x/GEDI02_A_2019162222610_O02812_04_T01244_02_003_01_V002.h5"},
      "data": {"href": HTTPS}}, HTTPS),                                    # another product is never chosen
])
def test_granule_href(assets: dict, expected: str) -> None:
    assert granule_href({"id": "x", "assets": assets}) == expected


def test_item_without_h5_asset() -> None:
    with pytest.raises(GediSearchError, match="STAC item 'abc': no .h5 asset .*metadata"):
        granule_href({"id": "abc", "assets": {"metadata": {"href": "https://x/a.xml"}}})
