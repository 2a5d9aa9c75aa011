"""``EarthdataEmulator``: NASA's protected-file flow (Earthdata Login, TEA data host, S3 signed host) on
loopback, in this process (``mode="thread"``, for unit tests) or in a child process (``mode="process"``,
for benchmarks and the demo, so the emulator does not share the GIL with the engine under test)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from core.procs import on_death
from sampleworld.emulator.config import HOST_KINDS, EmulatorConfig, Faults, LinkShape
from sampleworld.emulator.servers import RunningHosts
from sampleworld.emulator.stats import wait_idle

REPO_ROOT = Path(__file__).resolve().parents[2]


class EmulatorError(RuntimeError):
    """The emulator could not start, or its child process failed."""


def _per_host(value: Any, kind_type: type) -> dict[str, Any]:
    """One knob object for every host, or a mapping host kind -> knob object."""
    if value is None:
        return {}
    if isinstance(value, kind_type):
        return {k: value for k in HOST_KINDS}
    return dict(value)


class EarthdataEmulator:
    """Three loopback hosts: login (127.0.0.1), data (127.0.0.2) and signed (127.0.0.3), free ports.

    ``roots`` maps URL prefixes to folders (``{"lp-prod-protected": Path("world/hls")}``); ``faults`` and
    ``link`` are one ``Faults`` / ``LinkShape`` for all hosts or a mapping ``{"data": Faults(...)}``.
    Use as a context manager; URLs are valid inside it."""

    def __init__(self, roots: Mapping[str, str | os.PathLike[str]], *,
                 users: Mapping[str, str] | None = None, tokens: Sequence[str] = ("tok",),
                 signed_ttl_s: int = 3600, faults: Faults | Mapping[str, Faults] | None = None,
                 link: LinkShape | Mapping[str, LinkShape] | None = None, redirect_status: int = 307,
                 login_redirect_status: int = 302, session_ttl_s: int = 3600,
                 head_presign_method: Literal["HEAD", "GET"] = "HEAD",
                 mode: Literal["thread", "process"] = "thread", startup_timeout_s: float = 30.0,
                 stats_file: str | os.PathLike[str] | None = None) -> None:
        cfg = EmulatorConfig(roots={k: str(v) for k, v in roots.items()},
                             users=dict(users or {"user": "password"}), tokens=tuple(tokens),
                             signed_ttl_s=signed_ttl_s, redirect_status=redirect_status,
                             login_redirect_status=login_redirect_status, session_ttl_s=session_ttl_s,
                             head_presign_method=head_presign_method,
                             faults=_per_host(faults, Faults), link=_per_host(link, LinkShape))
        self._init(cfg, mode, startup_timeout_s, stats_file)

    @classmethod
    def from_config(cls, config: EmulatorConfig, *, mode: Literal["thread", "process"] = "thread",
                    startup_timeout_s: float = 30.0,
                    stats_file: str | os.PathLike[str] | None = None) -> EarthdataEmulator:
        """An emulator for an existing ``EmulatorConfig``."""
        self = cls.__new__(cls)
        self._init(config, mode, startup_timeout_s, stats_file)
        return self

    def _init(self, cfg: EmulatorConfig, mode: str, startup_timeout_s: float,
              stats_file: str | os.PathLike[str] | None) -> None:
        if mode not in ("thread", "process"):
            raise ValueError(f"mode must be 'thread' or 'process', got {mode!r}")
        self.config = cfg
        self.mode = mode
        self.startup_timeout_s = startup_timeout_s
        self.stats_file = Path(stats_file) if stats_file else None
        self._hosts: RunningHosts | None = None
        self._proc: subprocess.Popen | None = None
        self._urls: dict[str, Any] | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self) -> EarthdataEmulator:
        """Bind and start the hosts (idempotent)."""
        if self._urls is not None:
            return self
        if self.mode == "thread":
            self._hosts = RunningHosts(self.config)
            self._urls = self._hosts.urls()
        else:
            self._start_process()
        return self

    def close(self) -> None:
        """Stop the hosts; in process mode stop the child (SIGTERM, then SIGKILL after 5 s)."""
        if self._hosts is not None:
            self._hosts.close()
            self._hosts = None
        if self._proc is not None:
            _stop_process(self._proc)
            self._proc = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        self._urls = None

    def __enter__(self) -> EarthdataEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start_process(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="earthdata-emulator-")
        on_death(remove=self._tmp.name)
        cfg_path = Path(self._tmp.name) / "config.json"
        cfg_path.write_text(json.dumps(self.config.to_dict()))
        err_path = Path(self._tmp.name) / "stderr.log"
        cmd = [sys.executable, "-m", "sampleworld.emulator", "serve", "--config", str(cfg_path),
               "--parent-pid", str(os.getpid())]
        if self.stats_file:
            cmd += ["--stats-file", str(self.stats_file)]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
        with open(err_path, "wb") as err:
            self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err,
                                          stdin=subprocess.DEVNULL, env=env)
        line = _read_line(self._proc, self.startup_timeout_s)
        try:
            self._urls = json.loads(line)
        except json.JSONDecodeError:
            _stop_process(self._proc)
            self._proc = None
            tail = err_path.read_text(errors="replace")[-2000:]
            raise EmulatorError(f"the emulator process did not start (first line {line!r}): {tail}") from None

    # --- URLs ------------------------------------------------------------------------------------
    def _u(self, key: str) -> Any:
        if self._urls is None:
            raise EmulatorError("the emulator is not running: use it as a context manager or call start()")
        return self._urls[key]

    @property
    def login_url(self) -> str:
        """Base URL of the login host (``http://127.0.0.1:<port>``)."""
        return self._u("login_url")

    @property
    def data_base_url(self) -> str:
        """Base URL of the protected data host (``http://127.0.0.2:<port>``)."""
        return self._u("data_base_url")

    @property
    def signed_base_url(self) -> str:
        """Base URL of the signed (S3-like) host (``http://127.0.0.3:<port>``)."""
        return self._u("signed_base_url")

    @property
    def hosts(self) -> list[str]:
        """``host:port`` of the login and data hosts: the hosts a client may send credentials to
        (``EARTHDATA_HOSTS``). The signed host is deliberately not in it."""
        return list(self._u("hosts"))

    @property
    def pid(self) -> int | None:
        """The child's process id in process mode, else None."""
        return self._proc.pid if self._proc is not None else None

    def data_url(self, prefix: str, relpath: str) -> str:
        """Protected URL of ``relpath`` under ``prefix`` (as a STAC asset href would carry it)."""
        if prefix not in self.config.roots:
            raise KeyError(f"unknown prefix {prefix!r}; configured: {sorted(self.config.roots)}")
        return f"{self.data_base_url}/{prefix}/{quote(relpath.lstrip('/'))}"

    # --- stats -----------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Counters per host (see ``stats.Stats.snapshot``)."""
        if self._hosts is not None:
            return self._hosts.stats.snapshot()
        return self._control("GET", "/stats")

    def records(self, host: str | None = None) -> list[dict[str, Any]]:
        """Request records (no credentials), optionally of one host kind."""
        if self._hosts is not None:
            return self._hosts.stats.records(host)
        return self._control("GET", "/records" + (f"?host={host}" if host else ""))

    def wait_idle(self, timeout_s: float = 5.0) -> bool:
        """Wait until no request is being answered (a request is counted once its last byte is written,
        which can be just after the client has read it); False on timeout. Call before reading stats."""
        return wait_idle(self.stats, timeout_s)

    def reset_stats(self) -> None:
        """Zero the counters and drop the records."""
        if self._hosts is not None:
            self._hosts.stats.reset()
        else:
            self._control("POST", "/reset")

    def expire_signed_urls(self) -> None:
        """Every pre-signed URL handed out so far answers 403 "Request has expired" from now on (as if its
        X-Amz-Expires had passed); new redirects are valid. Exercises re-resolution without waiting."""
        if self._hosts is not None:
            self._hosts.app.signer.expire_all()
        else:
            self._control("POST", "/expire")

    def new_token(self) -> str:
        """A fresh valid bearer token (thread mode; in process mode use the login host's
        ``POST /api/users/find_or_create_token``)."""
        if self._hosts is None:
            raise EmulatorError("new_token() needs mode='thread'")
        return self._hosts.app.auth.new_token()

    @property
    def stats_url(self) -> str | None:
        """Loopback URL of the child's control endpoint (process mode), else None."""
        return self._urls.get("stats_url") if self._urls else None

    def _control(self, method: str, path: str) -> Any:
        req = urllib.request.Request(self._u("stats_url") + path, method=method,
                                     data=b"" if method == "POST" else None)
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())


def _read_line(proc: subprocess.Popen, timeout_s: float) -> str:
    """The child's first stdout line, or "" when it exits or stays silent for ``timeout_s``."""
    box: list[bytes] = []
    t = threading.Thread(target=lambda: box.append(proc.stdout.readline()), daemon=True)
    t.start()
    t.join(timeout_s)
    return box[0].decode(errors="replace").strip() if box else ""


def _stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    if proc.stdout is not None:
        proc.stdout.close()
