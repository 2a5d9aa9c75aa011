"""The requests side of Earthdata Login: a session that sends credentials only where :class:`HostPolicy`
allows, typed errors that say which host refused what, and ``check_earthdata`` (one authenticated HEAD
per endpoint, for ``python -m flows check-earthdata``).

Why not earthaccess (measured against ``sampleworld.emulator``, see README "Running against NASA"): its
session puts the bearer token in the session's default headers, so a pre-signed URL requested again with
it gets S3's HTTP 400; its user/password login fetches a token from a hard-coded ``https://`` URL; the
extracted ``earthaccess-auth`` needs Python >= 3.12; and neither configures GDAL.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests

from core.contracts import Contract
from core.earthdata import Credentials, HostPolicy, earthdata_credentials


class EarthdataHttpError(OSError):
    """A remote read that failed for an HTTP reason. ``stage``: ``signed`` (the pre-signed URL's host
    refused), ``login`` (Earthdata Login refused the credentials), ``data`` (the protected data host
    answered an error) or ``network``; ``host`` is ``host:port`` (never a URL with a signature)."""

    def __init__(self, message: str, *, url: str, host: str, status: int | None, stage: str) -> None:
        super().__init__(message)
        self.url, self.host, self.status, self.stage = url, host, status, stage


def host_of(url: str) -> str:
    """``host:port`` of a URL (the port only when explicit)."""
    parts = urlsplit(url)
    return parts.netloc.rpartition("@")[2] or "?"


def safe_url(url: str) -> str:
    """``url`` without its query when it is pre-signed (the signature is a credential)."""
    return url.split("?", 1)[0] + "?<signature>" if HostPolicy.is_signed(url) else url


def _basic(creds: Credentials) -> str:
    raw = f"{creds.username}:{creds.password}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


class EarthdataAuth:
    """requests auth: on every request and redirect hop, removes any Authorization header, then adds the
    bearer token (token mode) or HTTP Basic (password mode; only to Earthdata Login, or to an allowed
    host answering 401 with a Basic challenge) when :meth:`HostPolicy.allows` the URL."""

    def __init__(self, creds: Credentials | None, policy: HostPolicy) -> None:
        self.creds, self.policy = creds, policy

    def __call__(self, r: Any) -> Any:
        r.headers.pop("Authorization", None)
        c = self.creds
        if c is None or not self.policy.allows(r.url):
            return r
        if c.token:
            r.headers["Authorization"] = f"Bearer {c.token}"
        elif self.policy.is_login_host(r.url):
            r.headers["Authorization"] = _basic(c)
        if c.kind == "password" and self._challenge not in r.hooks["response"]:
            r.register_hook("response", self._challenge)
        return r

    def _challenge(self, resp: Any, **kwargs: Any) -> Any:
        """Answer a 401 ``WWW-Authenticate: Basic`` of an allowed host once with the credentials."""
        req = resp.request
        if (resp.status_code != 401 or "basic" not in resp.headers.get("WWW-Authenticate", "").lower()
                or not self.policy.allows(req.url) or "Authorization" in req.headers):
            return resp
        resp.content  # noqa: B018 (drain, so the connection is reused)
        resp.close()
        again = req.copy()
        requests.cookies.extract_cookies_to_jar(again._cookies, req, resp.raw)
        again.prepare_cookies(again._cookies)
        again.headers["Authorization"] = _basic(self.creds)  # type: ignore[arg-type]
        new = resp.connection.send(again, **kwargs)
        new.history.append(resp)
        new.request = again
        return new


def earthdata_session(creds: Credentials | None = None, policy: HostPolicy | None = None, *,
                      lookup: bool = True) -> Any:
    """A ``requests.Session`` for Earthdata files. ``creds`` None and ``lookup``: this process's
    credentials (:func:`core.earthdata.earthdata_credentials`). Credentials go only to hosts ``policy``
    allows (default: :meth:`HostPolicy.from_env`), never to a pre-signed URL; requests' own netrc lookup
    (which re-adds ``~/.netrc`` credentials at any host, signed ones included) is off. Cookies (the data
    host's session) are kept in the session."""
    policy = policy or HostPolicy.from_env()
    if creds is None and lookup:
        creds = earthdata_credentials(policy=policy)
    s = EarthdataSession()
    s.auth = EarthdataAuth(creds, policy)
    return s


class EarthdataSession(requests.Session):
    """A session whose every redirect hop is authorised by its ``EarthdataAuth`` alone."""

    def rebuild_auth(self, prepared_request: Any, response: Any) -> None:
        if isinstance(self.auth, EarthdataAuth):
            self.auth(prepared_request)
        else:
            prepared_request.headers.pop("Authorization", None)


def describe_failure(resp: Any, original_url: str) -> EarthdataHttpError:
    """The error for a non-2xx final answer ``resp`` to a request for ``original_url`` (redirects
    followed): which host refused, with what status, in words a user can act on."""
    url = resp.url or original_url
    host, status = host_of(url), resp.status_code
    policy = HostPolicy.from_env()
    if HostPolicy.is_signed(url) or (resp.history and not policy.allows(url)):
        stage, what = "signed", f"signed URL rejected the request: HTTP {status} (host {host})"
        if status == 403 and "expired" in (resp.text or "")[:2000].lower():
            what += ", the URL had expired"
    elif status == 401:
        stage = "login"
        what = (f"Earthdata Login refused the credentials: HTTP 401 (host {host}); check EARTHDATA_TOKEN, "
                "EARTHDATA_USERNAME/PASSWORD or the netrc entry (python -m flows check-earthdata)")
    elif status == 403:
        stage, what = "data", (f"access denied: HTTP 403 (host {host}); accept the data provider's EULA "
                               "and authorise its application in your Earthdata Login profile")
    else:
        stage, what = "data", f"HTTP {status} from {host}"
    return EarthdataHttpError(what, url=original_url, host=host, status=status, stage=stage)


# ------------------------------------------------------------------------------------------- check
@dataclass(frozen=True)
class EndpointCheck(Contract):
    """One authenticated HEAD: ``ok`` when the file answered 200/206 through the whole redirect chain;
    ``hops``: ``"<status> <host>"`` of every answer in order (no URLs, no signatures)."""

    name: str
    url: str
    ok: bool
    status: int | None
    hops: list[str]
    verdict: str


@dataclass(frozen=True)
class EarthdataCheck(Contract):
    """What ``check_earthdata`` found: the credentials (described, never shown), the extra hosts and one
    result per endpoint. ``ok`` when credentials were found and every endpoint answered."""

    credentials: str
    hosts: list[str]
    endpoints: list[EndpointCheck] = field(default_factory=list)
    ok: bool = False


def _check_one(session: Any, name: str, url: str, timeout_s: float) -> EndpointCheck:
    try:
        r = session.head(url, allow_redirects=True, timeout=(10, timeout_s))
    except requests.RequestException as exc:
        return EndpointCheck(name, url, False, None, [], f"unreachable: {type(exc).__name__}")
    hops = [f"{h.status_code} {host_of(h.url)}" for h in [*r.history, r]]
    if r.status_code in (200, 206):
        return EndpointCheck(name, url, True, r.status_code, hops,
                             f"OK: authenticated, the file answered HTTP {r.status_code}")
    return EndpointCheck(name, url, False, r.status_code, hops, str(describe_failure(r, url)))


def check_earthdata(endpoints: Mapping[str, str], *, timeout_s: float = 30.0) -> EarthdataCheck:
    """Find this process's credentials and send one authenticated HEAD to each of ``endpoints``
    (name -> protected file URL), following the Earthdata redirects."""
    policy = HostPolicy.from_env()
    try:
        creds = earthdata_credentials(policy=policy)
    except ValueError as exc:
        return EarthdataCheck(credentials=f"unreadable: {exc}", hosts=[f"{h}:{p or '*'}" for h, p in policy.extra])
    hosts = [f"{h}:{p}" if p else h for h, p in policy.extra]
    if creds is None:
        return EarthdataCheck(credentials="none found (EARTHDATA_TOKEN, EARTHDATA_USERNAME/PASSWORD or a "
                                          f"netrc entry for {' or '.join(policy.netrc_machines)})", hosts=hosts)
    with earthdata_session(creds, policy) as s:
        results = [_check_one(s, name, url, timeout_s) for name, url in endpoints.items()]
    return EarthdataCheck(credentials=creds.describe(), hosts=hosts, endpoints=results,
                          ok=bool(results) and all(e.ok for e in results))
