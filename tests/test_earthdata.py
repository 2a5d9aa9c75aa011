"""Earthdata credentials and hosts (core.earthdata): which URLs may see credentials, where they come from,
the GDAL settings and private files, and the requests session's per-hop decisions. Table-style; the reads
through the emulator are in test_earthdata_reads.py."""

from __future__ import annotations

import os
import stat

import pytest
import requests

from core.earthdata import (
    Credentials,
    HostPolicy,
    close_gdal_files,
    earthdata_credentials,
    gdal_files_folder,
    gdal_options,
)
from core.earthdata_http import EarthdataAuth, safe_url

SIGNED = ("https://lp-prod-protected.s3.us-west-2.amazonaws.com/HLSL30.020/x.tif?A-userid=u&X-Amz-Algorithm="
          "AWS4-HMAC-SHA256&X-Amz-Credential=K%2F20231%2Fus-west-2%2Fs3%2Faws4_request&X-Amz-Signature=ab12")


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for k in ("EARTHDATA_TOKEN", "EARTHDATA_USERNAME", "EARTHDATA_PASSWORD", "EARTHDATA_HOSTS"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("HOME", str(tmp_path))
    yield tmp_path
    close_gdal_files()


@pytest.mark.parametrize("url,hosts,allowed", [
    ("https://urs.earthdata.nasa.gov/oauth/authorize", "", True),
    ("https://data.ornldaac.earthdata.nasa.gov/protected/gedi/x.h5", "", True),
    ("https://data.lpdaac.earthdatacloud.nasa.gov/lp-prod-protected/x.tif", "", True),
    ("https://evilnasa.gov/x", "", False),                      # the old endswith("nasa.gov") accepted it
    ("https://earthdata.nasa.gov.evil.com/x", "", False),
    ("https://xearthdata.nasa.gov/x", "", False),               # no dot boundary
    ("https://www.nasa.gov/x", "", False),                      # NASA, but not Earthdata
    ("http://data.ornldaac.earthdata.nasa.gov/x.h5", "", False),  # never over plain http
    (SIGNED, "", False),                                        # S3 pre-signed
    ("https://data.lpdaac.earthdatacloud.nasa.gov/x.tif?Signature=s&Key-Pair-Id=k&Expires=1", "", False),
    ("http://127.0.0.2:8000/p/x.h5", "127.0.0.1:7000,127.0.0.2:8000", True),
    ("http://127.0.0.2:8001/p/x.h5", "127.0.0.1:7000,127.0.0.2:8000", False),  # other port
    ("http://127.0.0.3:8000/p/x.h5", "127.0.0.1:7000,127.0.0.2:8000", False),  # the signed host
    ("http://127.0.0.2:9/p/x.h5", "127.0.0.2", True),           # host without port: any port
    ("http://127.0.0.2:9/p/x.h5?X-Amz-Signature=1", "127.0.0.2", False),
])
def test_host_policy(url: str, hosts: str, allowed: bool) -> None:
    assert HostPolicy.from_env(hosts).allows(url) is allowed


@pytest.mark.parametrize("bad", ["http://127.0.0.1:80", "127.0.0.1:port", "host/path"])
def test_earthdata_hosts_entries_are_checked(bad: str) -> None:
    with pytest.raises(ValueError, match="EARTHDATA_HOSTS"):
        HostPolicy.from_env(bad)


def test_signed_urls_never_appear_in_messages() -> None:
    assert "X-Amz-Signature" not in safe_url(SIGNED) and safe_url(SIGNED).endswith("?<signature>")
    assert safe_url("https://data.ornldaac.earthdata.nasa.gov/a.h5") == "https://data.ornldaac.earthdata.nasa.gov/a.h5"


def test_netrc_entry_of_a_listed_login_host(clean_env, monkeypatch) -> None:
    netrc = clean_env / "netrc"
    netrc.write_text("machine github.com login me password gh-pw\nmachine 127.0.0.1 login bob password pw-1\n")
    monkeypatch.setenv("NETRC", str(netrc))
    assert earthdata_credentials() is None  # 127.0.0.1 is not an Earthdata host unless listed
    monkeypatch.setenv("EARTHDATA_HOSTS", "127.0.0.1:5000,127.0.0.2:5001")
    c = earthdata_credentials()
    assert (c.username, c.password, c.kind, c.source) == ("bob", "pw-1", "password", f"netrc:{netrc}")
    assert "pw-1" not in c.describe() and "bob" in c.describe()


def _prepared(url: str, auth: EarthdataAuth, headers: dict | None = None) -> requests.PreparedRequest:
    return requests.Request("GET", url, headers=headers or {}, auth=auth).prepare()


@pytest.mark.parametrize("creds,url,expected", [
    (Credentials(token="tok-1", source="t"), "https://data.ornldaac.earthdata.nasa.gov/x.h5", "Bearer tok-1"),
    (Credentials(token="tok-1", source="t"), SIGNED, None),
    (Credentials(token="tok-1", source="t"), "https://example.com/x", None),
    (Credentials(username="u", password="p", source="e"), "https://urs.earthdata.nasa.gov/oauth/authorize",
     "Basic dTpw"),
    (Credentials(username="u", password="p", source="e"), "https://data.ornldaac.earthdata.nasa.gov/x", None),
    (None, SIGNED, None),
])
def test_session_auth_per_request(creds, url: str, expected: str | None) -> None:
    """Bearer to Earthdata hosts; Basic only to Earthdata Login (or an allowed host that challenges); a
    caller's own Authorization header is removed where the policy does not allow credentials."""
    r = _prepared(url, EarthdataAuth(creds, HostPolicy()), headers={"Authorization": "Bearer stray"})
    assert r.headers.get("Authorization") == expected


def test_gdal_options_private_files_and_cleanup(clean_env, monkeypatch) -> None:
    assert gdal_options("/data/x.tif") == {}
    opts = gdal_options("https://example.com/x.tif")  # remote, not Earthdata: no credentials, no cache
    assert opts["VSI_CACHE"] == "FALSE" and not any("COOKIE" in k or "NETRC" in k or "HEADERS" in k for k in opts)
    monkeypatch.setenv("EARTHDATA_TOKEN", "tok-2")
    opts = gdal_options("https://example.com/x.tif")
    assert "GDAL_HTTP_HEADERS" not in opts  # credentials only for Earthdata hosts
    assert gdal_files_folder() is None


def test_gdal_files_are_private_and_removed(clean_env) -> None:
    from core.earthdata import _FILES

    creds = Credentials(username="u", password="pw-3", source="env:EARTHDATA_USERNAME")
    paths = _FILES.paths(creds, HostPolicy())
    folder = gdal_files_folder()
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    for key in ("GDAL_HTTP_COOKIEFILE", "GDAL_HTTP_NETRC_FILE"):
        assert stat.S_IMODE(os.stat(paths[key]).st_mode) == 0o600 and os.path.dirname(paths[key]) == str(folder)
    assert "machine urs.earthdata.nasa.gov login u password pw-3" in open(paths["GDAL_HTTP_NETRC_FILE"]).read()
    other = _FILES.paths(Credentials(username="v", password="pw-4", source="env:EARTHDATA_USERNAME"), HostPolicy())
    assert other["GDAL_HTTP_COOKIEFILE"] != paths["GDAL_HTTP_COOKIEFILE"]  # one cookie file per user
    assert "pw-3" not in paths["GDAL_HTTP_COOKIEFILE"] and "u" not in os.path.basename(paths["GDAL_HTTP_NETRC_FILE"])
    close_gdal_files()
    assert not folder.exists() and gdal_files_folder() is None


def test_private_folder_is_removed_when_the_process_exits(clean_env) -> None:
    import subprocess
    import sys
    from pathlib import Path

    code = ("from core.earthdata import _FILES, Credentials, HostPolicy, gdal_files_folder\n"
            "_FILES.paths(Credentials(username='u', password='pw-5', source='env:EARTHDATA_USERNAME'), HostPolicy())\n"
            "print(gdal_files_folder())\n")
    repo = Path(__file__).resolve().parents[1]
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=repo, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(repo)})
    assert p.returncode == 0, p.stderr
    folder = Path(p.stdout.strip())
    assert folder.name.startswith("agb-earthdata-") and not folder.exists()  # no password file left behind
