"""NASA Earthdata Login credentials for HTTPS reads (GDAL and requests). Secrets are never logged.

Looked up in this order: ``EARTHDATA_TOKEN`` (bearer token), ``EARTHDATA_USERNAME`` +
``EARTHDATA_PASSWORD``, then ``~/.netrc`` (or ``$NETRC``) ``machine urs.earthdata.nasa.gov``.
"""

from __future__ import annotations

import netrc
import os
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

URS_HOST = "urs.earthdata.nasa.gov"
EARTHDATA_HOST_SUFFIXES = (".earthdata.nasa.gov", ".earthdatacloud.nasa.gov", "nasa.gov")


@dataclass(frozen=True)
class Credentials:
    """Earthdata Login credentials; ``repr``/``str`` never show the secret."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    source: str = ""

    def __repr__(self) -> str:
        kind = "token" if self.token else "password"
        return f"Credentials(user={self.username or '-'}, kind={kind}, source={self.source}, secret=***)"

    __str__ = __repr__


def earthdata_credentials(netrc_path: str | os.PathLike[str] | None = None) -> Credentials | None:
    """Credentials from the environment or netrc, or None when there are none."""
    token = os.environ.get("EARTHDATA_TOKEN")
    if token:
        return Credentials(username=os.environ.get("EARTHDATA_USERNAME"), token=token, source="env:EARTHDATA_TOKEN")
    user, pwd = os.environ.get("EARTHDATA_USERNAME"), os.environ.get("EARTHDATA_PASSWORD")
    if user and pwd:
        return Credentials(username=user, password=pwd, source="env:EARTHDATA_USERNAME")
    path = Path(netrc_path or os.environ.get("NETRC") or Path.home() / ".netrc")
    if path.is_file():
        try:
            auth = netrc.netrc(str(path)).authenticators(URS_HOST)
        except (netrc.NetrcParseError, OSError) as exc:
            raise ValueError(f"{path}: cannot parse netrc (line {getattr(exc, 'lineno', '?')})") from None
        if auth:
            login, _, password = auth
            return Credentials(username=login, password=password, source=f"netrc:{path}")
    return None


def _private_netrc(creds: Credentials) -> str:
    """A 0600 netrc file holding only the URS entry (for GDAL when credentials came from env)."""
    fd, name = tempfile.mkstemp(prefix="agb-netrc-")
    os.fchmod(fd, stat.S_IRUSR | stat.S_IWUSR)
    with os.fdopen(fd, "w") as fh:
        fh.write(f"machine {URS_HOST} login {creds.username} password {creds.password}\n")
    return name


def gdal_env_options(creds: Credentials | None = None, *, for_read: bool = False) -> dict[str, Any]:
    """GDAL config options for ``/vsicurl/`` reads of Earthdata COGs (pass to ``rasterio.Env``).

    ``for_read=False`` gives the open-time settings; ``for_read=True`` adds the block-read settings.
    Apply them inside each Dask task so every worker has them.
    """
    opts: dict[str, Any] = {
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
        "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.TIF,.tiff",
        "GDAL_HTTP_MAX_RETRY": "5",
        "GDAL_HTTP_RETRY_DELAY": "2",
        # timeouts of every GDAL HTTP request (s): connect; a stalled transfer (< 1 byte/s for 30 s); a whole request
        "GDAL_HTTP_CONNECTTIMEOUT": "10", "GDAL_HTTP_LOW_SPEED_TIME": "30", "GDAL_HTTP_LOW_SPEED_LIMIT": "1",
        "GDAL_HTTP_TIMEOUT": "120",
        "GDAL_HTTP_COOKIEFILE": str(Path(tempfile.gettempdir()) / "agb_urs_cookies"),
        "GDAL_HTTP_COOKIEJAR": str(Path(tempfile.gettempdir()) / "agb_urs_cookies"),
        "VSI_CACHE": "TRUE",
    }
    if for_read:
        opts.update({"GDAL_HTTP_MULTIRANGE": "YES", "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
                     "GDAL_NUM_THREADS": "1"})
    if creds is None:
        return opts
    if creds.token:
        opts["GDAL_HTTP_HEADERS"] = f"Authorization: Bearer {creds.token}"
    else:
        opts["GDAL_HTTP_NETRC"] = "YES"
        if creds.source.startswith("netrc:"):
            opts["GDAL_HTTP_NETRC_FILE"] = creds.source.split(":", 1)[1]
        else:
            opts["GDAL_HTTP_NETRC_FILE"] = _private_netrc(creds)
    return opts


def is_earthdata_url(url: str) -> bool:
    host = urlparse(url).hostname or ""
    return any(host.endswith(s) for s in EARTHDATA_HOST_SUFFIXES)


def requests_session(creds: Credentials | None = None) -> Any:
    """A ``requests.Session`` that authenticates Earthdata redirects (token header or URS basic auth)."""
    import requests

    class _EarthdataSession(requests.Session):
        def rebuild_auth(self, prepared_request: Any, response: Any) -> None:
            # keep auth across the URS redirect chain, drop it for any non-Earthdata host
            host = urlparse(prepared_request.url).hostname or ""
            if "Authorization" in prepared_request.headers and not is_earthdata_url(prepared_request.url):
                del prepared_request.headers["Authorization"]
            elif host == URS_HOST or is_earthdata_url(prepared_request.url):
                super().rebuild_auth(prepared_request, response)

    s = _EarthdataSession()
    if creds is not None:
        if creds.token:
            s.headers["Authorization"] = f"Bearer {creds.token}"
        elif creds.username and creds.password:
            s.auth = (creds.username, creds.password)
    return s
