"""NASA Earthdata Login: which hosts may see credentials, where credentials come from, and GDAL's settings.

One implementation for both readers: GDAL ``/vsicurl/`` (HLS COGs, :func:`gdal_options`) and ``requests``
(GEDI granules, :func:`core.earthdata_http.earthdata_session`). Secrets are never logged, printed or put in
an error message; ``Credentials`` shows only its kind and source.

**Credentials** (first found wins): ``EARTHDATA_TOKEN`` (bearer token), ``EARTHDATA_USERNAME`` +
``EARTHDATA_PASSWORD``, then the netrc file (``$NETRC`` or ``~/.netrc``) entry ``machine
urs.earthdata.nasa.gov`` (or the entry of a host named in ``EARTHDATA_HOSTS``).

**Hosts** (:class:`HostPolicy`): credentials go to ``urs.earthdata.nasa.gov``, hosts under
``.earthdata.nasa.gov`` and ``.earthdatacloud.nasa.gov`` (dot boundary: ``evilnasa.gov`` and
``xearthdata.nasa.gov`` are not), over https only, and to the hosts named in ``EARTHDATA_HOSTS``
(comma-separated ``host`` or ``host:port``; http allowed there, for loopback test hosts). Never to a
pre-signed URL (one carrying an S3/CloudFront signature in its query), whatever its host.

**GDAL files**: the cookie file GDAL needs in both auth modes (GDAL 3.10 loses a bearer header on its
403 fallback paths; the data host's session cookie carries those requests; it is filled once per data host
by a login through requests, see ``_GdalFiles.seed``) and, for a password from the environment, a netrc
file, live in one private folder per process (``mkdtemp``: mode 0700, files 0600, one cookie file per set
of credentials), removed when the process exits or :func:`close_gdal_files` is called. A netrc the user
already has is used in place, never copied.
"""

from __future__ import annotations

import atexit
import hashlib
import netrc
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from core.procs import on_death

URS_HOST = "urs.earthdata.nasa.gov"
EARTHDATA_DOMAINS = (".earthdata.nasa.gov", ".earthdatacloud.nasa.gov")
"""Host suffixes (dot boundary) that may receive credentials over https. ``.earthdatacloud.nasa.gov``
holds the LP DAAC's protected data host (data.lpdaac.earthdatacloud.nasa.gov, where HLS COG hrefs point);
its pre-signed answers go to S3 hosts, which are never included."""
SIGNATURE_PARAMS = frozenset({"x-amz-signature", "x-amz-credential", "x-amz-security-token", "signature",
                              "key-pair-id", "x-goog-signature"})
"""Query parameters that make a URL pre-signed (S3 SigV4, CloudFront, GCS): such a URL is its own
credential and gets no Authorization header (S3 answers 400 "Only one auth mechanism allowed")."""
ENV_VARS = ("EARTHDATA_TOKEN", "EARTHDATA_USERNAME", "EARTHDATA_PASSWORD", "EARTHDATA_HOSTS", "NETRC")


# ------------------------------------------------------------------------------------------- hosts
@dataclass(frozen=True)
class HostPolicy:
    """Which URLs may carry Earthdata credentials. ``extra``: (host, port or None = any port) pairs from
    ``EARTHDATA_HOSTS``; those may use http as well as https."""

    extra: tuple[tuple[str, int | None], ...] = ()

    @classmethod
    def from_env(cls, value: str | None = None) -> HostPolicy:
        """The policy for ``value`` (default: the ``EARTHDATA_HOSTS`` environment variable)."""
        raw = os.environ.get("EARTHDATA_HOSTS", "") if value is None else value
        return cls(tuple(_parse_host(entry) for entry in raw.split(",") if entry.strip()))

    @staticmethod
    def is_signed(url: str) -> bool:
        """True for a pre-signed URL (its query carries a signature)."""
        query = urlsplit(url).query
        return bool(query) and any(k.lower() in SIGNATURE_PARAMS for k, _ in parse_qsl(query))

    def is_listed(self, url: str) -> bool:
        """True when ``url``'s host (and port) is named in ``EARTHDATA_HOSTS``."""
        parts = urlsplit(url)
        host, port = (parts.hostname or "").lower(), _port(parts)
        return any(host == h and (p is None or p == port) for h, p in self.extra)

    def allows(self, url: str) -> bool:
        """True when credentials may be sent with a request for ``url``."""
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if not host or self.is_signed(url):
            return False
        if self.is_listed(url):
            return parts.scheme in ("https", "http")
        return parts.scheme == "https" and (host == URS_HOST or host.endswith(EARTHDATA_DOMAINS))

    def is_login_host(self, url: str) -> bool:
        """True for Earthdata Login itself (``urs.earthdata.nasa.gov`` or ``*.urs.earthdata.nasa.gov``)."""
        host = (urlsplit(url).hostname or "").lower()
        return self.allows(url) and (host == URS_HOST or host.endswith("." + URS_HOST))

    @property
    def netrc_machines(self) -> tuple[str, ...]:
        """netrc machine names holding Earthdata Login credentials: URS, then the listed hosts (curl and
        requests match a netrc entry by host name or address, without the port)."""
        return tuple(dict.fromkeys([URS_HOST, *(h for h, _ in self.extra)]))


