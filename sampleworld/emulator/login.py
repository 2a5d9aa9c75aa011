"""The login host: an Earthdata Login (urs.earthdata.nasa.gov) stand-in.

- ``GET|HEAD /oauth/authorize?client_id&redirect_uri&response_type=code&state``: with valid HTTP Basic
  credentials -> 302 to ``redirect_uri?code=<one-time code>&state=<state>``; without or with wrong ones
  -> 401 + ``WWW-Authenticate: Basic realm="..."`` (what URS answers scripts: TEA adds ``app_type=401``
  for non-browser user agents; browsers would get the HTML login form, not emulated). An unknown
  ``client_id`` or a ``redirect_uri`` that is not the data host's ``/login`` -> 400 JSON error.
- ``POST /api/users/find_or_create_token`` with Basic credentials -> 200 JSON
  ``{"access_token", "token_type": "Bearer", "expiration_date"}`` (what earthaccess calls).
"""

from __future__ import annotations

import json
import time
from urllib.parse import quote, urlencode

from sampleworld.emulator.base import BaseHandler, Request, Response

REALM = ("Please enter your Earthdata Login credentials. If you do not have a Earthdata Login, create "
         "one at https://urs.earthdata.nasa.gov//users/new")  # URS's realm as commonly reported (unconfirmed)


def _json(status: int, doc: dict) -> Response:
    return Response(status, [("Content-Type", "application/json; charset=utf-8"),
                             ("Cache-Control", "no-store")], json.dumps(doc).encode())


class LoginHandler(BaseHandler):
    """Routes of the login host (``server.app`` is the emulator's ``App``)."""

    def fault_response(self, status: int) -> Response:
        return Response(status, [("Content-Type", "text/html; charset=utf-8")],
                        f"<html><body><h1>{status}</h1></body></html>\n".encode())

    def _unauthorized(self) -> Response:
        return Response(401, [("Content-Type", "text/html; charset=utf-8"),
                              ("WWW-Authenticate", f'Basic realm="{REALM}"')],
                        b"HTTP Basic: Access denied.\n")

    def route(self, req: Request) -> Response:
        if req.path == "/oauth/authorize" and req.method in ("GET", "HEAD"):
            return self._authorize(req)
        if req.path == "/api/users/find_or_create_token" and req.method == "POST":
            return self._token(req)
        return Response(404, [("Content-Type", "text/plain")], b"Not Found\n")

    def _authorize(self, req: Request) -> Response:
        app = self.server.app
        p = req.params
        if p.get("client_id") != app.config.client_id:
            return _json(400, {"error": "invalid_client", "error_description": "Invalid client_id"})
        if p.get("redirect_uri") != app.redirect_uri or p.get("response_type") != "code":
            return _json(400, {"error": "invalid_request",
                               "error_description": "redirect_uri or response_type does not match the "
                                                    "application's registration"})
        user = app.auth.check_basic(req.headers.get("Authorization"))
        if user is None:
            return self._unauthorized()
        query = {"code": app.auth.new_code(user, p["redirect_uri"])}
        if "state" in p:
            query["state"] = p["state"]
        location = p["redirect_uri"] + "?" + urlencode(query, quote_via=quote)
        return Response(302, [("Location", location), ("Content-Type", "text/html; charset=utf-8"),
                              ("Cache-Control", "no-cache")], b"")

    def _token(self, req: Request) -> Response:
        app = self.server.app
        if app.auth.check_basic(req.headers.get("Authorization")) is None:
            return self._unauthorized()
        expiry = time.strftime("%m/%d/%Y", time.gmtime(time.time() + 60 * 86400))
        return _json(200, {"access_token": app.auth.new_token(), "token_type": "Bearer",
                           "expiration_date": expiry})
