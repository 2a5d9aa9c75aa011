"""The remote reader's CPU savings keep its behaviour: through the Earthdata emulator (bearer token, 307 to the
signed host), ``HTTPRangeFile`` answers the file's bytes with a 206 body read in one piece (cut, reset and
failed answers still retried), looks requests' environment settings up once per host, serves reads from
prefetched extents found by bisect (also when spans cut at ``max_span`` overlap), and the reader opens each
beam dataset once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from shapely.geometry import box

from core.earthdata_http import earthdata_session
from core.http import RetryPolicy
from labels.filters import ShotFilters
from labels.reader import read_granule_shots
from labels.sources import HTTPRangeFile
from sampleworld.emulator import EarthdataEmulator
from sampleworld.emulator.config import Faults
from sampleworld.serve import CREDENTIAL_VARS, patched_env
from sampleworld.synthetic.granules import synthetic_beam, write_l4a_granule

TOKEN = "tok-remote-cpu"  # noqa: S105 (the emulator's, no credential)
FAST = RetryPolicy(max_attempts=8, backoff_s=0.01, max_backoff_s=0.05, budget_s=20.0, timeout_s=10.0)
SIZE = 400_000
NAME = "GEDI04_A_2023160051430_O25001_02_T01234_02_004_02_V002.h5"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("remote-cpu")
    (root / "blob.bin").write_bytes(np.random.default_rng(3).bytes(SIZE))
    rng = np.random.default_rng(0)
    beams = {b: synthetic_beam(20000, (-122.5 + 0.01 * i, -122.3 + 0.01 * i), (39.95, 40.25), rng, beam_index=i)
             for i, b in enumerate(("BEAM0000", "BEAM0101"))}
    write_l4a_granule(root / NAME, beams, filler=4, chunk=2000, seed=0)
    return root


@pytest.fixture()
def served(folder: Path, request: pytest.FixtureRequest) -> Iterator[EarthdataEmulator]:
    faults = getattr(request, "param", None)
    with EarthdataEmulator({"gedi": folder}, tokens=[TOKEN], faults=faults) as emu:
        env: dict[str, str | None] = {k: None for k in CREDENTIAL_VARS}
        env.update(EARTHDATA_TOKEN=TOKEN, EARTHDATA_HOSTS=",".join(emu.hosts))
        with patched_env(env):
            yield emu


def _reads(f: HTTPRangeFile, data: bytes) -> None:
    """Small, block-sized and large reads at several offsets equal the file's bytes."""
    for off, n in ((0, 100), (70_000, 5000), (123_457, 65_536), (SIZE - 300, 1000), (200_000, 150_000)):
        f.seek(off)
        assert f.read(n) == data[off:off + n], (off, n)


@pytest.mark.parametrize("served", [
    None,
    {"signed": Faults(seed=1, truncate=0.3, truncate_fraction=0.4)},  # bodies shorter than Content-Length
    {"signed": Faults(seed=2, reset_mid=0.3)},                       # connections reset inside the body
    {"signed": Faults(seed=3, reset_before=0.3)},                    # reset before any byte
    {"signed": Faults(seed=4, error_5xx=0.3, statuses_5xx=(500, 503))},
], indirect=True, ids=["clean", "truncate", "reset-mid", "reset-before", "5xx"])
def test_range_bodies_read_whole_and_faults_retried(served: EarthdataEmulator, folder: Path) -> None:
    data = (folder / "blob.bin").read_bytes()
    f = HTTPRangeFile(served.data_url("gedi", "blob.bin"), earthdata_session(), block_size=1 << 14,
                      direct_read=1 << 12, policy=FAST)
    assert f.size == SIZE
    _reads(f, data)
    f.prefetch([(10_000, 30_000), (300_000, 50_000)])
    f.seek(12_000)
    assert f.read(20_000) == data[12_000:32_000]
    assert f.failure is None
    assert f.bytes_read >= 5000 + 65_536 + 150_000  # every byte counted once it came
    injected = served.stats()["hosts"]["signed"]["faults"]
    assert (sum(injected.values()) > 0) == bool(served.config.faults), injected  # the faults did happen