def _parse_host(entry: str) -> tuple[str, int | None]:
    entry = entry.strip().lower()
    if "://" in entry or "/" in entry or not entry:
        raise ValueError(f"EARTHDATA_HOSTS: {entry!r} is not a host or host:port (no scheme, no path)")
    host, sep, port = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
    if sep and not port.isdigit():
        raise ValueError(f"EARTHDATA_HOSTS: {entry!r}: the port must be a number")
    return (host, int(port)) if sep else (entry, None)


def _port(parts: Any) -> int:
    try:
        explicit = parts.port
    except ValueError:
        explicit = None
    return explicit or (443 if parts.scheme == "https" else 80)


# ------------------------------------------------------------------------------------- credentials
@dataclass(frozen=True)
class Credentials:
    """Earthdata Login credentials; ``repr``/``str`` never show the secret. ``source``: where they came
    from (``env:EARTHDATA_TOKEN``, ``env:EARTHDATA_USERNAME``, ``netrc:<path>``)."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    source: str = ""

    @property
    def kind(self) -> str:
        """``token`` (bearer) or ``password`` (HTTP Basic to Earthdata Login, then a session cookie)."""
        return "token" if self.token else "password"

    def describe(self) -> str:
        """One line for people: kind, user and source; never the secret."""
        who = f" for user {self.username}" if self.username and self.kind == "password" else ""
        return f"{'bearer token' if self.token else 'user name and password'}{who} from {self.source}"

    def __repr__(self) -> str:
        return f"Credentials(user={self.username or '-'}, kind={self.kind}, source={self.source}, secret=***)"

    __str__ = __repr__

    @property
    def secrets(self) -> tuple[str, ...]:
        """The secret strings (for redaction checks)."""
        return tuple(s for s in (self.password, self.token) if s)


def netrc_file() -> Path:
    """``$NETRC`` when set, else ``~/.netrc``."""
    return Path(os.environ.get("NETRC") or Path.home() / ".netrc")


def earthdata_credentials(netrc_path: str | os.PathLike[str] | None = None,
                          policy: HostPolicy | None = None) -> Credentials | None:
    """Credentials from the environment or the netrc file, or None when there are none."""
    token = os.environ.get("EARTHDATA_TOKEN")
    if token:
        return Credentials(username=os.environ.get("EARTHDATA_USERNAME"), token=token,
                           source="env:EARTHDATA_TOKEN")
    user, pwd = os.environ.get("EARTHDATA_USERNAME"), os.environ.get("EARTHDATA_PASSWORD")
    if user and pwd:
        return Credentials(username=user, password=pwd, source="env:EARTHDATA_USERNAME")
    path = Path(netrc_path) if netrc_path else netrc_file()
    if not path.is_file():
        return None
    try:
        entries = netrc.netrc(str(path))
    except (netrc.NetrcParseError, OSError) as exc:
        raise ValueError(f"{path}: cannot parse the netrc file (line {getattr(exc, 'lineno', '?')})") from None
    for machine in (policy or HostPolicy.from_env()).netrc_machines:
        auth = entries.authenticators(machine)
        if auth and auth[0] and auth[2]:
            return Credentials(username=auth[0], password=auth[2], source=f"netrc:{path}")
    return None


# -------------------------------------------------------------------------------------------- GDAL
REMOTE_OPTIONS: dict[str, str] = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.TIF,.tiff",
    # GDAL's own retries of 429/5xx and resets (delays 0.5, ~1.1, ~2.5 s); what they do not absorb (a body
    # shorter than announced, an open that failed) the readers retry within core.reads.read_policy()
    "GDAL_HTTP_MAX_RETRY": "3",
    "GDAL_HTTP_RETRY_DELAY": "0.5",
    # timeouts of every GDAL HTTP request (s): connect; a stalled transfer (< 1 byte/s for 30 s); a whole request
    "GDAL_HTTP_CONNECTTIMEOUT": "10", "GDAL_HTTP_LOW_SPEED_TIME": "30", "GDAL_HTTP_LOW_SPEED_LIMIT": "1",
    "GDAL_HTTP_TIMEOUT": "120",
    "VSI_CACHE": "FALSE",  # no per-file cache (25 MB each when on); /vsicurl/'s global cache is bounded
    "CPL_VSIL_CURL_CACHE_SIZE": str(16 << 20),  # bytes, one LRU shared by every remote file
}
"""GDAL settings for every remote (``/vsicurl/``) open and read, with or without credentials; each can be
overridden by an environment variable of the same name (a user's or a worker's setting wins)."""
READ_OPTIONS: dict[str, str] = {"GDAL_HTTP_MULTIRANGE": "YES", "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
                                "GDAL_NUM_THREADS": "1"}
"""Added while reading blocks."""


class _GdalFiles:
    """The process's private folder (0700) with one cookie jar per credential set and, for a password from
    the environment, a netrc file (0600). Removed at exit or by :func:`close_gdal_files`."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.folder: Path | None = None
        self.names: dict[str, str] = {}  # fingerprint of the credentials -> random file stem
        self.seeded: dict[tuple[str, str], float] = {}  # (credentials, data host) -> cookie expiry (epoch s)
        self.login_hosts: set[str] = set()  # hosts seen answering /oauth/authorize (EARTHDATA_HOSTS ones)

    def _dir(self) -> Path:
        if self.folder is None or not self.folder.is_dir():
            self.folder = Path(tempfile.mkdtemp(prefix="agb-earthdata-"))  # mode 0700, unique
            on_death(remove=self.folder)  # the cookie jar and netrc go even when the run is killed
            self.names.clear()
            self.seeded.clear()
        return self.folder

    def paths(self, creds: Credentials, policy: HostPolicy) -> dict[str, str]:
        """GDAL file options for ``creds`` (creating the files on first use)."""
        key = _fingerprint(creds, policy)
        with self.lock:
            folder = self._dir()
            stem = self.names.setdefault(key, os.urandom(6).hex())
            jar = folder / f"cookies-{stem}.txt"
            _private_file(jar, "# Netscape HTTP Cookie File\n")
            out = {"GDAL_HTTP_COOKIEFILE": str(jar)}  # read-only for curl: see seed()
            if creds.kind == "password":
                if creds.source.startswith("netrc:"):
                    out["GDAL_HTTP_NETRC_FILE"] = creds.source.split(":", 1)[1]
                else:  # only the login hosts: curl sends a netrc entry's password to its host unasked
                    machines = dict.fromkeys([URS_HOST, *self.login_hosts])
                    text = "".join(f"machine {m} login {creds.username} password {creds.password}\n"
                                   for m in machines)
                    path = folder / f"netrc-{stem}-{len(machines)}"
                    _private_file(path, text)
                    out["GDAL_HTTP_NETRC_FILE"] = str(path)
            return out

    def seed(self, url: str, creds: Credentials, policy: HostPolicy, jar: str) -> None:
        """Log in to ``url``'s data host with requests and write its session cookie to ``jar`` (GDAL's
        ``GDAL_HTTP_COOKIEFILE``, read by every GDAL request; curl never rewrites it, so concurrent
        handles cannot truncate it). GDAL's 403 fallback drops the bearer header and, without the cookie,
        fails at the login host; with a password every handle would log in again. Done once per data
        host, again when the cookie is 5 minutes from expiry. Raises
        :class:`~core.earthdata_http.EarthdataHttpError` when the host refuses the credentials."""
        key = (_fingerprint(creds, policy), urlsplit(url).netloc)
        if self.seeded.get(key, 0.0) > time.time() + 300:
            return
        with self.lock:
            if self.seeded.get(key, 0.0) > time.time() + 300:
                return
            self.seeded[key], logins = _seed_cookie(url, creds, policy, jar)
            self.login_hosts.update(logins)

    def close(self) -> None:
        with self.lock:
            if self.folder is not None:
                shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None
            self.names.clear()
            self.seeded.clear()
            _OPTIONS_CACHE.clear()


