"""The protected data host: a stand-in for TEA (NASA's Thin Egress App) at data.lpdaac.earthdatacloud.
nasa.gov / data.ornldaac.earthdata.nasa.gov. One server serves every configured prefix
(``/lp-prod-protected/...``, ``/ornl-cumulus-prod-protected/...``). GET and HEAD behave alike.

For ``/<prefix>/<key>`` (checks in TEA's order):
1. unknown prefix -> 404 (before any authentication, as TEA checks its bucket map first);
2. the ``asf-urs`` session cookie, when valid, authenticates; else an ``Authorization: Bearer`` header:
   valid token -> authenticated (and the cookie is set, as TEA does), unknown token -> 401 JSON;
   a one-word Authorization header -> 400 JSON; no header (or Basic) -> 302 to the login host's
   ``/oauth/authorize?client_id&response_type=code&redirect_uri=<data>/login&state=<path>`` (+
   ``app_type=401`` for non-browser user agents, as TEA does);
3. missing key -> 404; a Range starting beyond the end -> 416 (TEA HEADs the object with the range);
4. otherwise ``redirect_status`` (307 by default) to a URL on the signed host pre-signed for the request's
   method (a HEAD's for ``head_presign_method``: HEAD as TEA does, or GET), with
   ``Cache-Control: private, max-age=<ttl - 60>`` as TEA sends.

``/login?code&state`` redeems the code, sets ``asf-urs=<random>; Expires=...; Path=/`` and redirects
(``login_redirect_status``) to ``state`` (a path on this host).
"""

from __future__ import annotations

import json
from email.utils import formatdate
from urllib.parse import quote_plus

from sampleworld.emulator.auth import COOKIE_NAME
from sampleworld.emulator.base import BaseHandler, Request, Response
from sampleworld.emulator.files import parse_range, resolve


def _json(status: int, doc: dict, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(status, [("Content-Type", "application/json"), *(headers or [])],
                    json.dumps(doc).encode())


def _html(status: int, title: str) -> Response:
    body = f"<html><head><title>{title}</title></head><body><h1>{title}</h1></body></html>\n"
    return Response(status, [("Content-Type", "text/html")], body.encode())


def _cookie(name: str, header: str | None) -> str | None:
    for part in (header or "").split(";"):
        k, _, v = part.strip().partition("=")
        if k == name:
            return v
    return None


class DataHandler(BaseHandler):
    """Routes of the data host (``server.app`` is the emulator's ``App``)."""

    def fault_response(self, status: int) -> Response:
        return _html(status, {502: "Bad Gateway", 503: "Service Unavailable",
                              429: "Too Many Requests"}.get(status, "Internal Server Error"))

    def route(self, req: Request) -> Response:
        if req.method not in ("GET", "HEAD"):
            return _json(405, {"status_code": 405, "error_description": "Method Not Allowed"})
        if req.path == "/login":
            return self._login(req)
        app = self.server.app
        prefix, path = resolve(app.config.roots, req.path)
        if not prefix:
            return _html(404, "File not found")
        user, denial, set_cookie = self._authenticate(req)
        if user is None:
            return denial
        extra = [set_cookie] if set_cookie else []
        if path is None:
            return _html(404, "Could not find requested data.")
        if parse_range(req.headers.get("Range"), path.stat().st_size) == "unsatisfiable":
            return Response(416, [("Content-Type", "text/plain"), *extra], b"Invalid Range")
        method = app.config.head_presign_method if req.method == "HEAD" else req.method
        signed = app.signer.presign(method, req.path)
        max_age = max(0, app.config.signed_ttl_s - 60)
        hdrs = [("Location", app.signed_base_url + signed), ("Cache-Control", f"private, max-age={max_age}"),
                *extra]
        return Response(app.config.redirect_status, hdrs)

    def _authenticate(self, req: Request) -> tuple[str | None, Response, tuple[str, str] | None]:
        """(user, response when refused, Set-Cookie header to add when a token was used)."""
        app = self.server.app
        cookie = _cookie(COOKIE_NAME, req.headers.get("Cookie"))
        user = app.auth.session_user(cookie) if cookie else None
        if user is not None:
            return user, Response(200), None
        auth = req.headers.get("Authorization")
        if auth is None:
            return None, self._to_login(req), None
        parts = auth.split()
        if len(parts) < 2:
            return None, _json(400, {"status_code": 400,
                                     "error_description": "Malformed Authorization header"}), None
        if parts[0].lower() != "bearer":
            return None, self._to_login(req), None
        if not app.auth.token_valid(parts[1]):
            return None, _json(401, {"error": "invalid_token",
                                     "error_description": "The token is either malformed or expired"}), None
        return "token-user", Response(200), self._set_cookie("token-user")

    def _set_cookie(self, user: str) -> tuple[str, str]:
        value, expires = self.server.app.auth.new_session(user)
        return ("Set-Cookie", f"{COOKIE_NAME}={value}; Expires={formatdate(expires, usegmt=True)}; Path=/")

    def _to_login(self, req: Request) -> Response:
        app = self.server.app
        url = (f"{app.login_url}/oauth/authorize?client_id={app.config.client_id}&response_type=code"
               f"&redirect_uri={app.redirect_uri}&state={quote_plus(req.path)}")
        if not (req.headers.get("User-Agent") or "").startswith("Mozilla"):
            url += "&app_type=401"
        return Response(302, [("Location", url)])

    def _login(self, req: Request) -> Response:
        app = self.server.app
        p = req.params
        if "error" in p:
            status = 401 if p["error"] == "access_denied" else 400
            return _html(status, "Could Not Login")
        user = app.auth.redeem_code(p.get("code", ""))
        if user is None:
            return _html(400, "Could Not Login: there was a problem talking to URS Login")
        target = p.get("state") or "/"
        if not target.startswith("/"):
            target = "/" + target
        return Response(app.config.login_redirect_status, [("Location", target), self._set_cookie(user)])