def test_environment_looked_up_once_per_host(served: EarthdataEmulator, folder: Path) -> None:
    """Many requests, one ``merge_environment_settings`` per (scheme, host): the protected and the signed one."""
    session = earthdata_session()
    calls: list[str] = []
    orig = session.merge_environment_settings

    def counting(url: str, *a: Any) -> Any:
        calls.append(url)
        return orig(url, *a)

    session.merge_environment_settings = counting  # type: ignore[method-assign]
    f = HTTPRangeFile(served.data_url("gedi", "blob.bin"), session, block_size=1 << 12, direct_read=1 << 20)
    _reads(f, (folder / "blob.bin").read_bytes())
    assert f.n_requests > 20 and len(calls) == 2, (f.n_requests, calls)


@pytest.mark.parametrize(("ranges", "max_span", "reads", "requests"), [
    ([(1000, 2000), (4000, 1000)], 32 << 20, [(1500, 3000), (4500, 500)], 1),          # merged into one span
    ([(1000, 2000), (200_000, 1000)], 32 << 20, [(200_100, 900), (1000, 2000)], 2),   # two spans
    ([(1000, 19_000), (6000, 5000)], 6000, [(12_000, 1000), (7000, 500)], 2),  # a cut span inside another
], ids=["merged", "apart", "overlapping"])
def test_reads_served_from_prefetched_extents(served: EarthdataEmulator, folder: Path, ranges: list[tuple[int, int]],
                                              max_span: int, reads: list[tuple[int, int]], requests: int) -> None:
    data = (folder / "blob.bin").read_bytes()
    f = HTTPRangeFile(served.data_url("gedi", "blob.bin"), earthdata_session(), direct_read=1, max_span=max_span)
    before = f.n_requests
    f.prefetch(ranges)
    assert f.n_requests == before + requests
    for off, n in reads:
        f.seek(off)
        assert f.read(n) == data[off:off + n], (off, n)
    assert f.n_requests == before + requests  # no read went to the server
    f.seek(500)
    assert f.read(1000) == data[500:1500] and f.n_requests == before + requests + 1  # outside: fetched


def test_each_beam_dataset_opened_once(served: EarthdataEmulator, folder: Path, monkeypatch: pytest.MonkeyPatch
                                       ) -> None:
    """Local and remote reads: every dataset of a beam is opened at most once, the shots are the same."""
    opened: Counter[tuple[str, str]] = Counter()
    orig = h5py.Group.__getitem__

    def counting(self: h5py.Group, name: Any) -> Any:
        if isinstance(name, str) and self.name.startswith("/BEAM"):
            opened[(self.name, name)] += 1
        return orig(self, name)

    monkeypatch.setattr(h5py.Group, "__getitem__", counting)
    area = box(-122.45, 40.05, -122.35, 40.15)
    got = []
    for href in (str(folder / NAME), served.data_url("gedi", NAME)):
        opened.clear()
        got.append(read_granule_shots(href, area, ShotFilters(), session=earthdata_session()))
        assert opened and max(opened.values()) == 1, opened.most_common(3)
    local, remote = got
    assert local.counts == remote.counts and local.counts["kept"] > 0
    for k, v in local.columns.items():
        np.testing.assert_array_equal(remote.columns[k], v)


def test_batches_share_one_pool_that_close_ends(served: EarthdataEmulator, folder: Path) -> None:
    """Every batch of a file runs on the same threads (at most ``fetch_workers``); ``close`` ends them."""
    import threading

    before = {t for t in threading.enumerate() if t.name.startswith("range")}  # other files' threads
    data = (folder / "blob.bin").read_bytes()
    f = HTTPRangeFile(served.data_url("gedi", "blob.bin"), earthdata_session(), fetch_workers=3, merge_gap=0)
    for k in range(4):  # four batches of five spans each
        f.prefetch([(k * 1000 + j * 60_000, 500) for j in range(5)])
        f.seek(k * 1000 + 240_000)
        assert f.read(500) == data[k * 1000 + 240_000:k * 1000 + 240_500]
    ours = {t for t in threading.enumerate() if t.name.startswith("range")} - before
    assert 1 <= len(ours) <= 3, ours
    f.close()
    assert not any(t.is_alive() for t in ours)



