"""The Earthdata emulator and the STAC fault proxy against clients we did not write: GDAL's /vsicurl/
(through rasterio) in each Earthdata auth mode, and pystac-client against a real ``rustac serve``.

What GDAL 3.10 needs (found here, see docs/emulator.md): a cookie jar (GDAL_HTTP_COOKIEFILE and
GDAL_HTTP_COOKIEJAR) next to either credential. With a bearer header alone, GDAL loses the header when it
retries the original URL after a 403 from a cached signed URL (a HEAD-signed URL reused for GET, or an
expired one), and the read fails."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import requests
from pystac_client import Client
from rasterio.transform import Affine
from rasterio.windows import Window

from sampleworld.emulator import EarthdataEmulator, FaultProxy, Faults
from sampleworld.stac_server import serve_stac

pytestmark = pytest.mark.allow_hosts(["127.0.0.1", "127.0.0.2", "127.0.0.3"])

USER, PASSWORD, TOKEN = "bob", "pw-S3CRET-bob", "tok-S3CRET-4567"
REL = "HLSL30.020/HLS.L30.T10TEK.2023180T185919.v2.0/HLS.L30.T10TEK.2023180T185919.v2.0.B04.tif"
GDAL_BASE = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif",
             "GDAL_HTTP_MAX_RETRY": "0"}
WIN_A, WIN_B = Window(0, 0, 256, 256), Window(768, 768, 256, 256)


@pytest.fixture(scope="module")
def cog(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """An LP DAAC-like root holding one 1024 x 1024 int16 COG (256 px tiles, deflate), and its pixels."""
    root = tmp_path_factory.mktemp("lp")
    path = root / REL
    path.parent.mkdir(parents=True)
    data = np.random.default_rng(0).integers(0, 10000, (1024, 1024), dtype=np.int16)
    with rasterio.open(path, "w", driver="COG", width=1024, height=1024, count=1, dtype="int16",
                       crs="EPSG:32610", transform=Affine(30, 0, 500010, 0, -30, 4500000), nodata=-9999,
                       blocksize=256, compress="deflate") as ds:
        ds.write(data, 1)
    return root, data


def _emu(cog, **kw: object) -> EarthdataEmulator:
    """A fresh emulator (new ports, so GDAL's per-URL caches start empty)."""
    return EarthdataEmulator({"lp-prod-protected": cog[0]}, users={USER: PASSWORD}, tokens=[TOKEN], **kw)


def _netrc(tmp_path: Path) -> Path:
    p = tmp_path / "netrc"
    p.write_text(f"machine 127.0.0.1 login {USER} password {PASSWORD}\n")  # curl matches by host name/IP
    p.chmod(0o600)
    return p


def _read(emu: EarthdataEmulator, opts: dict[str, str], expire_between: bool = False) -> tuple[
        np.ndarray, np.ndarray]:
    with rasterio.Env(**GDAL_BASE, **opts), \
            rasterio.open("/vsicurl/" + emu.data_url("lp-prod-protected", REL)) as ds:
        a = ds.read(1, window=WIN_A)
        if expire_between:
            emu.expire_signed_urls()
        return a, ds.read(1, window=WIN_B)


def _check(cog, a: np.ndarray, b: np.ndarray, emu: EarthdataEmulator) -> dict:
    data = cog[1]
    assert (a == data[:256, :256]).all() and (b == data[768:, 768:]).all()
    assert emu.wait_idle()
    hosts = emu.stats()["hosts"]
    assert hosts["signed"]["with_authorization"] == 0 and hosts["signed"]["with_cookie"] == 0
    assert "400" not in hosts["signed"]["statuses"]
    return hosts


@pytest.mark.parametrize("auth", [{"GDAL_HTTP_HEADERS": f"Authorization: Bearer {TOKEN}"},
                                  {"GDAL_HTTP_AUTH": "BEARER", "GDAL_HTTP_BEARER": TOKEN}])
def test_gdal_bearer_with_cookie_jar(cog, tmp_path, auth: dict[str, str]) -> None:
    jar = str(tmp_path / "cookies.txt")
    with _emu(cog) as emu:
        a, b = _read(emu, {**auth, "GDAL_HTTP_COOKIEFILE": jar, "GDAL_HTTP_COOKIEJAR": jar},
                     expire_between=True)
        hosts = _check(cog, a, b, emu)
    assert hosts["data"]["auth_schemes"] == {"Bearer": 1}  # later re-resolutions ride on the cookie
    assert hosts["signed"]["statuses"]["403"] >= 1  # HEAD-signed URL reused for GET; then the expiry
    assert hosts["login"]["requests"] == 0


def test_gdal_bearer_without_head_and_no_expiry(cog) -> None:
    with _emu(cog) as emu:
        a, b = _read(emu, {"GDAL_HTTP_HEADERS": f"Authorization: Bearer {TOKEN}",
                           "CPL_VSIL_CURL_USE_HEAD": "NO"})
        hosts = _check(cog, a, b, emu)
    assert hosts["data"]["requests"] == 1 and "403" not in hosts["signed"]["statuses"]  # URL reused


def test_gdal_netrc_and_cookie_jar_with_reresolution(cog, tmp_path) -> None:
    jar = tmp_path / "cookies.txt"
    opts = {"GDAL_HTTP_NETRC": "YES", "GDAL_HTTP_NETRC_FILE": str(_netrc(tmp_path)),
            "GDAL_HTTP_COOKIEFILE": str(jar), "GDAL_HTTP_COOKIEJAR": str(jar)}
    with _emu(cog) as emu:
        a, b = _read(emu, opts, expire_between=True)
        hosts = _check(cog, a, b, emu)
        logins = [r for r in emu.records("data") if r["path"] == "/login"]
    assert hosts["login"]["auth_schemes"] == {"Basic": 1} and len(logins) == 1
    assert hosts["data"]["with_authorization"] == 0 and hosts["data"]["with_cookie"] >= 2
    assert "127.0.0.2" in jar.read_text() and "asf-urs" in jar.read_text()


def test_gdal_short_ttl_resolves_every_read_through_the_data_host(cog) -> None:
    with _emu(cog, signed_ttl_s=8) as emu:  # GDAL reuses a signed URL only when valid > 10 s
        a, b = _read(emu, {"GDAL_HTTP_HEADERS": f"Authorization: Bearer {TOKEN}",
                           "CPL_VSIL_CURL_USE_HEAD": "NO"})
        hosts = _check(cog, a, b, emu)
    assert hosts["data"]["statuses"]["307"] == hosts["signed"]["requests"] >= 3


@pytest.mark.skipif(not rasterio.__gdal_version__.startswith("3.10"), reason="documents GDAL 3.10")
@pytest.mark.parametrize("head_presign_method,signed_status", [("HEAD", "403"), ("GET", "400")])
def test_gdal_310_bearer_header_alone_fails(cog, head_presign_method: str, signed_status: str) -> None:
    """GDAL HEADs first. HEAD-signed URL (TEA): GET on it -> 403 -> GDAL retries the original URL WITHOUT
    the header -> login -> fail. GET-signed URL: HEAD -> 403 -> GDAL retries GET on the signed URL WITH the
    header -> S3 400. Either way the emulator records it."""
    with _emu(cog, head_presign_method=head_presign_method) as emu:
        with pytest.raises(rasterio.errors.RasterioIOError):
            _read(emu, {"GDAL_HTTP_HEADERS": f"Authorization: Bearer {TOKEN}"})
        assert emu.wait_idle()
        hosts = emu.stats()["hosts"]
    assert signed_status in hosts["signed"]["statuses"]
    if signed_status == "400":
        assert hosts["signed"]["auth_schemes"] == {"Bearer": 1}
    else:
        assert hosts["data"]["statuses"].get("302", 0) >= 1


# --- STAC fault proxy against rustac ---------------------------------------------------------------

@pytest.fixture(scope="module")
def stac_upstream(tmp_path_factory: pytest.TempPathFactory):
    """``rustac serve`` (started as the project starts it) over a tiny collection of 7 items."""
    world = tmp_path_factory.mktemp("stacworld")
    (world / "stac").mkdir()
    coll = {"type": "Collection", "stac_version": "1.0.0", "id": "tiny", "description": "tiny",
            "license": "proprietary", "links": [],
            "extent": {"spatial": {"bbox": [[-1, -1, 1, 1]]},
                       "temporal": {"interval": [["2020-01-01T00:00:00Z", None]]}}}
    feats = [{"type": "Feature", "stac_version": "1.0.0", "id": f"item-{i}", "collection": "tiny",
              "geometry": {"type": "Point", "coordinates": [0, 0]}, "bbox": [0, 0, 0, 0],
              "properties": {"datetime": f"2020-01-0{i + 1}T00:00:00Z"}, "links": [],
              "assets": {"B04": {"href": f"https://data.example/{i}.tif"}}} for i in range(7)]
    for name, doc in [("hls_collection.json", coll), ("gedi_collection.json", {**coll, "id": "other"}),
                      ("hls_items.json", {"type": "FeatureCollection", "features": feats}),
                      ("gedi_items.json", {"type": "FeatureCollection", "features": []})]:
        (world / "stac" / name).write_text(json.dumps(doc))
    with serve_stac(world) as url:
        yield url


def _ids(url: str, **kw: object) -> list[str]:
    return [it.id for it in Client.open(url).search(collections=["tiny"], limit=3, **kw).items()]


def test_proxy_passes_through_and_rewrites_links(stac_upstream: str) -> None:
    with FaultProxy(stac_upstream) as proxy:
        assert _ids(proxy.url) == [f"item-{i}" for i in range(7)]
        assert proxy.wait_idle()
        paths = [r["path"] for r in proxy.records()]
        assert paths.count("/search") == 3  # all three pages came through the proxy
        item = Client.open(proxy.url).get_collection("tiny").get_item("item-0")
        assert item.get_self_href().startswith(proxy.url) and stac_upstream not in json.dumps(item.to_dict())
        assert item.assets["B04"].href == "https://data.example/0.tif"  # other hosts are left alone


def test_proxy_repeated_page(stac_upstream: str) -> None:
    with FaultProxy(stac_upstream, Faults(repeat_page=1.0)) as proxy:
        ids = _ids(proxy.url, max_items=9)
        assert proxy.wait_idle()
        assert ids == ["item-0", "item-1", "item-2"] * 3  # every next page is the first one again
        assert proxy.stats()["hosts"]["stac"]["faults"] == {"repeat_page": 2}


def test_proxy_repeated_page_seeded_rate(stac_upstream: str) -> None:
    with FaultProxy(stac_upstream, Faults(seed=5, repeat_page=0.5)) as proxy:
        ids = _ids(proxy.url, max_items=30)
        assert proxy.wait_idle()
        repeats = proxy.stats()["hosts"]["stac"]["faults"].get("repeat_page", 0)
    assert sorted(set(ids)) == [f"item-{i}" for i in range(7)] and len(ids) == 7 + 3 * repeats


@pytest.mark.parametrize("status", [502, 200])
def test_proxy_html_instead_of_json(stac_upstream: str, status: int) -> None:
    with FaultProxy(stac_upstream, Faults(html_error=1.0, html_status=status)) as proxy:
        s = requests.Session()
        s.trust_env = False
        r = s.get(proxy.url + "/collections")
        assert r.status_code == status and r.headers["Content-Type"] == "text/html"
        assert r.text.lstrip().startswith(("<html>", "<!DOCTYPE html>"))
        with pytest.raises(Exception):  # noqa: B017 (pystac-client raises APIError or a JSON error)
            Client.open(proxy.url)


def test_proxy_http_faults_and_retry_after(stac_upstream: str) -> None:
    with FaultProxy(stac_upstream, Faults(seed=1, throttle_429=0.5, retry_after_s=3)) as proxy:
        s = requests.Session()
        s.trust_env = False
        answers = [s.post(proxy.url + "/search", json={"collections": ["tiny"], "limit": 3}) for _ in range(40)]
        throttled = [r for r in answers if r.status_code == 429]
        assert 10 <= len(throttled) <= 30 and all(r.headers["Retry-After"] == "3" for r in throttled)
        assert all(r.json()["features"] for r in answers if r.status_code == 200)
