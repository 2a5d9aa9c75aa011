"""Link shaping: token buckets for per-connection and aggregate bandwidth caps, and seeded fault draws.

A ``TokenBucket`` holds up to ``burst`` bytes and refills at ``rate`` bytes/s; ``take(n)`` blocks until
``n`` bytes may pass (a request larger than the burst passes in burst-sized steps). ``FaultDraw`` turns the
n-th request of a host into a fault name (or None) from a seeded stream.
"""

from __future__ import annotations

import hashlib
import threading
import time

from sampleworld.emulator.config import FAULT_KINDS, Faults


class TokenBucket:
    """Thread-safe token bucket: ``rate`` bytes per second, depth ``burst`` bytes, starts full."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = float(rate)
        self.burst = float(burst)
        self._tokens = float(burst)
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def _reserve(self, n: float) -> float:
        """Take ``n`` tokens now (the balance may go negative); return how long to wait for them."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= n
            return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def take(self, n: int) -> None:
        """Block until ``n`` bytes may be sent."""
        left = float(n)
        while left > 0:
            step = min(left, self.burst)
            wait = self._reserve(step)
            if wait > 0:
                time.sleep(wait)
            left -= step


class Shaper:
    """Bandwidth caps of one host: a bucket per connection (made by ``connection_bucket``) and one
    shared by all connections. ``chunk`` is the write size used while shaping (bytes)."""

    def __init__(self, conn_rate: float | None, total_rate: float | None, burst: int) -> None:
        self.conn_rate = conn_rate
        self.burst = burst
        self.total = TokenBucket(total_rate, burst) if total_rate else None
        rates = [r for r in (conn_rate, total_rate) if r]
        # Small enough that a capped stream is smooth (~100 steps a second), big enough to be cheap.
        self.chunk = int(max(4096, min(burst, 256 * 1024, min(rates) / 100))) if rates else 1 << 20

    @property
    def active(self) -> bool:
        return bool(self.conn_rate or self.total)

    def connection_bucket(self) -> TokenBucket | None:
        """A fresh per-connection bucket (None when no per-connection cap is set)."""
        return TokenBucket(self.conn_rate, self.burst) if self.conn_rate else None

    def take(self, conn_bucket: TokenBucket | None, n: int) -> None:
        """Block until ``n`` bytes may pass both the connection's and the shared bucket."""
        if conn_bucket is not None:
            conn_bucket.take(n)
        if self.total is not None:
            self.total.take(n)


class FaultDraw:
    """Seeded fault decisions for one host: request number ``i`` (0-based, in arrival order) gets the
    fault whose slice of [0, 1) holds ``u_i``; ``u_i`` and a second draw (for the 5xx status) come from
    SHA-256 of (seed, host kind, i), so they do not depend on timing or threads."""

    def __init__(self, faults: Faults, kind: str) -> None:
        self.faults = faults
        self.kind = kind
        self._n = 0
        self._lock = threading.Lock()
        edges, acc = [], 0.0
        for name in FAULT_KINDS:
            acc += getattr(faults, name)
            edges.append((acc, name))
        self._edges = edges

    def next_index(self) -> int:
        with self._lock:
            i = self._n
            self._n += 1
            return i

    def uniforms(self, i: int) -> tuple[float, float]:
        """The two seeded uniforms of request ``i``."""
        h = hashlib.sha256(f"{self.faults.seed}:{self.kind}:{i}".encode()).digest()
        return (int.from_bytes(h[:8], "big") / 2**64, int.from_bytes(h[8:16], "big") / 2**64)

    def draw(self, allowed: frozenset[str] | None = None) -> tuple[str | None, float]:
        """Fault name for the next request (None = answer normally) and a second uniform in [0, 1).
        Faults not in ``allowed`` (when given) are treated as no fault."""
        i = self.next_index()
        if not self.faults.any:
            return None, 0.0
        u, v = self.uniforms(i)
        for edge, name in self._edges:
            if u < edge:
                if allowed is not None and name not in allowed:
                    return None, v
                return name, v
        return None, v

