"""Pre-signed URLs shaped like S3 SigV4 query-string authentication, and S3's XML error bodies.

The URL carries ``X-Amz-Algorithm=AWS4-HMAC-SHA256``, ``X-Amz-Credential=<key>/<YYYYMMDD>/us-west-2/s3/
aws4_request``, ``X-Amz-Date=<YYYYMMDDTHHMMSSZ>``, ``X-Amz-Expires=<s>``, ``X-Amz-SignedHeaders=host`` and
``X-Amz-Signature=<64 hex>``: GDAL's /vsicurl/ recognises such a URL by ``X-Amz-Signature`` and reuses it
until X-Amz-Date + X-Amz-Expires (when that is more than 10 s after the response's Date header). The
signature is an HMAC-SHA256 over method, host, raw path and the other parameters with the emulator's secret
(not AWS's key derivation: nothing outside the emulator has to verify it). As with SigV4 the method is
signed: a URL signed for GET answers a HEAD with 403 SignatureDoesNotMatch (TEA signs HEAD separately).
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import secrets
import time
import uuid
from dataclasses import dataclass
from urllib.parse import urlencode
from xml.sax.saxutils import escape

ACCESS_KEY_ID = "ASIAEMULATOREXAMPLE0"
REGION = "us-west-2"
SIGNED_PARAMS = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
                 "X-Amz-SignedHeaders")


class Signer:
    """Signs and checks URLs on one signed host (``host`` is its ``address:port``)."""

    def __init__(self, host: str, ttl_s: int, secret: bytes | None = None) -> None:
        self.host = host
        self.ttl_s = int(ttl_s)
        self._secret = secret or secrets.token_bytes(32)
        self._retired: list[bytes] = []

    def _mac(self, method: str, path: str, query: str, secret: bytes | None = None) -> str:
        canon = "\n".join((method.upper(), self.host, path, query))
        return hmac.new(secret or self._secret, canon.encode(), hashlib.sha256).hexdigest()

    def expire_all(self) -> None:
        """Make every URL signed so far answer 403 "Request has expired", as if its time had passed
        (URLs signed afterwards are valid): lets a test exercise re-resolution without waiting."""
        self._retired.append(self._secret)
        self._secret = secrets.token_bytes(32)

    def presign(self, method: str, path: str, now: float | None = None) -> str:
        """``path?query`` valid for ``ttl_s`` seconds from ``now`` (epoch s) for ``method``; ``path`` is
        the raw (%-encoded) URL path, kept as it is."""
        t = time.gmtime(now if now is not None else time.time())
        amz_date = time.strftime("%Y%m%dT%H%M%SZ", t)
        query = urlencode([("X-Amz-Algorithm", "AWS4-HMAC-SHA256"),
                           ("X-Amz-Credential", f"{ACCESS_KEY_ID}/{amz_date[:8]}/{REGION}/s3/aws4_request"),
                           ("X-Amz-Date", amz_date), ("X-Amz-Expires", str(self.ttl_s)),
                           ("X-Amz-SignedHeaders", "host")])
        return f"{path}?{query}&X-Amz-Signature={self._mac(method, path, query)}"

    def check(self, method: str, path: str, query: str, now: float | None = None) -> SignatureCheck:
        """Verify a request's raw path and query string: ``ok``, or the S3 error it deserves. The MAC covers
        the other parameters in the order they were issued (clients do not reorder a URL's query)."""
        pairs = [p.partition("=") for p in query.split("&") if p]
        d = {k: v for k, _, v in pairs}
        if "X-Amz-Signature" not in d or any(p not in d for p in SIGNED_PARAMS):
            return SignatureCheck(False, 403, "AccessDenied", "Access Denied")
        rest = "&".join(f"{k}{eq}{v}" for k, eq, v in pairs if k != "X-Amz-Signature")
        sig = d["X-Amz-Signature"]
        retired = any(hmac.compare_digest(self._mac(method, path, rest, old), sig) for old in self._retired)
        if not retired and not hmac.compare_digest(self._mac(method, path, rest), sig):
            return SignatureCheck(False, 403, "SignatureDoesNotMatch",
                                  "The request signature we calculated does not match the signature "
                                  "you provided. Check your key and signing method.")
        start, expires = _amz_time(d["X-Amz-Date"]), d["X-Amz-Expires"]
        if start is None or not expires.isdigit():
            return SignatureCheck(False, 400, "AuthorizationQueryParametersError",
                                  "X-Amz-Date or X-Amz-Expires is malformed")
        now = time.time() if now is None else now
        if retired or now > start + int(expires):
            extra = {"X-Amz-Expires": expires, "Expires": _iso(start + int(expires)), "ServerTime": _iso(now)}
            return SignatureCheck(False, 403, "AccessDenied", "Request has expired", extra)
        return SignatureCheck(True, 200, "", "")


def _amz_time(v: str) -> int | None:
    """Epoch seconds of ``YYYYMMDDTHHMMSSZ``, or None when malformed."""
    if len(v) != 16 or v[8] != "T" or v[15] != "Z" or not (v[:8] + v[9:15]).isdigit():
        return None
    return calendar.timegm((int(v[:4]), int(v[4:6]), int(v[6:8]), int(v[9:11]), int(v[11:13]),
                            int(v[13:15]), 0, 0, 0))


@dataclass(frozen=True)
class SignatureCheck:
    """Outcome of ``Signer.check``: ``ok`` or the status, S3 error code, message and extra XML fields."""

    ok: bool
    status: int
    code: str
    message: str
    extra: dict[str, str] | None = None


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def s3_error_xml(code: str, message: str, extra: dict[str, str] | None = None) -> bytes:
    """S3's error document: ``<Error><Code/><Message/>...<RequestId/><HostId/></Error>``."""
    fields = [("Code", code), ("Message", message), *(extra or {}).items(),
              ("RequestId", uuid.uuid4().hex[:16].upper()), ("HostId", secrets.token_urlsafe(32))]
    inner = "".join(f"<{k}>{escape(str(v))}</{k}>" for k, v in fields)
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<Error>{inner}</Error>'.encode()


ONE_AUTH_MESSAGE = ("Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature "
                    "query string parameter or the Authorization header should be specified")


def one_auth_error(auth_value: str) -> bytes:
    """S3's 400 InvalidArgument for a signed URL that also carries an Authorization header. S3 echoes the
    header in ``ArgumentValue``; the emulator echoes only its scheme so that a test log never holds it."""
    scheme = auth_value.split(None, 1)[0] if auth_value.strip() else ""
    return s3_error_xml("InvalidArgument", ONE_AUTH_MESSAGE,
                        {"ArgumentName": "Authorization", "ArgumentValue": f"{scheme} <redacted>"})
