"""Benchmark: the area's shots from 10 full-size GEDI granules over an emulated NASA link (a script, not a test).

    nice -n 10 python benchmarks/bench_gedi_link.py [--granules 10] [--shots 150000] [--filler 40] [--keep DIR]
        [--latency-ms 80 --conn-mbps 25 --total-mbps 100] [--variants ours,sequential,no-walk,as-main]

The granules are ``bench_gedi_read``'s full-size synthetic one and ``--granules - 1`` more on other orbits
and tracks over the same area (8 beams x ``--shots``, ``--filler`` float32 datasets a beam; generated once
into ``--keep``). The Earthdata emulator serves them in its own process (bearer token, 307 to the signed
host) with the link shape of every host: 80 ms before each response, 25 MB/s per connection, 100 MB/s per
host (MB = 1e6 bytes). Each variant runs ``labels.engine.run_gedi_labels`` on the granules' protected URLs
(a fresh output folder, a fresh session) in this process:

* ``as-main``: granules one after the other, one request at a time, no metadata walk: the requests of the
  reader before this benchmark (commit 236aa15), the baseline;
* ``sequential``: this reader (metadata walk, every beam's lat/lon then selected chunks in concurrent
  batches), granules one after the other;
* ``no-walk``: granules read concurrently (``read_workers`` = the granule count), without the metadata walk;
* ``ours``: granules read concurrently with the metadata walk (the engine's defaults).

Printed per variant: wall and CPU time, bytes and requests the emulator served (all hosts), requests in
flight at most (signed host's request log), and per granule the round trips of its dependent request chain
(``HTTPRangeFile.round_trips``: one per serial request plus one per redirect hop, one per wave of a
concurrent batch). The limit is ``bytes / total bandwidth + longest granule chain x latency``, i.e.
``body_bytes / 100e6 + max(round_trips) x 0.080`` s; the ratio is wall / limit (goal <= 1.5). The merged
shots GeoParquet of every variant must equal the first's.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_gedi_read import AREA, make_granule  # noqa: E402
from emulated_link import add_link_args, link_shape, traffic  # noqa: E402

TOKEN = "bench-token"  # noqa: S105 (the emulator's token, no real credential)
VARIANTS: dict[str, dict[str, Any]] = {  # fetch_workers None: --fetch-workers (the reader's default)
    "as-main": {"workers": 1, "fetch_workers": 1, "walk": False},
    "sequential": {"workers": 1, "fetch_workers": None, "walk": True},
    "no-walk": {"workers": None, "fetch_workers": None, "walk": False},
    "ours": {"workers": None, "fetch_workers": None, "walk": True},
}


def peak_in_flight(records: list[dict[str, Any]]) -> int:
    """Most requests being answered at once, from the emulator's records (end time ``t``, ``duration_s``)."""
    events = sorted([(r["t"] - r["duration_s"], 1) for r in records] + [(r["t"], -1) for r in records])
    peak = cur = 0
    for _, d in events:
        cur += d
        peak = max(peak, cur)
    return peak


def proc_cpu_s(pid: int | None) -> float:
    """CPU seconds (user + system) process ``pid`` has used so far (0 when unknown)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_variant(name: str, urls: list[str], emu: Any, out: Path, latency_s: float, bw: float,
                fetch_workers: int) -> dict[str, Any]:
    """One engine run of variant ``name`` with the emulator's counters of that run only."""
    from labels import reader, sources
    from labels.engine import run_gedi_labels

    cfg = VARIANTS[name]
    made: list[Any] = []
    orig_file, orig_warm = sources.HTTPRangeFile, reader.warm_metadata

    class Recording(orig_file):  # type: ignore[misc, valid-type]
        def __init__(self, *a: Any, **k: Any) -> None:
            k.setdefault("fetch_workers", cfg["fetch_workers"] or fetch_workers)
            super().__init__(*a, **k)
            made.append(self)

    if not cfg["walk"]:
        Recording.prefetch_blocks = None  # type: ignore[assignment, misc]  # the reader's header batches too
        reader.warm_metadata = lambda *a, **k: 0  # type: ignore[assignment]
    sources.HTTPRangeFile = Recording  # type: ignore[misc]
    emu.reset_stats()
    load0 = os.getloadavg()[0]
    try:
        t, c, e = time.perf_counter(), time.process_time(), proc_cpu_s(emu.pid)
        res = run_gedi_labels(aoi=list(AREA.bounds), granules=urls, output_dir=str(out),
                              read_workers=cfg["workers"] or len(urls))
        dt, dc, de = time.perf_counter() - t, time.process_time() - c, proc_cpu_s(emu.pid) - e
    finally:
        sources.HTTPRangeFile, reader.warm_metadata = orig_file, orig_warm
    tr = traffic(emu)
    chains = sorted(f.round_trips for f in made)
    limit = tr["body_bytes"] / bw + chains[-1] * latency_s
    return {"variant": name, "time_s": dt, "cpu_s": dc, "emulator_cpu_s": de, "n_shots": res.n_shots, "granules": len(res.granules_used),
            "skipped": res.granules_skipped, **tr, "peak_in_flight": peak_in_flight(emu.records("signed")),
            "round_trips": chains, "client_requests": sum(f.n_requests for f in made), "limit_s": limit,
            "over_limit": dt / limit, "load": (load0, os.getloadavg()[0]),
            "shots_sha256": hashlib.sha256(Path(res.shots).read_bytes()).hexdigest()[:16], "shots": res.shots}