def _seed_cookie(url: str, creds: Credentials, policy: HostPolicy, jar: str) -> tuple[float, set[str]]:
    """One authenticated HEAD of ``url`` with requests; its cookies are merged into ``jar`` (written to a
    temporary name, mode 0600, then renamed). Returns the earliest expiry of the new cookies (epoch s) and
    the hosts that answered the login step (``/oauth/authorize``)."""
    from http.cookiejar import LoadError, MozillaCookieJar

    from core.earthdata_http import describe_failure, earthdata_session

    with earthdata_session(creds, policy) as s:
        r = s.head(url, allow_redirects=True, timeout=(10, 60))
        if r.status_code not in (200, 206):
            raise describe_failure(r, url)
        merged = MozillaCookieJar(jar)
        try:
            merged.load(ignore_discard=True, ignore_expires=True)
        except (LoadError, OSError):
            pass
        for cookie in s.cookies:
            merged.set_cookie(cookie)
        expiry = min((c.expires for c in s.cookies if c.expires), default=time.time() + 3600)
        logins = {urlsplit(h.url).hostname or "" for h in r.history
                  if urlsplit(h.url).path.endswith("/oauth/authorize") and policy.allows(h.url)}
    tmp = f"{jar}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.close(fd)
    merged.save(tmp, ignore_discard=True, ignore_expires=True)
    os.replace(tmp, jar)
    return float(expiry), logins - {""}


