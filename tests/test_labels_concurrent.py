"""Granules read concurrently (``labels.engine.read_granules``) and the remote reader's round trips: through
the Earthdata emulator with added latency, the outputs equal a one-after-the-other run byte for byte, the
granules' requests overlap, errors are those of the first failing granule in order, and the metadata walk
(``labels.h5meta``) leaves h5py no metadata read to make over the network."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import rasterio
from shapely.geometry import box

from core.grid import mgrs_tile_grid
from labels import run_gedi_labels
from labels.engine import read_granules
from labels.filters import ShotFilters
from labels.granule import GediReadError
from labels.h5meta import warm_metadata
from labels.reader import _read_open_granule, _resolve_name, metadata_spec, read_granule_shots
from labels.sources import CountingFile
from sampleworld.emulator import EarthdataEmulator
from sampleworld.emulator.config import LinkShape
from sampleworld.serve import CREDENTIAL_VARS, patched_env
from sampleworld.synthetic.granules import synthetic_beam, write_l4a_granule

AOI = [-122.45, 40.05, -122.35, 40.15]
SEASON = "2023-06-01_2023-09-30"
DT0 = (datetime(2023, 6, 9, 5, 14, 30) - datetime(2018, 1, 1)).total_seconds()
TOKEN = "tok-concurrent"  # noqa: S105 (the emulator's, no credential)


def _name(k: int) -> str:
    return f"GEDI04_A_2023{160 + k:03d}051430_O{25001 + 15 * k:05d}_02_T01234_02_004_02_V002.h5"


def _granule(folder: Path, k: int) -> Path:
    rng = np.random.default_rng(k)
    beams = {b: synthetic_beam(20000, (-122.5 + 0.01 * i + 0.005 * k, -122.3 + 0.01 * i), (39.95, 40.25), rng,
                               beam_index=i, delta_time0=DT0) for i, b in enumerate(("BEAM0000", "BEAM0101"))}
    return write_l4a_granule(folder / _name(k), beams, filler=4, chunk=2000, seed=k)


@pytest.fixture(scope="module")
def granules(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("gedi")
    return [_granule(folder, k) for k in range(4)]


@pytest.fixture(scope="module")
def composite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pyproj import Transformer

    tile = mgrs_tile_grid("10TEK")
    t = Transformer.from_crs("EPSG:4326", tile.crs, always_xy=True)
    xs, ys = t.transform([AOI[0], AOI[2], AOI[0], AOI[2]], [AOI[1], AOI[1], AOI[3], AOI[3]])
    grid = tile.clip((min(xs), min(ys), max(xs), max(ys)))
    path = tmp_path_factory.mktemp("comp") / "composites" / "10TEK" / f"{SEASON}.tif"
    path.parent.mkdir(parents=True)
    with rasterio.open(path, "w", driver="GTiff", width=grid.width, height=grid.height, count=1, dtype="float32",
                       crs=grid.crs, transform=grid.affine, nodata=-9999.0) as ds:
        ds.write(np.zeros(grid.shape, np.float32), 1)
        ds.update_tags(MGRS_TILE=grid.tile, SEASON=SEASON)
    return path


@pytest.fixture(scope="module")
def emulator(granules: list[Path]) -> Iterator[EarthdataEmulator]:
    link = LinkShape(latency_s=0.02)
    with EarthdataEmulator({"gedi": granules[0].parent}, tokens=[TOKEN], link=link) as emu:
        env: dict[str, str | None] = {k: None for k in CREDENTIAL_VARS}
        env.update(EARTHDATA_TOKEN=TOKEN, EARTHDATA_HOSTS=",".join(emu.hosts))
        with patched_env(env):
            yield emu


def _comparable(res: Any) -> dict[str, Any]:
    """The result without the paths (they name the output folder)."""
    return {k: v for k, v in vars(res).items() if k not in ("shots", "labels")}


def test_concurrent_read_equals_sequential_and_overlaps(emulator: EarthdataEmulator, granules: list[Path],
                                                        composite: Path, tmp_path: Path) -> None:
    urls = [emulator.data_url("gedi", p.name) for p in granules]
    seq = run_gedi_labels(aoi=AOI, granules=urls, composites=str(composite), output_dir=str(tmp_path / "seq"),
                          read_workers=1)
    emulator.wait_idle()
    emulator.reset_stats()
    done: list[tuple[int, int]] = []
    conc = run_gedi_labels(aoi=AOI, granules=urls, composites=str(composite), output_dir=str(tmp_path / "conc"),
                           read_workers=4, on_granule=lambda d, n: done.append((d, n)))
    emulator.wait_idle()
    assert seq.n_shots > 0 and len(seq.granules_used) == 4
    assert _comparable(conc) == _comparable(seq)
    assert Path(conc.shots).read_bytes() == Path(seq.shots).read_bytes()  # the merged GeoParquet, bit for bit
    with rasterio.open(conc.labels["10TEK"]) as a, rasterio.open(seq.labels["10TEK"]) as b:
        assert a.read().tobytes() == b.read().tobytes() and a.tags() == b.tags()
    assert done == [(i, 4) for i in range(1, 5)]
    # the granules' requests overlap in time on the signed host
    spans: dict[str, list[tuple[float, float]]] = {}
    for r in emulator.records("signed"):
        spans.setdefault(r["path"], []).append((r["t"] - r["duration_s"], r["t"]))
    assert len(spans) == 4
    first_last = sorted((min(s for s, _ in v), max(e for _, e in v)) for v in spans.values())
    assert any(first_last[i + 1][0] < first_last[i][1] for i in range(3)), first_last


def test_first_failing_granule_in_order_is_raised(granules: list[Path], tmp_path: Path) -> None:
    bad = [tmp_path / _name(10 + k) for k in range(2)]
    for b in bad:  # truncated copies: "cannot open as HDF5"
        b.write_bytes(granules[0].read_bytes()[:5000])
    hrefs = [str(granules[0]), str(bad[0]), str(granules[1]), str(bad[1]), str(granules[2])]
    flt = ShotFilters().to_dict()
    errors = []
    for workers in (1, 4):
        with pytest.raises(GediReadError) as exc:
            read_granules(hrefs, aoi=AOI, filters=flt, output_dir=str(tmp_path / f"o{workers}"),
                          on_read_error="fail", workers=workers)
        errors.append(str(exc.value))
    assert errors[0] == errors[1] and bad[0].name in errors[0]
    skipped = [read_granules(hrefs, aoi=AOI, filters=flt, output_dir=str(tmp_path / f"s{w}"), workers=w)
               for w in (1, 4)]
    assert [r["status"] for r in skipped[0]] == ["ok", "skipped", "ok", "skipped", "ok"]
    strip = [[{k: v for k, v in r.items() if k != "shots"} for r in s] for s in skipped]
    assert strip[0] == strip[1]


def _unwalked_metadata_reads(path: Path, area: Any,
                             flt: ShotFilters | None = None) -> tuple[int, list[tuple[int, int]], int]:
    """(waves, small reads h5py made outside the walked 4 KiB blocks and outside data chunks, metadata
    reads in all) of reading ``path``'s shots in ``area`` after :func:`warm_metadata`."""
    flt = flt or ShotFilters()
    block, data = 4096, path.read_bytes()
    walked: set[int] = set()

    def read(ranges: list[tuple[int, int]]) -> list[bytes]:
        for o, n in ranges:
            if 0 <= o < len(data):
                walked.update(range(o // block, (min(o + n, len(data)) - 1) // block + 1))
        return [data[o:o + n] for o, n in ranges]

    waves = warm_metadata(read, metadata_spec(flt))
    small: list[tuple[int, int]] = []

    class Recording(CountingFile):
        def readinto(self, b: Any) -> int:
            n = len(memoryview(b))
            if n < 4096:
                small.append((self.tell(), n))
            return super().readinto(b)

    chunks: list[tuple[int, int]] = []

    def add_chunks(_: str, obj: Any) -> None:  # the data of every dataset: chunks, or contiguous storage
        if isinstance(obj, h5py.Dataset) and obj.chunks:
            for i in range(obj.id.get_num_chunks()):
                c = obj.id.get_chunk_info(i)
                chunks.append((c.byte_offset, c.byte_offset + c.size))
        elif isinstance(obj, h5py.Dataset) and obj.id.get_offset() is not None:
            chunks.append((obj.id.get_offset(), obj.id.get_offset() + obj.id.get_storage_size()))

    with h5py.File(path) as h5:
        h5.visititems(add_chunks)
    with h5py.File(Recording(path), "r") as h5:
        _read_open_granule(h5, path.name, _resolve_name(str(path), h5), flt, area)
    meta = [(o, n) for o, n in small if not any(a <= o < b for a, b in chunks)]
    missed = [(o, n) for o, n in meta if not all(k in walked for k in range(o // block, (o + n - 1) // block + 1))]
    return waves, missed, len(meta)


def test_metadata_walk_leaves_h5py_no_metadata_read(granules: list[Path]) -> None:
    """After ``warm_metadata`` every small read h5py makes is in the walked blocks or a data chunk."""
    waves, missed, n_meta = _unwalked_metadata_reads(granules[1], box(*AOI))
    assert 3 <= waves <= 12 and n_meta > 20 and not missed, (waves, n_meta, missed)


def test_metadata_walk_on_real_granules(realdata: Path) -> None:
    files = sorted((realdata / "gedi_l4a").glob("GEDI04_A_*.h5"))
    if not files:
        pytest.skip("no real L4A granule")
    for path in files:
        flt = ShotFilters(require_l4_quality=False, drop_degraded=False)  # the samples lack those datasets
        waves, missed, n_meta = _unwalked_metadata_reads(path, box(-180, -90, 180, 90), flt)
        assert waves >= 3 and n_meta > 20 and not missed, (path.name, waves, n_meta, missed)


def test_remote_reader_cuts_the_dependent_chain(emulator: EarthdataEmulator, granules: list[Path]) -> None:
    """The walk and the batched beams: fewer round trips than one request at a time, same shots."""
    from labels import reader, sources

    made: list[Any] = []
    orig_file, orig_warm = sources.HTTPRangeFile, reader.warm_metadata

    def recording(fetch_workers: int, walk: bool) -> type:
        class Rec(orig_file):  # type: ignore[misc, valid-type]
            def __init__(self, *a: Any, **k: Any) -> None:
                super().__init__(*a, fetch_workers=fetch_workers, **k)
                made.append(self)
        if not walk:
            Rec.prefetch_blocks = None  # type: ignore[assignment, misc]
        return Rec

    url = emulator.data_url("gedi", granules[2].name)
    got = []
    try:
        for workers, walk in ((1, False), (8, True)):
            sources.HTTPRangeFile = recording(workers, walk)  # type: ignore[misc]
            reader.warm_metadata = orig_warm if walk else (lambda *a, **k: 0)  # type: ignore[assignment]
            got.append(read_granule_shots(url, box(*AOI), ShotFilters()))
    finally:
        sources.HTTPRangeFile, reader.warm_metadata = orig_file, orig_warm
    before, after = made
    assert got[0].counts == got[1].counts and got[0].counts["kept"] > 0
    for k, v in got[0].columns.items():
        np.testing.assert_array_equal(got[1].columns[k], v)
    assert before.round_trips == before.n_requests + 1  # serial: one each, plus the first request's redirect
    assert after.round_trips * 2 <= before.round_trips, (after.round_trips, before.round_trips)