def print_variant(r: dict[str, Any]) -> None:
    rt = r["round_trips"]
    print(f"  {r['variant']:<10} {r['time_s']:6.2f} s wall, {r['cpu_s']:5.2f} CPU-s (emulator "
          f"{r['emulator_cpu_s']:.2f}), "
          f"{r['body_bytes'] / 1e6:6.1f} MB in {r['requests']} requests ({r['client_requests']} ranges), peak "
          f"{r['peak_in_flight']} in flight; chain per granule {rt[0]}-{rt[-1]} round trips; limit "
          f"{r['limit_s']:.2f} s; {r['over_limit']:.2f}x the limit; {r['n_shots']:,} shots from {r['granules']} "
          f"granules; load {r['load'][0]:.1f}-{r['load'][1]:.1f}", flush=True)


def compare(figs: list[dict[str, Any]]) -> None:
    """Every variant's merged shots against the first's (file bytes, else the frames), and time ratios."""
    first = figs[0]
    for r in figs[1:]:
        same = r["shots_sha256"] == first["shots_sha256"]
        if not same:
            import geopandas as gpd

            same = gpd.read_parquet(r["shots"]).equals(gpd.read_parquet(first["shots"]))
        print(f"  {r['variant']} shots == {first['variant']} shots: {same} "
              f"(sha256 {r['shots_sha256']} / {first['shots_sha256']}); "
              f"RATIO {r['variant']} / {first['variant']} wall = {r['time_s'] / first['time_s']:.1f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--granules", type=int, default=10)
    ap.add_argument("--shots", type=int, default=150_000, help="shots per beam")
    ap.add_argument("--filler", type=int, default=40, help="extra float32 datasets per beam")
    ap.add_argument("--keep", default=None, help="folder to keep (and re-use) the generated granules")
    ap.add_argument("--variants", default="ours,sequential,no-walk,as-main")
    ap.add_argument("--fetch-workers", type=int, default=None, help="range requests in flight per granule "
                    "(default: labels.sources.FETCH_WORKERS)")
    add_link_args(ap, latency_ms=80.0, conn_mbps=25.0, total_mbps=100.0)
    a = ap.parse_args()
    import geopandas  # noqa: F401 (imported before the first timed run, as for the later ones)

    import labels.engine  # noqa: F401
    from labels.sources import FETCH_WORKERS
    from sampleworld.emulator import EarthdataEmulator
    from sampleworld.serve import CREDENTIAL_VARS, GEDI_PREFIX, patched_env

    folder = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="bench-gedi-link-"))
    folder.mkdir(parents=True, exist_ok=True)
    out_root = Path(tempfile.mkdtemp(prefix="bench-gedi-link-out-"))
    try:
        t = time.perf_counter()
        paths = [make_granule(folder, a.shots, a.filler, k) for k in range(a.granules)]
        size = sum(p.stat().st_size for p in paths)
        print(f"{len(paths)} granules, {size / 1e6:.1f} MB, 8 beams x {a.shots:,} shots, {a.filler} filler datasets "
              f"a beam (generated/found in {time.perf_counter() - t:.1f} s)", flush=True)
        link = link_shape(a)
        bw = (a.total_mbps or a.conn_mbps or float("inf")) * 1e6
        print(f"link: {a.latency_ms:g} ms per request, {a.conn_mbps} MB/s per connection, {a.total_mbps} MB/s "
              f"per host; limit = bytes / {bw / 1e6:g} MB/s + longest granule chain x {a.latency_ms:g} ms", flush=True)
        figs = []
        with EarthdataEmulator({GEDI_PREFIX: folder}, tokens=[TOKEN], mode="process", link=link) as emu:
            env: dict[str, str | None] = {k: None for k in CREDENTIAL_VARS}
            env.update(EARTHDATA_TOKEN=TOKEN, EARTHDATA_HOSTS=",".join(emu.hosts))
            urls = [emu.data_url(GEDI_PREFIX, p.name) for p in paths]
            with patched_env(env):
                for i, name in enumerate(a.variants.split(",")):  # a fresh output folder each (no re-use)
                    r = run_variant(name, urls, emu, out_root / f"{i}-{name}", a.latency_ms / 1000.0, bw,
                                    a.fetch_workers or FETCH_WORKERS)
                    figs.append(r)
                    print_variant(r)
        compare(figs)
    finally:
        shutil.rmtree(out_root, ignore_errors=True)
        if not a.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