def _private_file(path: Path, text: str) -> None:
    """Create ``path`` with mode 0600 holding ``text`` (left as it is when it exists)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def _fingerprint(creds: Credentials | None, policy: HostPolicy) -> str:
    """A key for caches: a hash of the credentials and the policy (kept in memory only, never a file name)."""
    parts = [repr(policy)]
    if creds is not None:
        parts += [creds.kind, creds.username or "", creds.source, *creds.secrets]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


_FILES = _GdalFiles()
_OPTIONS_CACHE: dict[tuple[Any, ...], dict[str, str]] = {}
atexit.register(_FILES.close)


def close_gdal_files() -> None:
    """Remove the private folder (cookie jars, netrc copies) now; the next remote open makes a new one."""
    _FILES.close()


def gdal_files_folder() -> Path | None:
    """The private folder in use (None before the first authenticated open or after closing)."""
    return _FILES.folder


def _env_key() -> tuple[Any, ...]:
    key: list[Any] = [os.environ.get(k) for k in (*ENV_VARS, *REMOTE_OPTIONS)]
    try:
        st = netrc_file().stat()
        key += [st.st_mtime_ns, st.st_size]
    except OSError:
        key.append(None)
    return tuple(key)


def gdal_options(href: str, *, for_read: bool = False) -> dict[str, str]:
    """GDAL config options for opening (``for_read=False``) or reading ``href`` (pass to ``rasterio.Env``
    inside each task, so every Dask worker has them). Local paths get none; remote hrefs get
    :data:`REMOTE_OPTIONS`; hrefs on an Earthdata host (:class:`HostPolicy`) also get the credentials of
    this process's environment: bearer header or netrc, plus the private cookie jar."""
    if not href.startswith(("http://", "https://", "/vsicurl/")):
        return {}
    url = href[len("/vsicurl/"):] if href.startswith("/vsicurl/") else href
    policy = HostPolicy.from_env()
    allowed = policy.allows(url)
    key = (_env_key(), urlsplit(url).netloc if allowed else None, for_read)
    cached = _OPTIONS_CACHE.get(key)
    if cached is not None and (not allowed or _FILES.folder is not None):
        return cached
    opts = {k: os.environ.get(k) or v for k, v in REMOTE_OPTIONS.items()}
    if for_read:
        opts.update(READ_OPTIONS)
    creds = earthdata_credentials(policy=policy) if allowed else None
    if creds is not None:
        _FILES.seed(url, creds, policy, _FILES.paths(creds, policy)["GDAL_HTTP_COOKIEFILE"])
        opts.update(_FILES.paths(creds, policy))  # after the login: the netrc names its host
        if creds.token:
            opts["GDAL_HTTP_HEADERS"] = f"Authorization: Bearer {creds.token}"
            opts["GDAL_HTTP_NETRC"] = "NO"
        else:
            opts["GDAL_HTTP_NETRC"] = "YES"
    if len(_OPTIONS_CACHE) > 64:
        _OPTIONS_CACHE.clear()
    _OPTIONS_CACHE[key] = opts
    return opts


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret replaced by ``***`` (a last guard for messages built from server text)."""
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    return text
