"""File objects h5py reads from: a local file and an HTTP(S) range reader, both counting bytes.

h5py opens any object with ``read``/``seek``/``tell`` (``h5py.File(fileobj)``), so a granule on a
server is read with HTTP range requests, only the byte ranges HDF5 asks for (metadata, then the
chunks of the selected index ranges). Reads are served from fixed-size cached blocks.
Credentials live only in the ``requests`` session; URLs and byte counts are all that is logged.
"""

from __future__ import annotations

import bisect
import io
import os
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any
from urllib.parse import urlsplit

from core.earthdata_http import EarthdataHttpError, describe_failure, host_of
from core.http import RetryPolicy
from core.reads import EndpointDownError, Transient, read_policy, with_retries
from labels.granule import GediReadError

RETRY_STATUSES = (408, 429, 500, 502, 503, 504)
FETCH_WORKERS = 8
"""Range requests one remote granule has in flight at most (a batch of chunks or metadata blocks)."""


class CountingFile(io.RawIOBase):
    """A read-only local file that counts the bytes handed out (``bytes_read``)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._fh = open(path, "rb", buffering=0)  # closed in close()
        self.size = os.fstat(self._fh.fileno()).st_size
        self.bytes_read = 0
        self.n_reads = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._fh.seek(offset, whence)

    def tell(self) -> int:
        return self._fh.tell()

    def readinto(self, b: Any) -> int:
        n = self._fh.readinto(b)
        self.bytes_read += n or 0
        self.n_reads += 1
        return n or 0

    def close(self) -> None:
        self._fh.close()
        super().close()


class HTTPRangeFile(io.RawIOBase):
    """A read-only HTTP(S) file read by ``Range`` requests in cached blocks.

    Small reads (HDF5 metadata: superblock, object headers, B-tree nodes) are served from cached blocks
    of ``block_size`` bytes (``max_blocks`` kept); reads of at least ``direct_read`` bytes (data chunks)
    are fetched exactly. ``bytes_read`` counts the bytes fetched, ``n_requests`` the GETs answered.
    408/429/5xx answers, connection errors, timeouts and short bodies are retried with ``policy`` (default
    :func:`core.reads.read_policy`); a read still failing at the end of its budget raises
    :class:`core.reads.EndpointDownError` (the endpoint is down: the stage fails, it does not skip the file).
    :meth:`prefetch` (called by the reader with the chunk byte ranges it is about to read) turns many
    chunk reads into a few merged requests, sent concurrently (at most ``fetch_workers`` at once);
    :meth:`prefetch_blocks` fills the block cache with the blocks holding given offsets (HDF5 object
    headers) the same way. ``round_trips`` counts the dependent request chain: one per serial request
    (plus one per redirect hop it followed), one per wave of a concurrent batch.

    Earthdata: the first request follows the protected URL's redirects; the pre-signed URL it ends on is
    re-used (the session never sends it credentials). When the signed host answers 400/401/403 (expired
    or refused), the file is re-resolved through the original URL, at most ``resolve_retries`` times a
    read; then :class:`~core.earthdata_http.EarthdataHttpError` names the host and the status.

    h5py reads through :meth:`readinto` from inside HDF5; an exception raised there can crash the
    interpreter at exit (an h5py frame kept alive by the error's traceback). So ``readinto`` never raises:
    it records the failure (plain values, no exception object) in :attr:`failure`, answers zeros, and the
    caller raises :meth:`failure_error` once h5py has returned. The constructor reads the first block
    (size, superblock) outside h5py, so a refused file fails before HDF5 sees it.
    """

    def __init__(self, url: str, session: Any, *, block_size: int = 64 << 10, max_blocks: int = 512,
                 direct_read: int = 4 << 10, policy: RetryPolicy | None = None,
                 merge_gap: int = 64 << 10, max_span: int = 32 << 20, resolve_retries: int = 2,
                 fetch_workers: int = FETCH_WORKERS) -> None:
        self.url = url
        self._workers = max(1, int(fetch_workers))
        self._lock = threading.Lock()  # counters: concurrent batches update them from pool threads
        self._extents: list[tuple[int, bytes]] = []
        self._starts: list[int] = []  # the extents' start offsets (sorted), for bisect
        self._overlap = False
        self._env: dict[tuple[str, str], dict[str, Any]] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._merge_gap = int(merge_gap)
        self._max_span = int(max_span)
        self._data_url = url
        self._resolve_retries = int(resolve_retries)
        self._policy = policy
        self._session = session
        self._block = int(block_size)
        self._max_blocks = int(max_blocks)
        self._direct = max(1, int(direct_read))
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._pos = 0
        self.bytes_read = 0
        self.n_requests = 0
        self.n_resolves = 0
        self.round_trips = 0
        self.failure: tuple[str, str, int | None, str] | None = None  # (message, host, status, stage)
        self.size = self._probe_size()

    def _send(self, url: str, start: int, end: int) -> tuple[Any, bytes | None]:
        """One GET (redirects followed): (answer, its body when 206, else None: ``answer.content`` reads
        it). 408/429/5xx answers, connection errors, timeouts and bodies shorter than announced are
        retried with :func:`core.reads.read_policy` (a dead endpoint: :class:`core.reads.EndpointDownError`).
        Other answers are returned. A 206 body is read in one urllib3 read (``Response.content`` reads
        it in 10 KiB pieces, each through several Python layers: most of a large range's CPU)."""
        import requests
        import urllib3

        broken = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                  urllib3.exceptions.ProtocolError, urllib3.exceptions.ReadTimeoutError,
                  urllib3.exceptions.SSLError)  # the last three: requests' errors for them, read raw
        policy = self._policy or read_policy()

        def attempt(_: int) -> tuple[Any, bytes | None]:
            try:
                prepped = self._session.prepare_request(
                    requests.Request("GET", url, headers={"Range": f"bytes={start}-{end}"}))
                settings = self._environment(url)
                r = self._session.send(prepped, timeout=policy.timeouts, allow_redirects=True,
                                       **{**settings, "proxies": dict(settings["proxies"]), "stream": True})
            except broken as e:
                raise Transient(f"{type(e).__name__} (host {host_of(url)})") from None
            with self._lock:
                self.n_requests += 1
            if r.status_code in RETRY_STATUSES:
                r.close()
                raise Transient(f"HTTP {r.status_code} from {host_of(r.url or url)}", r.headers.get("Retry-After"))
            if r.status_code != 206:
                try:
                    r.content  # noqa: B018 (read now, as a non-streamed answer is: describe_failure uses it)
                except broken as e:
                    r.close()
                    raise Transient(f"{type(e).__name__} (host {host_of(r.url or url)})") from None
                return r, None
            try:  # the whole body at once; the connection goes back to the pool when it is read
                body = r.raw.read(decode_content=True)
            except broken as e:
                r.close()
                raise Transient(f"{type(e).__name__} (host {host_of(r.url or url)})") from None
            announced = r.headers.get("Content-Length")
            if announced is not None and len(body) != int(announced):
                r.close()
                raise Transient(f"a body of {len(body)} of {announced} bytes from {host_of(r.url or url)}")
            return r, body

        return with_retries(attempt, url=self.url, host=host_of(url), policy=policy)

    def _environment(self, url: str) -> dict[str, Any]:
        """What ``session.get`` would take from the environment for ``url`` (proxies, CA bundle), looked up
        once per scheme and host of this file: requests reads every environment variable on each request
        (two scans of ``os.environ`` a request, a large part of its per-request CPU)."""
        key = urlsplit(url)[:2]
        got = self._env.get(key)
        if got is None:
            got = self._env[key] = self._session.merge_environment_settings(url, {}, None, None, None)
        return got

    def _request(self, start: int, end: int) -> tuple[Any, bytes]:
        """The 206 answer for ``start..end`` and its body: through the remembered signed URL, re-resolved through the
        original URL when the signed host refuses (budget ``resolve_retries``). Errors name the original
        URL and the refusing host, never a signed URL."""
        resolves = 0
        while True:
            via_signed = self._data_url != self.url
            r, body = self._send(self._data_url, start, end)
            if body is not None:  # 206
                if r.history:
                    self._data_url = r.url  # the pre-signed URL the data host handed out
                return r, body
            err = describe_failure(r, self.url)
            r.close()
            refused = r.status_code in (400, 401, 403) and (via_signed or err.stage == "signed")
            if refused and resolves < self._resolve_retries:
                resolves += 1
                self.n_resolves += 1
                self._data_url = self.url  # ask the data host for a fresh signed URL
                continue
            extra = " (server does not support range requests)" if r.status_code == 200 else ""
            raise EarthdataHttpError(f"{self.url}: {err} for byte range {start}-{end}{extra}"
                                     + (f" after {resolves} re-resolution(s)" if resolves else ""),
                                     url=self.url, host=err.host, status=err.status, stage=err.stage)

    def _fetch(self, start: int, end: int) -> tuple[bytes, int]:
        """(bytes ``start..end`` inclusive, round trips it took: 1 + redirect hops); counts the bytes."""
        r, data = self._request(start, end)
        with self._lock:
            self.bytes_read += len(data)
        return data, 1 + len(r.history)

    def _get(self, start: int, end: int) -> bytes:
        """Bytes ``start..end`` inclusive; EarthdataHttpError (an OSError) naming the URL on HTTP errors."""
        data, hops = self._fetch(start, end)
        with self._lock:
            self.round_trips += hops
        return data

    def _get_many(self, spans: list[tuple[int, int]]) -> list[bytes]:
        """Bytes of each inclusive ``(start, end)`` span, fetched concurrently (``fetch_workers`` at once,
        so one round trip per wave of requests); the first error (in span order) is raised."""
        if len(spans) <= 1 or self._workers == 1:
            return [self._get(a, b) for a, b in spans]
        if self._pool is None:  # one pool for the file's batches (a pool a batch: ~0.9 ms CPU a request more)
            self._pool = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="range")
        futures = [self._pool.submit(self._fetch, a, b) for a, b in spans]
        wait(futures)  # every request of the batch has ended before any error is raised
        got = [f.result() for f in futures]
        with self._lock:
            self.round_trips += -(-len(spans) // self._workers) * max(h for _, h in got)
        return [d for d, _ in got]

    def _probe_size(self) -> int:
        """Fetch the first block (file size from Content-Range, and the HDF5 superblock) outside h5py."""
        r, data = self._request(0, self._block - 1)
        cr = r.headers.get("Content-Range", "")
        if "/" not in cr or cr.rsplit("/", 1)[1] == "*":
            r.close()
            raise OSError(f"{self.url}: no file size in Content-Range {cr!r}")
        size = int(cr.rsplit("/", 1)[1])
        self.bytes_read += len(data)
        self.round_trips += 1 + len(r.history)
        if len(data) == min(size, self._block):
            self._cache[0] = data
        return size

    def close(self) -> None:
        """Close the file; the batches' threads end (after their requests, if any is running)."""
        pool, self._pool = getattr(self, "_pool", None), None
        if pool is not None:
            pool.shutdown(wait=True)
        super().close()

    def failure_error(self) -> EarthdataHttpError | EndpointDownError | None:
        """A fresh error for the failure recorded inside :meth:`readinto` (None when there was none)."""
        if self.failure is None:
            return None
        msg, host, status, stage = self.failure
        if stage == "outage":
            return EndpointDownError(msg, url=self.url, host=host)
        return EarthdataHttpError(msg, url=self.url, host=host, status=status, stage=stage)

    def _block_bytes(self, idx: int) -> bytes:
        data = self._cache.get(idx)
        if data is not None:
            self._cache.move_to_end(idx)
            return data
        start = idx * self._block
        end = min(self.size, start + self._block) - 1
        data = self._get(start, end)
        if len(data) != end - start + 1:
            raise OSError(f"{self.url}: short read at {start}: {len(data)} of {end - start + 1} bytes")
        self._cache[idx] = data
        while len(self._cache) > self._max_blocks:
            self._cache.popitem(last=False)
        return data

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def prefetch(self, ranges: list[tuple[int, int]]) -> None:
        """Fetch the byte ranges ``(offset, length)`` the next reads need, merged into few requests.

        Ranges less than ``merge_gap`` bytes apart are fetched together (at most ``max_span`` a request),
        the requests concurrently; the previous prefetch is dropped, so memory stays bounded by one
        prefetch's selection (the reader's: one granule's lat/lon, then its selected chunks).
        """
        self._extents, self._starts = [], []
        spans: list[list[int]] = []
        for off, length in sorted(r for r in ranges if r[1] > 0):
            end = off + length
            if spans and off - spans[-1][1] <= self._merge_gap and end - spans[-1][0] <= self._max_span:
                spans[-1][1] = max(spans[-1][1], end)
            else:
                spans.append([off, end])
        spans = [[a, min(b, self.size)] for a, b in spans if a < self.size]
        datas = self._get_many([(a, b - 1) for a, b in spans])
        self._extents = [(a, d) for (a, _), d in zip(spans, datas, strict=True)]
        self._starts = [a for a, _ in self._extents]
        self._overlap = any(b > a2 for (_, b), (a2, _) in zip(spans, spans[1:], strict=False))

    def prefetch_blocks(self, ranges: list[tuple[int, int]]) -> None:
        """Put the cached blocks holding the byte ranges ``(offset, length)`` into the block cache, missing
        ones fetched in merged, concurrent requests (one wave): HDF5's small metadata reads there (object
        headers, B-tree nodes) are then answered without a round trip each. Ranges past the end: ignored."""
        b = self._block
        want = sorted({k for off, n in ranges if 0 <= off < self.size and n > 0
                       for k in range(off // b, (min(off + n, self.size) - 1) // b + 1)} - set(self._cache))
        runs: list[list[int]] = []
        for k in want:
            if runs and k == runs[-1][1] and (k + 1 - runs[-1][0]) * self._block <= self._max_span:
                runs[-1][1] = k + 1
            else:
                runs.append([k, k + 1])
        datas = self._get_many([(a * self._block, min(self.size, b * self._block) - 1) for a, b in runs])
        for (a, b), data in zip(runs, datas, strict=True):
            if len(data) != min(self.size, b * self._block) - a * self._block:
                raise OSError(f"{self.url}: short read at {a * self._block}: {len(data)} bytes")
            for k in range(a, b):
                self._cache[k] = data[(k - a) * self._block:(k - a + 1) * self._block]
        while len(self._cache) > self._max_blocks:
            self._cache.popitem(last=False)

    def read_ranges(self, ranges: list[tuple[int, int]]) -> list[bytes]:
        """Bytes of each ``(offset, length)`` (cut at the end of the file), through the block cache: the
        missing blocks are fetched in one wave (:meth:`prefetch_blocks`). For metadata walks (small ranges)."""
        self.prefetch_blocks(ranges)
        out = []
        for off, n in ranges:
            end = min(off + n, self.size)
            if off < 0 or off >= end:
                out.append(b"")
                continue
            parts = []
            for k in range(off // self._block, (end - 1) // self._block + 1):
                block = self._cache.get(k)
                if block is None:  # evicted meanwhile (a walk wider than the cache): fetch it again
                    block = self._block_bytes(k)
                lo = max(off, k * self._block) - k * self._block
                hi = min(end, (k + 1) * self._block) - k * self._block
                parts.append(block[lo:hi])
            out.append(b"".join(parts))
        return out

    def prefetched(self, offset: int, length: int) -> memoryview | None:
        """Bytes ``offset..offset+length`` when the last :meth:`prefetch` holds them (no request), else None."""
        i = bisect.bisect_right(self._starts, offset) - 1
        for start, data in (self._extents if self._overlap else self._extents[i:i + 1] if i >= 0 else []):
            if start <= offset and offset + length <= start + len(data):
                return memoryview(data)[offset - start:offset - start + length]
        return None

    def _from_extents(self, view: Any, want: int) -> bool:
        i = bisect.bisect_right(self._starts, self._pos) - 1  # the extents are sorted by start
        cands = [self._extents[i]] if i >= 0 else []
        if self._overlap:  # spans cut at max_span may overlap: any extent may hold the read
            cands = self._extents
        for start, data in cands:
            if start <= self._pos and self._pos + want <= start + len(data):
                off = self._pos - start
                view[:want] = memoryview(data)[off:off + want]  # one copy, not two
                return True
        return False

    def readinto(self, b: Any) -> int:
        """Fill ``b`` from the current position. Never raises (see the class doc): after a failure it
        answers zeros and :attr:`failure` says what happened."""
        view = memoryview(b).cast("B")
        want = min(len(view), max(0, self.size - self._pos))
        if self.failure is None:
            try:
                return self._readinto(view, want)
            except Exception as exc:  # noqa: BLE001 (recorded as plain values, raised by the caller)
                stage = "outage" if isinstance(exc, EndpointDownError) else getattr(exc, "stage", "network")
                self.failure = (str(exc), getattr(exc, "host", host_of(self.url)), getattr(exc, "status", None),
                                stage)
                del exc
        view[:want] = bytes(want)
        self._pos += want
        return want

    def _readinto(self, view: Any, want: int) -> int:
        if want and self._from_extents(view, want):
            self._pos += want
            return want
        if want >= self._direct:  # a whole chunk: fetch exactly it (chunks are read once)
            data = self._get(self._pos, self._pos + want - 1)
            if len(data) != want:
                raise OSError(f"{self.url}: short read at {self._pos}: {len(data)} of {want} bytes")
            view[:want] = data
            self._pos += want
            return want
        done = 0
        while done < want:
            idx, off = divmod(self._pos + done, self._block)
            block = self._block_bytes(idx)
            n = min(want - done, len(block) - off)
            view[done:done + n] = block[off:off + n]
            done += n
        self._pos += done
        return done


def open_source(href: str, session: Any = None, **http_options: Any) -> CountingFile | HTTPRangeFile:
    """A counting file object for a local path or an ``http(s)://`` URL (``session`` for URLs)."""
    if href.startswith(("http://", "https://")):
        if session is None:
            from core.earthdata_http import earthdata_session

            session = earthdata_session()
        return HTTPRangeFile(href, session, **http_options)
    if "://" in href and not href.startswith("file://"):
        raise GediReadError(f"{href}: unsupported URL scheme (local paths and http(s):// only)")
    path = href[len("file://"):] if href.startswith("file://") else href
    if not os.path.isfile(path):
        raise GediReadError(f"{path}: granule file not found")
    return CountingFile(path)

