"""``FaultProxy``: a loopback reverse proxy in front of a STAC API (``rustac serve``, stac-fastapi, ...)
that injects the emulator's faults plus two of CMR-STAC's: a repeated page (a paging request answered
with the previous search page's body) and an HTML error page instead of JSON (a load balancer's 502, or a
200 maintenance page). JSON bodies have every ``href`` under the upstream URL rewritten to the proxy, so
``links`` (next pages included) lead back through the proxy.

A request counts as paging when its query or JSON body has one of ``PAGING_KEYS`` (rustac pages with
``skip``, CMR-STAC with ``page``/``cursor``/``search_after``, others with ``token``/``next``).
"""

from __future__ import annotations

import http.client
import json
import threading
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from sampleworld.emulator.base import HTTP_FAULTS, BaseHandler, EmulatorServer, Request, Response
from sampleworld.emulator.config import Faults, LinkShape
from sampleworld.emulator.stats import Stats, wait_idle

PAGING_KEYS = frozenset({"skip", "page", "token", "cursor", "next", "search_after", "searchAfter"})
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
                        "trailer", "transfer-encoding", "upgrade", "host", "content-length",
                        "accept-encoding", "content-encoding"})
LB_502 = (b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad "
          b"Gateway</h1></center>\r\n</body>\r\n</html>\r\n")
MAINTENANCE_200 = (b"<!DOCTYPE html><html><head><title>Service Maintenance</title></head><body><h1>The "
                   b"service is temporarily unavailable</h1><p>Please try again later.</p></body></html>\n")


def is_paging(req: Request) -> bool:
    """True when the request asks for a page after the first one."""
    if any(k in PAGING_KEYS for k, _ in parse_qsl(req.query)):
        return True
    if req.body and "json" in (req.headers.get("Content-Type") or ""):
        try:
            doc = json.loads(req.body)
        except ValueError:
            return False
        return isinstance(doc, dict) and any(k in PAGING_KEYS for k in doc)
    return False


def rewrite_hrefs(doc: Any, old: str, new: str) -> Any:
    """``doc`` with every ``"href"`` string starting with ``old`` re-rooted at ``new`` (recursively)."""
    if isinstance(doc, dict):
        out = {k: rewrite_hrefs(v, old, new) for k, v in doc.items()}
        href = out.get("href")
        if isinstance(href, str) and href.startswith(old) and href[len(old):len(old) + 1] in ("", "/", "?"):
            out["href"] = new + href[len(old):]
        return out
    if isinstance(doc, list):
        return [rewrite_hrefs(v, old, new) for v in doc]
    return doc


class _ProxyHandler(BaseHandler):
    allowed_faults = HTTP_FAULTS | {"repeat_page", "html_error"}
    server: EmulatorServer

    def fault_response(self, status: int) -> Response:
        if status == 502:
            return Response(502, [("Content-Type", "text/html")], LB_502)
        doc = {"code": status, "description": "injected fault"}
        return Response(status, [("Content-Type", "application/json")], json.dumps(doc).encode())

    def special_fault(self, req: Request, fault: str) -> Response | None:
        proxy: FaultProxy = self.server.app
        if fault == "html_error":
            status = proxy.faults.html_status
            return Response(status, [("Content-Type", "text/html")], LB_502 if status == 502 else
                            MAINTENANCE_200)
        if fault == "repeat_page" and is_paging(req):
            prev = proxy.last_page
            if prev is not None:
                return Response(200, [("Content-Type", prev[0])], prev[1])
        return None

    def route(self, req: Request) -> Response:
        proxy: FaultProxy = self.server.app
        status, headers, body = proxy.forward(req)
        ctype = next((v for k, v in headers if k.lower() == "content-type"), "")
        if "json" in ctype and body:
            try:
                doc = json.loads(body)
            except ValueError:
                doc = None
            if doc is not None:
                body = json.dumps(rewrite_hrefs(doc, proxy.upstream_url, proxy.url)).encode()
                if status == 200 and isinstance(doc, dict) and doc.get("type") == "FeatureCollection":
                    proxy.last_page = (ctype, body)
        return Response(status, headers, body)


class FaultProxy:
    """Reverse proxy to ``upstream_url`` on ``address`` (free port) with ``faults`` and ``link``.
    Context manager; ``url`` is the proxy's equivalent of ``upstream_url``; ``stats()`` counts requests
    (host name ``stac``)."""

    def __init__(self, upstream_url: str, faults: Faults | None = None, link: LinkShape | None = None,
                 *, address: str = "127.0.0.1", timeout_s: float = 30.0) -> None:
        self.upstream_url = upstream_url.rstrip("/")
        parts = urlsplit(self.upstream_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"FaultProxy: upstream must be an http:// URL, got {upstream_url!r}")
        self._up_host, self._up_port, self._up_path = parts.hostname, parts.port or 80, parts.path
        self.faults = faults or Faults()
        self.link = link or LinkShape()
        self.timeout_s = timeout_s
        self._stats = Stats(("stac",))
        self._address = address
        self._server: EmulatorServer | None = None
        self._local = threading.local()
        self.last_page: tuple[str, bytes] | None = None

    def __enter__(self) -> FaultProxy:
        srv = EmulatorServer("stac", (self._address, 0), _ProxyHandler, self._stats, self.faults, self.link)
        srv.app = self
        self._server = srv
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, name="stac-fault-proxy",
                         daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        """The proxy's URL standing for ``upstream_url`` (same path suffix)."""
        if self._server is None:
            raise RuntimeError("FaultProxy is not running: use it as a context manager")
        return self._server.base_url + self._up_path

    def stats(self) -> dict[str, Any]:
        """Counters of the proxy (host ``stac``), as ``EarthdataEmulator.stats``."""
        return self._stats.snapshot()

    def wait_idle(self, timeout_s: float = 5.0) -> bool:
        """Wait until no request is being answered; False on timeout."""
        return wait_idle(self.stats, timeout_s)

    def records(self) -> list[dict[str, Any]]:
        return self._stats.records()

    def forward(self, req: Request) -> tuple[int, list[tuple[str, str]], bytes]:
        """Send ``req`` upstream (one keep-alive connection per thread, one retry on a stale one)."""
        target = req.path + ("?" + req.query if req.query else "")  # the proxy keeps upstream's paths
        headers = {k: v for k, v in req.headers.items() if k.lower() not in HOP_BY_HOP}
        headers["Accept-Encoding"] = "identity"
        for attempt in (0, 1):
            conn = self._conn(fresh=attempt == 1)
            try:
                conn.request(req.method, target, body=req.body or None, headers=headers)
                r = conn.getresponse()
                body = r.read()
                out = [(k, v) for k, v in r.getheaders() if k.lower() not in HOP_BY_HOP]
                return r.status, out, body
            except (http.client.HTTPException, ConnectionError):
                if attempt == 1:
                    raise
        raise AssertionError("unreachable")

    def _conn(self, fresh: bool) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None or fresh:
            if conn is not None:
                conn.close()
            conn = http.client.HTTPConnection(self._up_host, self._up_port, timeout=self.timeout_s)
            self._local.conn = conn
        return conn