@pytest.mark.parametrize(("dtype", "n", "chunk", "opts", "decoded"), [
    ("<f8", 10_000, 1000, {"compression": "gzip", "compression_opts": 6}, True),
    ("<f8", 10_001, 1000, {"compression": "gzip", "compression_opts": 1}, True),  # a partial last chunk
    ("<f4", 5000, 700, {"compression": "gzip", "shuffle": True}, True),           # shuffle, then deflate
    (">f8", 3000, 512, {"compression": "gzip", "shuffle": True}, True),           # big-endian on disk
    ("<u1", 4000, 999, {"compression": "gzip"}, True),
    ("<i8", 4000, 1000, {}, True),                                                # chunked, no filter
    ("<f8", 4000, 1000, {"compression": "gzip", "fletcher32": True}, False),      # a filter not decoded here
    ("<f8", 4000, 1000, {"compression": "lzf"}, False),
    ("<f8", 4000, None, {}, False),                                               # contiguous
], ids=["gzip6", "partial", "shuffle", "big-endian", "uint8", "unfiltered", "fletcher32", "lzf", "contiguous"])
def test_decode_whole_equals_h5py(tmp_path: Path, dtype: str, n: int, chunk: int | None, opts: dict[str, Any],
                                  decoded: bool) -> None:
    from labels.h5chunks import decode_at, decode_whole

    values = (np.random.default_rng(n).normal(40.0, 5.0, n) * (100 if dtype[1] in "iu" else 1)).astype(dtype)
    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset("x", data=values, chunks=(chunk,) if chunk else None, **opts)
    raw = path.read_bytes()
    with h5py.File(path, "r") as h5:
        ds = h5["x"]
        got = decode_whole(ds, lambda off, size: memoryview(raw)[off:off + size])
        assert (got is not None) == decoded
        if got is not None:
            assert got.dtype == ds.dtype and got.tobytes() == ds[()].tobytes()
        assert decode_whole(ds, lambda off, size: None) is None  # bytes not held: h5py reads it
        # a few scattered indices, a whole chunk's run, the last index: only their chunks are needed
        idx = np.unique(np.concatenate([np.random.default_rng(1).integers(0, n, 25), np.arange(1200, 1900),
                                        [n - 1]]))
        c = chunk or n
        needed = {int(k) for k in idx // c}
        held = {int(ds.id.get_chunk_info_by_coord((k * c,)).byte_offset) for k in needed} if chunk else set()
        only = lambda off, size: memoryview(raw)[off:off + size] if off in held else None  # noqa: E731
        at = decode_at(ds, idx, only)
        assert (at is not None) == decoded
        if at is not None:
            assert at.dtype == ds.dtype and at.tobytes() == ds[()][idx].tobytes()
            assert decode_at(ds, idx[:0], only).size == 0
        if decoded and len(needed) < -(-n // c):
            assert decode_whole(ds, only) is None  # the chunks not held are not guessed


def test_decode_whole_leaves_unwritten_and_corrupt_chunks_to_h5py(tmp_path: Path) -> None:
    from labels.h5chunks import decode_whole

    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset("x", shape=(4000,), dtype="<f8", chunks=(1000,), compression="gzip")[:1000] = 1.0
    raw = bytearray(path.read_bytes())
    with h5py.File(path, "r") as h5:  # chunks 1-3 never written: fill value, not stored
        assert decode_whole(h5["x"], lambda off, size: memoryview(bytes(raw))[off:off + size]) is None
        info = h5["x"].id.get_chunk_info_by_coord((0,))
    raw[info.byte_offset + 2:info.byte_offset + 40] = bytes(38)  # a corrupt deflate stream
    with h5py.File(path, "r") as h5:
        assert decode_whole(h5["x"], lambda off, size: memoryview(bytes(raw))[off:off + size]) is None
