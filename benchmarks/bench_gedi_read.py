"""Benchmark: reading the shots of a small area from a full-size GEDI L4A-layout granule (~200 MB, 8 beams).

The granule is generated (``sampleworld.synthetic.granules``): 8 beams x ``--shots`` shots along straight tracks from
51.6 S to 51.6 N, the datasets the reader uses plus ``--filler`` float32 datasets per beam so the file has
the size of a real one (real granules: ~180 datasets a beam, 95-275 MB). gzip chunks of 14200 shots.

Ours: ``labels.reader.read_granule_shots`` (lat/lon first, then only the in-area index ranges of the other
datasets) on a counting file object (bytes handed to HDF5), and over HTTP range requests on a loopback
server (bytes fetched, requests). Baseline, same process: h5py reads every needed dataset of every beam
in full, then masks (what a naive reader does); and the whole file size.

    nice -n 10 .venv/bin/python benchmarks/bench_gedi_read.py [--shots 150000] [--filler 40] [--keep DIR]
"""

from __future__ import annotations

import argparse
import http.server
import shutil
import tempfile
import threading
import time
from pathlib import Path

import h5py
import numpy as np
from shapely.geometry import box

from labels.filters import OPTIONAL_DATASETS, ShotFilters, apply_filters
from labels.granule import BEAM_NAMES
from labels.reader import area_mask, read_granule_shots
from labels.sources import CountingFile
from sampleworld.synthetic.granules import RangeFileHandler, synthetic_beam, write_l4a_granule

NAME = "GEDI04_A_2023160051430_O25001_02_T01234_02_004_02_V002.h5"
AREA = box(-122.6, 40.0, -122.3, 40.3)  # ~25 x 33 km (override with --aoi)


def granule_name(k: int = 0) -> str:
    """File name of synthetic granule ``k`` (``k`` = 0: :data:`NAME`; others: later orbits and tracks)."""
    if k == 0:
        return NAME
    return f"GEDI04_A_2023{160 + k:03d}051430_O{25001 + 15 * k:05d}_02_T{1234 + 97 * k:05d}_02_004_02_V002.h5"


def make_granule(folder: Path, shots: int, filler: int, k: int = 0) -> Path:
    """Granule ``k``: 8 beams ~600 m apart crossing :data:`AREA` at 40.15 N; ``k`` > 0 shifts the track
    west/east by 0.025 deg steps and flips its heading on odd ``k`` (another orbit over the same area)."""
    path = folder / granule_name(k)
    if path.exists():
        return path
    rng = np.random.default_rng(k)
    beams = {}
    t_area = (40.15 + 51.6) / 103.2  # where along the track (0-1) it crosses 40.15 N
    shift = 0.0 if k == 0 else 0.025 * (k - 5)
    slope = -1.0 if k % 2 else 1.0
    for i, b in enumerate(BEAM_NAMES):  # tracks ~600 m apart, crossing the area at 40.15 N
        lon0 = -122.45 + shift + 0.007 * (i - 4)
        lon = (lon0 - slope * 54.0 * t_area, lon0 + slope * 54.0 * (1.0 - t_area))
        beams[b] = synthetic_beam(shots, lon, (-51.6, 51.6), rng, beam_index=i)
    return write_l4a_granule(path, beams, filler=filler)


def naive_read(path: Path, flt: ShotFilters) -> tuple[int, int]:
    """Every needed dataset read in full with h5py, then the area and filters applied."""
    src = CountingFile(path)
    kept = 0
    with h5py.File(src, "r") as h5:
        for beam in [b for b in BEAM_NAMES if b in h5]:
            g = h5[beam]
            cols = {n: g[n][()] for n in (*flt.required_datasets(), *OPTIONAL_DATASETS) if n in g}
            inside = area_mask(AREA, cols["lon_lowestmode"], cols["lat_lowestmode"])
            keep, _ = apply_filters({k: v[inside] for k, v in cols.items()}, flt)
            kept += int(keep.sum())
    src.close()
    return kept, src.bytes_read


