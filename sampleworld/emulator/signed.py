"""The signed host: an S3 / CloudFront stand-in serving pre-signed URLs with byte ranges.

Order of checks, as S3 does them: an ``Authorization`` header next to a query signature -> 400
InvalidArgument "Only one auth mechanism allowed" (any Authorization header, whatever the query);
a missing, altered or wrong-method signature -> 403 SignatureDoesNotMatch / AccessDenied; an expired URL
-> 403 AccessDenied "Request has expired"; an unknown key -> 404 NoSuchKey; a range starting at or after
the end -> 416 InvalidRange; one satisfiable range -> 206 + Content-Range; none, an unparsable one or
several ranges -> 200 with the whole object (S3 serves no multi-range responses).
"""

from __future__ import annotations

import secrets

from sampleworld.emulator.base import BaseHandler, Request, Response
from sampleworld.emulator.files import ByteRange, object_info, parse_range, resolve
from sampleworld.emulator.signing import one_auth_error, s3_error_xml

OBJECT_TYPE = "binary/octet-stream"  # S3's type for objects stored without one (assumed for DAAC COGs)


class SignedHandler(BaseHandler):
    """Routes of the signed host (``server.signer`` and ``server.roots`` are set by the emulator)."""

    def _s3_headers(self) -> list[tuple[str, str]]:
        return [("x-amz-request-id", secrets.token_hex(8).upper())]

    def _error(self, status: int, code: str, message: str, extra: dict[str, str] | None = None,
               headers: list[tuple[str, str]] | None = None) -> Response:
        hdrs = [("Content-Type", "application/xml"), *self._s3_headers(), *(headers or [])]
        return Response(status, hdrs, s3_error_xml(code, message, extra))

    def fault_response(self, status: int) -> Response:
        if status == 503:
            return self._error(503, "SlowDown", "Please reduce your request rate.")
        if status == 429:
            return self._error(429, "SlowDown", "Please reduce your request rate.")
        return self._error(status, "InternalError", "We encountered an internal error. Please try again.")

    def route(self, req: Request) -> Response:
        if req.method not in ("GET", "HEAD"):
            return self._error(405, "MethodNotAllowed", "The specified method is not allowed against "
                                                        "this resource.")
        auth = req.headers.get("Authorization")
        if auth is not None:
            return Response(400, [("Content-Type", "application/xml"), *self._s3_headers()],
                            one_auth_error(auth))
        app = self.server.app
        check = app.signer.check(req.method, req.path, req.query)
        if not check.ok:
            return self._error(check.status, check.code, check.message, check.extra)
        _, path = resolve(app.config.roots, req.path)
        if path is None:
            return self._error(404, "NoSuchKey", "The specified key does not exist.",
                               {"Key": req.path.lstrip("/")})
        size, obj_headers = object_info(path)
        rng = parse_range(req.headers.get("Range"), size)
        if rng == "unsatisfiable":
            return self._error(416, "InvalidRange", "The requested range is not satisfiable",
                               {"RangeRequested": req.headers.get("Range", ""),
                                "ActualObjectSize": str(size)},
                               [("Content-Range", f"bytes */{size}")])
        hdrs = [("Content-Type", OBJECT_TYPE), *obj_headers, *self._s3_headers()]
        if isinstance(rng, ByteRange):
            hdrs.append(("Content-Range", rng.content_range))
            return Response(206, hdrs, file=path, offset=rng.start, length=rng.length)
        return Response(200, hdrs, file=path, offset=0, length=size)
