"""File objects h5py reads from: a local file and an HTTP(S) range reader, both counting bytes.

h5py opens any object with ``read``/``seek``/``tell`` (``h5py.File(fileobj)``), so a granule on a
server is read with HTTP range requests, only the byte ranges HDF5 asks for (metadata, then the
chunks of the selected index ranges). Reads are served from fixed-size cached blocks.
Credentials live only in the ``requests`` session; URLs and byte counts are all that is logged.
"""

from __future__ import annotations

import io
import os
import time
from collections import OrderedDict
from typing import Any

from labels.granule import GediReadError


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
    5xx answers and connection errors are retried ``retries`` times (``backoff`` s, doubling).
    :meth:`prefetch` (called by the reader with the chunk byte ranges it is about to read) turns many
    chunk reads into a few merged requests.
    """

    def __init__(self, url: str, session: Any, *, block_size: int = 64 << 10, max_blocks: int = 512,
                 direct_read: int = 4 << 10, timeout: float = 60.0, retries: int = 3,
                 backoff: float = 1.0, merge_gap: int = 64 << 10, max_span: int = 32 << 20) -> None:
        self.url = url
        self._extents: list[tuple[int, bytes]] = []
        self._merge_gap = int(merge_gap)
        self._max_span = int(max_span)
        self._data_url = url
        self._retries = int(retries)
        self._backoff = float(backoff)
        self._session = session
        self._block = int(block_size)
        self._max_blocks = int(max_blocks)
        self._direct = max(1, int(direct_read))
        self._timeout = timeout
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._pos = 0
        self.bytes_read = 0
        self.n_requests = 0
        self.size = self._probe_size()

    def _request(self, start: int, end: int, *, stream: bool = False) -> Any:
        """One range GET with retries on 5xx / connection errors.

        After the first answer the final (redirected) URL is re-used, e.g. the signed S3 URL an Earthdata
        server redirects to; on 401/403 (expired signature) the original URL is tried again. Error
        messages name only the original URL (the redirected one may carry a signature).
        """
        import requests

        for attempt in range(self._retries + 1):
            url = self._data_url
            try:
                r = self._session.get(url, headers={"Range": f"bytes={start}-{end}"}, timeout=self._timeout,
                                      stream=stream)
            except (requests.ConnectionError, requests.Timeout) as exc:
                if attempt == self._retries:
                    raise OSError(f"{self.url}: {type(exc).__name__} after {attempt + 1} tries") from None
                time.sleep(self._backoff * 2 ** attempt)
                continue
            self.n_requests += 1
            if r.status_code in (401, 403) and url != self.url:
                r.close()
                self._data_url = self.url
                continue
            if r.status_code >= 500 and attempt < self._retries:
                r.close()
                time.sleep(self._backoff * 2 ** attempt)
                continue
            if r.status_code == 206:
                self._data_url = r.url or self._data_url
            return r
        raise OSError(f"{self.url}: no answer for byte range {start}-{end}")

    def _get(self, start: int, end: int) -> bytes:
        """Bytes ``start..end`` inclusive; raises OSError naming the URL on HTTP errors."""
        r = self._request(start, end)
        if r.status_code != 206:
            raise OSError(f"{self.url}: HTTP {r.status_code} for byte range {start}-{end}"
                          + (" (server does not support range requests)" if r.status_code == 200 else ""))
        data = r.content
        self.bytes_read += len(data)
        return data

    def _probe_size(self) -> int:
        r = self._request(0, 0, stream=True)
        try:
            if r.status_code != 206:
                raise OSError(f"{self.url}: HTTP {r.status_code} for a range request"
                              + (" (server does not support range requests)" if r.status_code == 200 else ""))
            cr = r.headers.get("Content-Range", "")
            if "/" not in cr or cr.rsplit("/", 1)[1] == "*":
                raise OSError(f"{self.url}: no file size in Content-Range {cr!r}")
            return int(cr.rsplit("/", 1)[1])
        finally:
            r.close()

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

        Ranges less than ``merge_gap`` bytes apart are fetched together (at most ``max_span`` a request);
        the previous prefetch is dropped, so memory stays bounded by one beam's selection.
        """
        self._extents = []
        spans: list[list[int]] = []
        for off, length in sorted(r for r in ranges if r[1] > 0):
            end = off + length
            if spans and off - spans[-1][1] <= self._merge_gap and end - spans[-1][0] <= self._max_span:
                spans[-1][1] = max(spans[-1][1], end)
            else:
                spans.append([off, end])
        for start, end in spans:
            self._extents.append((start, self._get(start, min(end, self.size) - 1)))

    def _from_extents(self, view: Any, want: int) -> bool:
        for start, data in self._extents:
            if start <= self._pos and self._pos + want <= start + len(data):
                off = self._pos - start
                view[:want] = data[off:off + want]
                return True
        return False

    def readinto(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        want = min(len(view), max(0, self.size - self._pos))
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
            from core.earthdata import earthdata_credentials, requests_session

            session = requests_session(earthdata_credentials())
        return HTTPRangeFile(href, session, **http_options)
    if "://" in href and not href.startswith("file://"):
        raise GediReadError(f"{href}: unsupported URL scheme (local paths and http(s):// only)")
    path = href[len("file://"):] if href.startswith("file://") else href
    if not os.path.isfile(path):
        raise GediReadError(f"{path}: granule file not found")
    return CountingFile(path)

