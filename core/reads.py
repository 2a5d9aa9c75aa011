"""Retries of data reads: HLS COG range reads (GDAL ``/vsicurl/``) and GEDI HDF5 range reads (requests).

Both readers retry a failed read of a remote file that looks transient (HTTP 408/429/5xx, connection
resets and refusals, timeouts, a body shorter than announced) with :func:`read_policy`: exponential
backoff within ``max_attempts`` and a wall-clock ``budget_s`` per read. When a read still fails at the end
of its budget the endpoint is treated as down: :class:`EndpointDownError` names the host and the last
error, and the stage fails (it does not skip the file: a scene or granule missing because a server was
briefly down would silently change the product). Permanent answers (other 4xx, a file that is not a
raster) are not retried: the engines skip that file and say why.

The policy can be tuned without code through ``AGB_READ_RETRY`` (JSON of :class:`core.http.RetryPolicy`
fields, e.g. ``{"budget_s": 60}``), read in the process doing the read (a Dask worker included).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from typing import TypeVar

from core.http import RetryPolicy

log = logging.getLogger(__name__)
T = TypeVar("T")

READ_RETRY_ENV = "AGB_READ_RETRY"
DEFAULT_READ_POLICY = RetryPolicy(max_attempts=8, backoff_s=0.5, max_backoff_s=8.0, budget_s=110.0,
                                  timeout_s=60.0, connect_timeout_s=10.0)
"""Per read: up to 8 attempts, waits 0.5, 1, 2, 4, 8, 8, 8 s (+ up to 10 % jitter), at most 110 s in all."""


class EndpointDownError(RuntimeError):
    """A data endpoint that kept failing for a whole retry budget. ``host``: ``host:port``; ``url``: the
    file asked for (never a pre-signed URL). Not an ``OSError``: readers must not take it for a bad file."""

    def __init__(self, message: str, *, url: str, host: str) -> None:
        super().__init__(message)
        self.url, self.host = url, host

    @classmethod
    def after(cls, *, url: str, host: str, last_error: str, attempts: int, seconds: float,
              policy: RetryPolicy) -> EndpointDownError:
        return cls(f"data endpoint {host} is not answering: {url}: {last_error} (still failing after {attempts} "
                   f"attempts in {seconds:.1f} s, retry budget {policy.describe()}); check the network and the "
                   "provider's status page, then run again (finished files are kept)", url=url, host=host)


def read_policy() -> RetryPolicy:
    """:data:`DEFAULT_READ_POLICY` with the fields given in ``$AGB_READ_RETRY`` (JSON) replaced."""
    raw = os.environ.get(READ_RETRY_ENV, "").strip()
    if not raw:
        return DEFAULT_READ_POLICY
    try:
        extra = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"${READ_RETRY_ENV}: not valid JSON ({exc}): {raw[:200]!r}") from None
    if not isinstance(extra, dict):
        raise ValueError(f"${READ_RETRY_ENV} must be a JSON object of retry options, got {raw[:200]!r}")
    return RetryPolicy.from_any({**DEFAULT_READ_POLICY.__dict__, **extra})


class Transient(Exception):
    """Raised inside a retried call for a failure worth another attempt (``why`` in words)."""

    def __init__(self, why: str, retry_after: str | None = None) -> None:
        super().__init__(why)
        self.why, self.retry_after = why, retry_after


def with_retries(call: Callable[[int], T], *, url: str, host: str, policy: RetryPolicy | None = None,
                 on_retry: Callable[[], None] | None = None) -> T:
    """``call(attempt)`` until it returns; each :class:`Transient` it raises is retried with ``policy``
    (default :func:`read_policy`), ``on_retry`` running before each new attempt (drop a cached handle);
    other exceptions propagate at once. Raises :class:`EndpointDownError` when the budget is spent."""
    policy = policy or read_policy()
    t0 = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        try:
            return call(attempt)
        except Transient as exc:
            wait = policy.delay(attempt, exc.retry_after)
            spent = time.monotonic() - t0
            if attempt >= policy.max_attempts or spent + wait >= policy.budget_s:
                raise EndpointDownError.after(url=url, host=host, last_error=exc.why, attempts=attempt,
                                              seconds=spent, policy=policy) from None
            log.info("%s: %s; retry %d in %.2f s", url, exc.why, attempt, wait)
        time.sleep(wait)
        if on_retry is not None:
            on_retry()


_GDAL_LIB: list[object] = []


def clear_gdal_cache(href: str) -> bool:
    """Drop what GDAL's ``/vsicurl/`` cache holds for ``href`` (header, size, blocks): a body cut short by
    the network is cached as if it were the file, so a retry must not find it. Uses the GDAL library the
    process has loaded (rasterio's); returns False when it cannot be found (then only a new handle helps)."""
    import ctypes

    if not _GDAL_LIB:
        path = None
        try:
            with open("/proc/self/maps") as fh:
                paths = (ln.split()[-1] for ln in fh if "/" in ln)
                path = next((p for p in paths if os.path.basename(p).startswith("libgdal") and ".so" in p), None)
        except OSError:
            path = None
        lib = None
        if path:
            try:
                lib = ctypes.CDLL(path)
                lib.VSICurlPartialClearCache.argtypes = [ctypes.c_char_p]
                lib.VSICurlPartialClearCache.restype = None
            except (OSError, AttributeError):
                lib = None
        _GDAL_LIB.append(lib)
    lib = _GDAL_LIB[0]
    if lib is None:
        return False
    name = href if href.startswith("/vsi") else "/vsicurl/" + href
    lib.VSICurlPartialClearCache(name.encode())  # type: ignore[attr-defined]
    return True
