"""The HTTP/1.1 machinery shared by every emulated host: a threaded keep-alive server, a request handler
that routes to ``route(req) -> Response``, injects the host's seeded faults, applies its link shape
(latency, token buckets), sends file ranges with ``socket.sendfile`` when unshaped, and records every
request in the shared ``Stats`` (without credentials).
"""

from __future__ import annotations

import os
import select
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from sampleworld.emulator.config import Faults, LinkShape
from sampleworld.emulator.link import FaultDraw, Shaper, TokenBucket
from sampleworld.emulator.stats import RequestRecord, Stats, auth_scheme, cookie_names

HTTP_FAULTS = frozenset({"error_5xx", "throttle_429", "reset_before", "reset_mid", "truncate", "slow"})
"""Faults every host injects; the STAC proxy adds ``repeat_page`` and ``html_error``."""


@dataclass
class Request:
    """A parsed request: ``path`` is the raw (still %-encoded) path, ``query`` the raw query string."""

    method: str
    path: str
    query: str
    headers: Message
    body: bytes = b""

    @property
    def params(self) -> dict[str, str]:
        """Query parameters (last value wins)."""
        return dict(parse_qsl(self.query, keep_blank_values=True))


@dataclass
class Response:
    """What a route answers: a status, headers, and either ``body`` or ``length`` bytes of ``file`` from
    ``offset``. ``Content-Length`` is added by the sender; HEAD sends the same headers and no body."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    file: Path | None = None
    offset: int = 0
    length: int = 0

    @property
    def body_length(self) -> int:
        return self.length if self.file is not None else len(self.body)


class EmulatorServer(ThreadingHTTPServer):
    """One emulated host: threaded (daemon threads), deep listen backlog, its own faults and link."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 1024
    app: Any = None  # the emulator's shared state (servers.App), set once every host is bound

    def __init__(self, kind: str, address: tuple[str, int], handler: type[BaseHTTPRequestHandler],
                 stats: Stats, faults: Faults, link: LinkShape) -> None:
        self.kind = kind
        self.stats = stats
        self.faults = FaultDraw(faults, kind)
        self.link = link
        self.shaper = Shaper(link.conn_bytes_per_s, link.total_bytes_per_s, link.burst_bytes)
        super().__init__(address, handler)

    def handle_error(self, request: object, client_address: object) -> None:
        """Clients that drop or reset a connection are routine here (faults, timeouts): stay quiet."""
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def hostport(self) -> str:
        host, port = self.server_address[:2]
        return f"{host}:{port}"


