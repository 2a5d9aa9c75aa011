"""Where an HDF5 file's metadata lies, found without HDF5, so a remote reader can fetch it in a few waves.

h5py reads a remote granule's metadata (group symbol tables, object headers, chunk B-trees) one small read
at a time, each a dependent round trip, and it holds one lock for all files while it does: granules read
in threads wait for each other's metadata. :func:`warm_metadata` walks the same structures itself, one
level of the tree per wave, every wave one batch of concurrent range requests into the reader's block
cache; h5py then finds the metadata cached. It only gives hints: it parses the version-0 superblock,
version-1 object headers, version-1 B-trees (group and chunk), symbol table nodes and local heaps (the
layout h5py and the GEDI files use), and stops quietly on anything else; what it misses h5py reads itself.
"""

from __future__ import annotations

import fnmatch
import struct
from collections.abc import Callable
from typing import Any

ReadRanges = Callable[[list[tuple[int, int]]], list[bytes]]
"""Bytes of each ``(offset, length)``, fetched together (one wave of requests)."""

Spec = dict[str, Any]
"""Wanted children of a group: name pattern -> nested Spec (a group) or None (a dataset: its header and
chunk index). ``{}`` for a group: only its header (attributes)."""

_HEADER_READ = 1024  # bytes of an object header read at first (continuations are followed)
_BTREE_READ = 2560   # a v1 B-tree node: group (K=16, 544 bytes) or 1-D chunk index (K=32, 2,096 bytes)
_SNOD_READ = 1024    # a symbol table node (8 + 2 x leaf K x 40 bytes; leaf K = 4: 328)
_HEAP_READ = 512     # a local heap's header (32 bytes; HDF5 reads 512 at once)
_MAX_WAVES = 16


def warm_metadata(read: ReadRanges, spec: Spec) -> int:
    """Walk the groups and datasets of ``spec`` from the superblock, one wave of ``read`` per tree level.

    Returns the number of waves used. Never raises for a layout it does not know or an HTTP error (it
    stops); an endpoint outage (:class:`core.reads.EndpointDownError`) propagates."""
    try:
        first = read([(0, 96)])[0]
    except OSError:  # an HTTP error: h5py meets it again and reports it (an outage propagates)
        return 0
    if (len(first) < 96 or first[:8] != b"\x89HDF\r\n\x1a\n" or first[8] != 0 or first[13] != 8 or first[14] != 8
            or _u64(first, 24) != 0):
        return 0  # not a version-0 superblock with 8-byte offsets and lengths at the file's start
    tasks: list[tuple[Any, ...]] = [("header", _u64(first, 64), {}, "/")]  # its attributes
    if _u32(first, 72) == 1:
        tasks.append(("group", _u64(first, 80), _u64(first, 88), spec))
    else:
        tasks[0] = ("header", _u64(first, 64), spec, "/")
    seen: set[tuple[Any, ...]] = set()
    waves = 1
    while tasks and waves < _MAX_WAVES:
        seen.update(_key(t) for t in tasks)
        need = [r for t in tasks for r in _ranges(t)]
        try:
            got = dict(zip(need, read(need), strict=True))
        except OSError:
            return waves
        waves += 1
        nxt: list[tuple[Any, ...]] = []
        for t in tasks:
            try:
                nxt += _step(t, got)
            except (struct.error, IndexError, ValueError, KeyError):
                continue
        tasks = [t for t in nxt if _key(t) not in seen]
    return waves


def _key(t: tuple[Any, ...]) -> tuple[Any, ...]:
    """What makes a task the same as another (a group's B-tree level: its nodes)."""
    return (t[0], tuple(t[4])) if t[0] == "gnodes" else (t[0], t[1])


def _u64(b: bytes, o: int) -> int:
    return int.from_bytes(b[o:o + 8], "little")


def _u32(b: bytes, o: int) -> int:
    return int.from_bytes(b[o:o + 4], "little")


UNDEF = (1 << 64) - 1


def _ranges(t: tuple[Any, ...]) -> list[tuple[int, int]]:
    kind = t[0]
    if kind == "header":
        return [(t[1], _HEADER_READ)]
    if kind == "cont":
        return [(t[1], t[2])]
    if kind == "group":  # B-tree root node and local heap header
        return [(t[1], _BTREE_READ), (t[2], _HEAP_READ)]
    if kind == "gnodes":  # heap data segment, then B-tree children (SNODs or lower nodes)
        return [(t[1], t[2])] + [(a, _BTREE_READ if t[3] else _SNOD_READ) for a in t[4]]
    if kind == "chunks":
        return [(t[1], _BTREE_READ)]
    return []


