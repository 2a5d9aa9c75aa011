"""Request log and counters of the emulated hosts. Credentials never enter it: of an ``Authorization``
header only the scheme (``Bearer``/``Basic``/...) is kept, of cookies only their names, and paths are
logged without their query string (which holds codes and signatures); only query parameter NAMES are kept.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class RequestRecord:
    """One answered (or deliberately dropped) request. ``auth_scheme``: scheme of the Authorization header
    or None; ``cookie_names``: names of the cookies sent; ``status``: 0 when the connection was reset
    before any answer; ``bytes_sent``: response bytes written (headers + body); ``fault``: the injected
    fault or None; ``duration_s``: wall time from request line to the last byte."""

    t: float
    host: str
    method: str
    path: str
    query_keys: tuple[str, ...]
    status: int
    bytes_sent: int
    auth_scheme: str | None
    cookie_names: tuple[str, ...]
    range: str | None
    fault: str | None
    duration_s: float


@dataclass
class HostCounters:
    """Running totals of one host (see ``Stats.snapshot`` for the JSON form)."""

    requests: int = 0
    bytes_sent: int = 0
    body_bytes: int = 0
    statuses: Counter = field(default_factory=Counter)
    methods: Counter = field(default_factory=Counter)
    faults: Counter = field(default_factory=Counter)
    with_authorization: int = 0
    auth_schemes: Counter = field(default_factory=Counter)
    with_cookie: int = 0


class Stats:
    """Thread-safe counters per host plus the last ``max_records`` request records."""

    def __init__(self, hosts: tuple[str, ...], max_records: int = 100_000) -> None:
        self._lock = threading.Lock()
        self._hosts = hosts
        self._max = max_records
        self.reset()

    def reset(self) -> None:
        """Forget all counts and records (e.g. between a warm-up and a measured run)."""
        with self._lock:
            self._counters = {h: HostCounters() for h in self._hosts}
            self._records: deque[RequestRecord] = deque(maxlen=self._max)
            self._t0 = time.time()
            self._in_flight = getattr(self, "_in_flight", 0)

    def begin(self) -> None:
        """A request is being answered (``add`` ends it)."""
        with self._lock:
            self._in_flight += 1

    def add(self, rec: RequestRecord, body_bytes: int) -> None:
        with self._lock:
            self._in_flight -= 1
            c = self._counters.setdefault(rec.host, HostCounters())
            c.requests += 1
            c.bytes_sent += rec.bytes_sent
            c.body_bytes += body_bytes
            c.statuses[str(rec.status)] += 1
            c.methods[rec.method] += 1
            if rec.fault:
                c.faults[rec.fault] += 1
            if rec.auth_scheme:
                c.with_authorization += 1
                c.auth_schemes[rec.auth_scheme] += 1
            if rec.cookie_names:
                c.with_cookie += 1
            self._records.append(rec)

    def snapshot(self) -> dict[str, Any]:
        """JSON-able counters: ``{"since": epoch s, "in_flight": requests being answered, "hosts": {host:
        {requests, bytes_sent, body_bytes, statuses{code: n}, methods, faults, with_authorization,
        auth_schemes, with_cookie}}}``. A request is counted when its last byte is written."""
        with self._lock:
            hosts = {}
            for h, c in self._counters.items():
                d = asdict(c)
                for k in ("statuses", "methods", "faults", "auth_schemes"):
                    d[k] = dict(getattr(c, k))
                hosts[h] = d
            return {"since": self._t0, "in_flight": self._in_flight, "hosts": hosts}

    def records(self, host: str | None = None) -> list[dict[str, Any]]:
        """The kept request records (oldest first), optionally of one host, as dicts."""
        with self._lock:
            recs = [r for r in self._records if host is None or r.host == host]
        return [asdict(r) for r in recs]


def auth_scheme(value: str | None) -> str | None:
    """The scheme word of an Authorization header value, never the credential ("" -> "malformed")."""
    if value is None:
        return None
    parts = value.split(None, 1)
    return parts[0].capitalize() if parts else "malformed"


def cookie_names(value: str | None) -> tuple[str, ...]:
    """Names (not values) of the cookies in a Cookie header."""
    if not value:
        return ()
    return tuple(sorted({p.split("=", 1)[0].strip() for p in value.split(";") if p.strip()}))


def wait_idle(snapshot: Callable[[], dict[str, Any]], timeout_s: float) -> bool:
    """Poll ``snapshot()`` until no request is in flight; False on timeout."""
    deadline = time.monotonic() + timeout_s
    while snapshot()["in_flight"] > 0:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True