class BaseHandler(BaseHTTPRequestHandler):
    """Keep-alive HTTP/1.1 handler; subclasses implement ``route``."""

    protocol_version = "HTTP/1.1"
    server_version = "EarthdataEmulator"
    sys_version = ""
    timeout = 120  # seconds an idle keep-alive connection is kept
    allowed_faults: frozenset[str] = HTTP_FAULTS
    server: EmulatorServer

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._bucket: TokenBucket | None = self.server.shaper.connection_bucket()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (signature of the base)
        pass

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch()

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch()

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch()

    def route(self, req: Request) -> Response:
        raise NotImplementedError

    def fault_response(self, status: int) -> Response:
        """The body of an injected 5xx (subclasses answer in their host's dialect)."""
        return Response(status, [("Content-Type", "text/plain")], f"HTTP {status} (injected)\n".encode())

    def _read_request(self) -> Request:
        parts = urlsplit(self.path)
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n > 0 else b""
        return Request(self.command, parts.path, parts.query, self.headers, body)

    def _dispatch(self) -> None:
        t0 = time.monotonic()
        self.server.stats.begin()
        try:
            req = self._read_request()
        except (OSError, ValueError):
            req = Request(self.command, urlsplit(self.path).path, "", self.headers)
            self._record(req, 0, 0, 0, None, time.monotonic() - t0)
            self.close_connection = True
            return
        fault, v = self.server.faults.draw(self.allowed_faults)
        if self.server.link.latency_s:
            time.sleep(self.server.link.latency_s)
        if fault == "slow":
            time.sleep(self.server.faults.faults.slow_s)
        status = 0
        self._sent = [0, 0]  # bytes written: all, body
        try:
            if fault == "reset_before":
                self._reset()
            else:
                resp, fault = self._answer(req, fault, v)
                status = resp.status
                self._send(req, resp, fault)
        except (ConnectionError, TimeoutError, OSError):
            self.close_connection = True
        finally:
            self._record(req, status, self._sent[0], self._sent[1], fault, time.monotonic() - t0)

    def special_fault(self, req: Request, fault: str) -> Response | None:
        """The answer for a host-specific fault (None: the fault does not apply to this request)."""
        return None

    def _answer(self, req: Request, fault: str | None, v: float) -> tuple[Response, str | None]:
        """The response and the fault actually applied."""
        f = self.server.faults.faults
        if fault == "error_5xx":
            return self.fault_response(f.statuses_5xx[int(v * len(f.statuses_5xx))]), fault
        if fault == "throttle_429":
            resp = self.fault_response(429)
            resp.headers.append(("Retry-After", str(int(f.retry_after_s))))
            return resp, fault
        try:
            if fault is not None and fault not in HTTP_FAULTS:
                special = self.special_fault(req, fault)
                if special is not None:
                    return special, fault
                fault = None
            return self.route(req), fault
        except Exception as exc:  # a bug in a route must not kill the connection thread silently
            body = f"emulator error: {exc!r}\n".encode()
            return Response(500, [("Content-Type", "text/plain")], body), fault

    def _header_bytes(self, resp: Response) -> bytes:
        reason = self.responses.get(resp.status, ("",))[0]
        lines = [f"HTTP/1.1 {resp.status} {reason}", f"Server: {self.server_version}",
                 f"Date: {self.date_time_string()}"]
        lines += [f"{k}: {v}" for k, v in resp.headers]
        lines.append(f"Content-Length: {resp.body_length}")
        if self.close_connection:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _send(self, req: Request, resp: Response, fault: str | None) -> None:
        """Write ``resp`` (headers, then body unless HEAD), applying truncate/reset_mid and the link shape;
        ``self._sent`` counts what was written."""
        self._write(self._header_bytes(resp), body=False)
        n = resp.body_length if req.method != "HEAD" else 0
        cut = fault in ("truncate", "reset_mid") and n > 0
        if cut:
            n = int(n * self.server.faults.faults.truncate_fraction)
        if resp.file is not None:
            self._send_file(resp.file, resp.offset, n)
        else:
            self._write(resp.body[:n])
        if cut:
            if fault == "reset_mid":
                self._reset()
            else:
                self.close_connection = True

    def _count(self, n: int, body: bool) -> None:
        self._sent[0] += n
        if body:
            self._sent[1] += n

    def _write(self, data: bytes | memoryview, body: bool = True) -> None:
        shaper = self.server.shaper
        if not shaper.active:
            self.wfile.write(data)
            self._count(len(data), body)
            return
        view = memoryview(data)
        for i in range(0, len(view), shaper.chunk):
            piece = view[i:i + shaper.chunk]
            shaper.take(self._bucket, len(piece))
            self.wfile.write(piece)
            self._count(len(piece), body)

    def _send_file(self, path: Path, offset: int, count: int) -> None:
        if count <= 0:
            return
        if not self.server.shaper.active:
            fd = os.open(path, os.O_RDONLY)
            try:
                self._sendfile(fd, offset, count)
            finally:
                os.close(fd)
            return
        with open(path, "rb") as fh:
            fh.seek(offset)
            left = count
            while left > 0:
                data = fh.read(min(left, self.server.shaper.chunk))
                if not data:
                    raise ConnectionError(f"{path} shrank while being served")
                self._write(data)
                left -= len(data)

    def _sendfile(self, fd: int, offset: int, count: int) -> None:
        """Zero-copy ``os.sendfile`` loop (the socket is non-blocking under its timeout: wait with select)."""
        sock = self.connection
        done = 0
        while done < count:
            try:
                n = os.sendfile(sock.fileno(), fd, offset + done, count - done)
            except BlockingIOError:
                if not select.select([], [sock], [], self.timeout)[1]:
                    raise TimeoutError("client stopped reading") from None
                continue
            if n == 0:
                raise ConnectionError("file ended early")
            done += n
            self._count(n, True)

    def _reset(self) -> None:
        """Abort the connection with a TCP RST (SO_LINGER 0, then close)."""
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass

    def _record(self, req: Request, status: int, sent: int, body_sent: int, fault: str | None,
                dt: float) -> None:
        keys = tuple(sorted({p.partition("=")[0] for p in req.query.split("&") if p}))
        rec = RequestRecord(t=time.time(), host=self.server.kind, method=req.method, path=req.path,
                            query_keys=keys, status=status, bytes_sent=sent,
                            auth_scheme=auth_scheme(req.headers.get("Authorization")),
                            cookie_names=cookie_names(req.headers.get("Cookie")),
                            range=req.headers.get("Range"), fault=fault, duration_s=dt)
        self.server.stats.add(rec, body_sent)