def http_read(path: Path, flt: ShotFilters) -> tuple[float, int, int, int]:
    import requests

    from labels import sources

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                          lambda *a, **k: RangeFileHandler(*a, directory=str(path.parent), **k))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    made: list[sources.HTTPRangeFile] = []
    orig = sources.HTTPRangeFile

    class Recording(orig):  # type: ignore[misc, valid-type]
        def __init__(self, *a: object, **k: object) -> None:
            super().__init__(*a, **k)
            made.append(self)

    sources.HTTPRangeFile = Recording  # to read n_requests after the read
    try:
        t = time.perf_counter()
        got = read_granule_shots(f"http://127.0.0.1:{srv.server_address[1]}/{path.name}", AREA, flt,
                                 session=requests.Session())
        dt = time.perf_counter() - t
    finally:
        sources.HTTPRangeFile = orig
        srv.shutdown()
        srv.server_close()
    return dt, got.counts["kept"], got.bytes_read, made[0].n_requests if made else -1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shots", type=int, default=150_000, help="shots per beam")
    ap.add_argument("--filler", type=int, default=40, help="extra float32 datasets per beam")
    ap.add_argument("--keep", default=None, help="folder to keep (and re-use) the generated granule")
    ap.add_argument("--granule", default=None, help="use this L4A file instead of generating one")
    ap.add_argument("--aoi", type=float, nargs=4, default=None, metavar=("MINX", "MINY", "MAXX", "MAXY"))
    a = ap.parse_args()
    if a.aoi:
        global AREA
        AREA = box(*a.aoi)
    folder = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="bench-gedi-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        t = time.perf_counter()
        path = Path(a.granule) if a.granule else make_granule(folder, a.shots, a.filler)
        size = path.stat().st_size
        print(f"granule: {path.name}, {size / 1e6:.1f} MB"
              + ("" if a.granule else f", 8 beams x {a.shots:,} shots") + " "
              f"(generated/found in {time.perf_counter() - t:.1f} s)")
        flt = ShotFilters()
        t, c = time.perf_counter(), time.process_time()
        ours = read_granule_shots(str(path), AREA, flt)
        t_ours, c_ours = time.perf_counter() - t, time.process_time() - c
        t, c = time.perf_counter(), time.process_time()
        kept_naive, bytes_naive = naive_read(path, flt)
        t_naive, c_naive = time.perf_counter() - t, time.process_time() - c
        assert kept_naive == ours.counts["kept"], (kept_naive, ours.counts)
        in_area = ours.counts["input"] - ours.counts["outside_area"]
        print(f"area shots: {in_area:,} of {ours.counts['input']:,}; kept after default filters: "
              f"{ours.counts['kept']:,}")
        print(f"ours (local): {t_ours:.2f} s wall, {c_ours:.2f} s CPU, {ours.bytes_read / 1e6:.1f} MB read = "
              f"{100 * ours.bytes_read / size:.1f} % of the file")
        print(f"naive h5py full datasets: {t_naive:.2f} s wall, {c_naive:.2f} s CPU, {bytes_naive / 1e6:.1f} MB read = "
              f"{100 * bytes_naive / size:.1f} % of the file")
        t_http, kept_http, bytes_http, n_req = http_read(path, flt)
        assert kept_http == ours.counts["kept"]
        print(f"ours over HTTP (loopback, range requests): {t_http:.2f} s, {bytes_http / 1e6:.1f} MB fetched "
              f"= {100 * bytes_http / size:.1f} % of the file in {n_req} requests")
        print(f"RATIO bytes: whole file / ours = {size / ours.bytes_read:.1f}x (HTTP {size / bytes_http:.1f}x); "
              f"time naive / ours = {t_naive / t_ours:.1f}x wall, {c_naive / c_ours:.1f}x CPU")
    finally:
        if not a.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