def _step(t: tuple[Any, ...], got: dict[tuple[int, int], bytes]) -> list[tuple[Any, ...]]:
    """The tasks of the next wave that task ``t`` leads to, from the bytes it asked for."""
    kind = t[0]
    if kind in ("header", "cont"):
        data = got[_ranges(t)[0]]
        if kind == "header":
            if data[0] != 1:
                return []  # a version-2 object header ("OHDR"): not parsed
            return _messages(data, 16, min(len(data), 16 + _u32(data, 8)), t[2])
        return _messages(data, 0, len(data), t[3])
    if kind == "group":
        node, heap = got[(t[1], _BTREE_READ)], got[(t[2], _HEAP_READ)]
        if node[:4] != b"TREE" or heap[:4] != b"HEAP":
            return []
        level, used = node[5], int.from_bytes(node[6:8], "little")
        children = [_u64(node, 24 + 8 + 16 * i) for i in range(used)]
        return [("gnodes", _u64(heap, 24), min(_u64(heap, 8), 1 << 16), level, children, t[3])]
    if kind == "gnodes":
        return _symbols(t, got)
    if kind == "chunks":
        node = got[(t[1], _BTREE_READ)]
        if node[:4] != b"TREE" or node[4] != 1 or node[5] == 0:
            return []  # leaf level reached (its children are the chunks) or not a chunk B-tree
        used, ndims1 = int.from_bytes(node[6:8], "little"), t[2]
        key = 8 + 8 * ndims1
        return [("chunks", _u64(node, 24 + key + (key + 8) * i), ndims1) for i in range(used)]
    return []


def _symbols(t: tuple[Any, ...], got: dict[tuple[int, int], bytes]) -> list[tuple[Any, ...]]:
    """A group's B-tree children: lower B-tree nodes (next wave) or symbol table nodes, whose wanted
    entries become header (and, for a group with cached B-tree and heap addresses, group) tasks."""
    heapdata = got[(t[1], t[2])]
    out: list[tuple[Any, ...]] = []
    size = _BTREE_READ if t[3] else _SNOD_READ
    for a in t[4]:
        node = got[(a, size)]
        if t[3]:  # an internal group B-tree node: its children are lower nodes
            if node[:4] == b"TREE":
                used = int.from_bytes(node[6:8], "little")
                out.append(("gnodes", t[1], t[2], node[5], [_u64(node, 32 + 16 * i) for i in range(used)],
                            t[5]))
            continue
        if node[:4] != b"SNOD":
            continue
        for i in range(int.from_bytes(node[6:8], "little")):
            e = 8 + 40 * i
            name_off = _u64(node, e)
            name = heapdata[name_off:heapdata.index(b"\0", name_off)].decode("utf-8", "replace")
            sub = _match(t[5], name)
            if sub is _NO:
                continue
            addr, cache = _u64(node, e + 8), _u32(node, e + 16)
            out.append(("header", addr, sub, name))
            if cache == 1 and sub:
                out.append(("group", _u64(node, e + 24), _u64(node, e + 32), sub))
    return out


_NO = object()


def _match(spec: Spec | None, name: str) -> Any:
    """The sub-spec of child ``name`` of a group with ``spec`` (``_NO``: not wanted)."""
    if not spec:
        return _NO
    for pattern, sub in spec.items():
        if fnmatch.fnmatchcase(name, pattern):
            return sub
    return _NO


def _messages(data: bytes, pos: int, end: int, spec: Spec | None) -> list[tuple[Any, ...]]:
    """Tasks from the v1 object header messages in ``data[pos:end]``: a symbol table message (a group:
    its B-tree and heap, only when ``spec`` names children), a chunked layout (its chunk B-tree), a
    continuation block (read next)."""
    out: list[tuple[Any, ...]] = []
    while pos + 8 <= end:
        mtype, msize = int.from_bytes(data[pos:pos + 2], "little"), int.from_bytes(data[pos + 2:pos + 4], "little")
        body = pos + 8
        if body + msize > len(data):
            break
        if mtype == 0x11 and spec:
            out.append(("group", _u64(data, body), _u64(data, body + 8), spec))
        elif mtype == 0x10:
            out.append(("cont", _u64(data, body), min(_u64(data, body + 8), 1 << 16), spec))
        elif mtype == 0x08:
            ver = data[body]
            if ver == 3 and data[body + 1] == 2:  # chunked: dimensionality (rank + 1), B-tree address
                addr, ndims1 = _u64(data, body + 3), data[body + 2]
            elif ver in (1, 2) and data[body + 2] == 2:
                addr, ndims1 = _u64(data, body + 8), data[body + 1]
            else:
                addr, ndims1 = UNDEF, 0
            if addr != UNDEF:
                out.append(("chunks", addr, ndims1))
        pos = body + msize
    return out
