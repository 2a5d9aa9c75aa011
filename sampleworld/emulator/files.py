"""URL path -> local file mapping and HTTP byte ranges, as S3 answers them."""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from urllib.parse import unquote

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def resolve(roots: Mapping[str, str], url_path: str) -> tuple[str, Path | None]:
    """``/<prefix>/<rel>`` -> (prefix, file); the longest matching prefix wins. The prefix is "" when it
    is not configured; the file is None when it does not exist, is not a regular file or lies outside the
    prefix's root (``..``)."""
    path = unquote(url_path).lstrip("/")
    prefix = _longest_prefix(roots, path)
    if not prefix:
        return "", None
    rest = path[len(prefix) + 1:]
    if not rest:
        return prefix, None
    key = (roots[prefix], rest)
    hit = _FOUND.get(key)
    if hit is not None:
        return prefix, hit
    root = Path(roots[prefix]).resolve()
    cand = (root / rest).resolve()
    if root not in cand.parents or not cand.is_file():
        return prefix, None
    if len(_FOUND) > 100_000:
        _FOUND.clear()
    _FOUND[key] = cand
    return prefix, cand


def _longest_prefix(roots: Mapping[str, str], path: str) -> str:
    """The longest configured prefix that ``path`` starts with on a ``/`` boundary ("" when none): a
    prefix may have several segments (``protected/gedi/GEDI_L4A_AGB_Density_V2_1/data``)."""
    best = ""
    for prefix in roots:
        if len(prefix) > len(best) and (path == prefix or path.startswith(prefix + "/")):
            best = prefix
    return best


_FOUND: dict[tuple[str, str], Path] = {}  # (root, relative path) -> resolved file (hits only)


@dataclass(frozen=True)
class ByteRange:
    """A satisfiable single range ``start``..``end`` (inclusive) of an object of ``size`` bytes."""

    start: int
    end: int
    size: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    @property
    def content_range(self) -> str:
        return f"bytes {self.start}-{self.end}/{self.size}"


def parse_range(header: str | None, size: int) -> ByteRange | None | str:
    """S3's reading of a ``Range`` header for an object of ``size`` bytes: a ``ByteRange``; None for the
    whole object (no header, a syntax S3 ignores, or several ranges, which S3 does not serve); the string
    "unsatisfiable" when the range starts at or beyond the end (S3 answers 416 InvalidRange)."""
    if not header:
        return None
    m = _RANGE.match(header.strip().replace(" ", ""))
    if not m:
        return None
    first, last = m.groups()
    if first == "" and last == "":
        return None
    if first == "":  # suffix range: the last N bytes
        n = int(last)
        if n == 0:
            return "unsatisfiable"
        return ByteRange(max(0, size - n), size - 1, size) if size else "unsatisfiable"
    start = int(first)
    if last != "" and int(last) < start:
        return None
    if start >= size:
        return "unsatisfiable"
    end = size - 1 if last == "" else int(last)
    return ByteRange(start, min(end, size - 1), size)


def object_info(path: Path) -> tuple[int, list[tuple[str, str]]]:
    """Size of a served file and its ETag (from size and mtime, quoted), Last-Modified and Accept-Ranges."""
    st = path.stat()
    return st.st_size, list(_headers(st.st_size, st.st_mtime_ns))


@functools.lru_cache(maxsize=4096)
def _headers(size: int, mtime_ns: int) -> tuple[tuple[str, str], ...]:
    etag = hashlib.md5(f"{size}:{mtime_ns}".encode(), usedforsecurity=False).hexdigest()
    return (("ETag", f'"{etag}"'), ("Last-Modified", formatdate(mtime_ns / 1e9, usegmt=True)),
            ("Accept-Ranges", "bytes"))
