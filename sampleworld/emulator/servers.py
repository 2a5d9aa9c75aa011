"""Start and stop the three emulated hosts in this process (one serving thread each, one thread per
connection), plus the loopback control endpoint the subprocess mode uses for stats."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sampleworld.emulator.auth import AuthState
from sampleworld.emulator.base import EmulatorServer
from sampleworld.emulator.config import HOST_KINDS, EmulatorConfig
from sampleworld.emulator.data import DataHandler
from sampleworld.emulator.login import LoginHandler
from sampleworld.emulator.signed import SignedHandler
from sampleworld.emulator.signing import Signer
from sampleworld.emulator.stats import Stats

HANDLERS = {"login": LoginHandler, "data": DataHandler, "signed": SignedHandler}


@dataclass
class App:
    """What the handlers share: the configuration, credentials/sessions, the URL signer and base URLs."""

    config: EmulatorConfig
    auth: AuthState
    signer: Signer
    login_url: str
    data_base_url: str
    signed_base_url: str

    @property
    def redirect_uri(self) -> str:
        """The data host's registered OAuth redirect URI (its ``/login`` endpoint)."""
        return self.data_base_url + "/login"


class RunningHosts:
    """The three servers of one emulator, serving in daemon threads until ``close()``."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.stats = Stats(HOST_KINDS)
        self.servers: dict[str, EmulatorServer] = {}
        try:
            for kind in HOST_KINDS:
                self.servers[kind] = EmulatorServer(kind, (config.address_for(kind), 0), HANDLERS[kind],
                                                    self.stats, config.faults_for(kind),
                                                    config.link_for(kind))
        except OSError:
            self._close_sockets()
            raise
        signed = self.servers["signed"]
        self.app = App(config=config, auth=AuthState(config.users, config.tokens, config.session_ttl_s),
                       signer=Signer(signed.hostport, config.signed_ttl_s),
                       login_url=self.servers["login"].base_url,
                       data_base_url=self.servers["data"].base_url, signed_base_url=signed.base_url)
        self.threads = []
        for kind, srv in self.servers.items():
            srv.app = self.app
            t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1},
                                 name=f"emulator-{kind}", daemon=True)
            t.start()
            self.threads.append(t)

    def urls(self) -> dict[str, Any]:
        """Base URLs and the Earthdata host list (login and data hosts; never the signed host)."""
        return {"login_url": self.app.login_url, "data_base_url": self.app.data_base_url,
                "signed_base_url": self.app.signed_base_url,
                "hosts": [self.servers["login"].hostport, self.servers["data"].hostport]}

    def close(self) -> None:
        """Stop serving and close the listening sockets (open keep-alive connections die with their
        daemon threads or when the client closes them)."""
        for srv in self.servers.values():
            srv.shutdown()
        for t in self.threads:
            t.join(timeout=5)
        self._close_sockets()

    def _close_sockets(self) -> None:
        for srv in self.servers.values():
            srv.server_close()


class _ControlHandler(BaseHTTPRequestHandler):
    """``GET /stats``, ``GET /records[?host=signed]``, ``POST /reset``, ``POST /expire`` (JSON), for the
    subprocess mode."""

    protocol_version = "HTTP/1.1"
    server: Any

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def _json(self, doc: Any, status: int = 200) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        parts = urlsplit(self.path)
        stats: Stats = self.server.stats
        if parts.path == "/stats":
            self._json(stats.snapshot())
        elif parts.path == "/records":
            host = parse_qs(parts.query).get("host", [None])[0]
            self._json(stats.records(host))
        else:
            self._json({"error": "not found"}, 404)

    def do_POST(self) -> None:  # noqa: N802
        path = urlsplit(self.path).path
        if path == "/reset":
            self.server.stats.reset()
            self._json({"reset": True})
        elif path == "/expire":
            self.server.app.signer.expire_all()
            self._json({"expired": True})
        else:
            self._json({"error": "not found"}, 404)


def start_control(hosts: RunningHosts, address: str = "127.0.0.1") -> tuple[ThreadingHTTPServer, str]:
    """Serve the control endpoint of ``hosts`` on ``address`` at a free port in a daemon thread; returns
    (server, base URL)."""
    srv = ThreadingHTTPServer((address, 0), _ControlHandler)
    srv.daemon_threads = True
    srv.stats = hosts.stats  # type: ignore[attr-defined]
    srv.app = hosts.app  # type: ignore[attr-defined]
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, name="emulator-control",
                     daemon=True).start()
    host, port = srv.server_address[:2]
    return srv, f"http://{host}:{port}"
