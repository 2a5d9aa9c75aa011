"""Region-scale composite on a real Dask cluster (a script, not a test).

    python -m sampleworld generate /tmp/rw --size region
    python benchmarks/bench_region.py --world /tmp/rw [--workers 2] [--chunk 1024] [--variants dask,prefect]

The ``region`` world has four MGRS tiles in two UTM zones (10TGK, 10TGL, 11TKE, 11TKF; tile windows of
about 2400 x 1300 px, 12 scenes). Every variant runs in a fresh driver process (its own peak RSS) and
composites all tiles of the world's AOI into its own folder; each Dask variant on a fresh loopback
``dask scheduler`` + ``--workers`` ``dask worker`` processes (one thread each), as tests/test_distributed.py:

* ``local``        ``build_composites`` in one process on ``--workers`` local threads: the baseline;
* ``dask``         ``build_composites(dask_address=...)`` with ``dask_unit="tile"``: one Dask task per tile,
                   each computing its windows on its worker's thread and writing its COG there;
* ``dask-window``  the same with ``dask_unit="window"``: one Dask task per window, the int16 arrays travel to
                   the driver, which writes the COGs (tiles concurrently, one driver thread per tile);
* ``prefect``      a Prefect flow with ``prefect_dask.DaskTaskRunner(address=...)``, one task per tile calling
                   ``composite_tile``; inside a Dask task the engine runs the tile's windows on that task's
                   thread (no fan-out back to the cluster);
* ``prefect-flow`` the user-facing path: the hls-composite flow's composite step
                   (``flows.stages.composite_tiles``: one ``composite-<TILE>`` Prefect task per tile on the
                   flow's default thread runner, ``dask_address`` given, ``dask_unit`` "auto" decided once).

For each Dask variant it counts the Dask tasks executed (scheduler task stream: every key must be unique
and there must be one per tile in tile mode, with no chunk task, or one per window in window mode: no
tile or chunk computed twice), reads the peak RSS of each worker process, checks the composites equal the
local run's pixel for pixel, and prints throughput per core (input Mpx per wall second per core) against
the local run of the same round.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ASSETS = ("B02", "B03", "B04", "B05", "B06", "B07", "Fmask")


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ------------------------------------------------------------------------------------------- cluster
@contextlib.contextmanager
def dask_cluster(tmp: Path, n_workers: int, memory_limit: str) -> Iterator[str]:
    """Address of a loopback ``dask scheduler`` with ``n_workers`` single-threaded ``dask worker``s."""
    from distributed import Client

    sched_file = tmp / "scheduler.json"
    env = {**os.environ, "PYTHONPATH": str(REPO), "DASK_DISTRIBUTED__WORKER__DAEMON": "false"}
    dask = [sys.executable, "-m", "dask"]
    procs: list[subprocess.Popen] = []

    def spawn(name: str, args: list[str]) -> None:
        with open(tmp / f"{name}.log", "wb") as fh:
            procs.append(subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=tmp,
                                          start_new_session=True))
    try:
        spawn("scheduler", [*dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                            "--scheduler-file", str(sched_file)])
        t0 = time.monotonic()
        while True:  # the scheduler file appears before it is written: wait until it parses
            with contextlib.suppress(FileNotFoundError, json.JSONDecodeError, KeyError):
                address = json.loads(sched_file.read_text())["address"]
                break
            if procs[0].poll() is not None or time.monotonic() - t0 > 300:
                raise SystemExit(f"dask scheduler did not start: {(tmp / 'scheduler.log').read_text()[-2000:]}")
            time.sleep(0.2)
        for i in range(n_workers):
            spawn(f"worker{i}", [*dask, "worker", address, "--nthreads", "1", "--nworkers", "1", "--host",
                                 "127.0.0.1", "--no-dashboard", "--name", f"w{i}", "--memory-limit", memory_limit,
                                 "--local-directory", str(tmp / f"w{i}")])
        with Client(address, timeout=120) as client:
            client.wait_for_workers(n_workers, timeout=300)
        yield address
    finally:
        for proc in reversed(procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def warm_workers(client: Any, modules: tuple[str, ...]) -> None:
    """Import ``modules`` on every worker before timing: long-running workers pay their imports once (the
    local baseline imports before its clock starts too)."""
    import importlib

    for name in modules:
        client.run(importlib.import_module, name)


def _worker_rss_mb(client: Any) -> dict[str, float]:
    """Peak RSS (MB) of every worker process since it started."""
    def peak() -> float:
        import resource as r

        return r.getrusage(r.RUSAGE_SELF).ru_maxrss / 1024.0
    return {client.scheduler_info()["workers"][a]["name"]: v for a, v in client.run(peak).items()}


def _worker_cpu_s(client: Any) -> float:
    def cpu() -> float:
        import resource as r

        ru = r.getrusage(r.RUSAGE_SELF)
        return ru.ru_utime + ru.ru_stime
    return sum(client.run(cpu).values())


# ------------------------------------------------------------------------------------------- variants
def run_local(world: dict[str, Any], out: Path, args: argparse.Namespace) -> dict[str, Any]:
    from compositing.composite import build_composites
    from compositing.contracts import CompositeOptions

    t0, c0 = time.perf_counter(), _cpu_s()
    res = build_composites(items_json=world["hls"]["items_json"], aoi=world["aoi"], season=world["season"],
                           output_dir=str(out), options=CompositeOptions(chunk_size=args.chunk), threads=args.workers)
    return {"time_s": time.perf_counter() - t0, "cpu_s": _cpu_s() - c0, "paths": _paths(res)}


def _run_build(world: dict[str, Any], out: Path, args: argparse.Namespace, unit: str) -> dict[str, Any]:
    from distributed import Client, get_task_stream

    from compositing.composite import build_composites
    from compositing.contracts import CompositeOptions

    with Client(args.address) as client:
        warm_workers(client, ("compositing.composite", "rasterio"))
        w0 = _worker_cpu_s(client)
        with get_task_stream(client) as ts:
            t0, c0 = time.perf_counter(), _cpu_s()
            res = build_composites(items_json=world["hls"]["items_json"], aoi=world["aoi"], season=world["season"],
                                   output_dir=str(out), options=CompositeOptions(chunk_size=args.chunk, dask_unit=unit),
                                   dask_address=args.address)
            dt, dc = time.perf_counter() - t0, _cpu_s() - c0
        return {"time_s": dt, "cpu_s": dc, "worker_cpu_s": _worker_cpu_s(client) - w0, "paths": _paths(res),
                "unit": res.dask_unit, "task_keys": _keys(ts), "worker_peak_rss_mb": _worker_rss_mb(client)}


def run_dask(world: dict[str, Any], out: Path, args: argparse.Namespace) -> dict[str, Any]:
    return _run_build(world, out, args, "tile")


def run_dask_window(world: dict[str, Any], out: Path, args: argparse.Namespace) -> dict[str, Any]:
    return _run_build(world, out, args, "window")


def _keys(ts: Any) -> list[str]:
    return [str(t["key"]) for t in ts.data]


@contextlib.contextmanager
def _prefect(args: argparse.Namespace) -> Iterator[Any]:
    """The Prefect test harness and a client of the cluster, modules imported on the workers."""
    import importlib

    importlib.import_module("flows._env")  # the project's Prefect settings defaults, before Prefect loads
    from distributed import Client
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=300), Client(args.address) as client:
        warm_workers(client, ("compositing.composite", "rasterio", "flows._env", "prefect", "prefect_dask",
                              "prefect.task_engine"))
        yield client


def _timed_flow(client: Any, run: Any) -> dict[str, Any]:
    from distributed import get_task_stream

    w0 = _worker_cpu_s(client)
    with get_task_stream(client) as ts:
        t0, c0 = time.perf_counter(), _cpu_s()
        paths, unit = run()
        dt, dc = time.perf_counter() - t0, _cpu_s() - c0
    return {"time_s": dt, "cpu_s": dc, "worker_cpu_s": _worker_cpu_s(client) - w0, "paths": paths, "unit": unit,
            "task_keys": _keys(ts), "worker_peak_rss_mb": _worker_rss_mb(client)}


def run_prefect(world: dict[str, Any], out: Path, args: argparse.Namespace) -> dict[str, Any]:
    with _prefect(args) as client:
        from prefect import flow, task
        from prefect.cache_policies import NO_CACHE
        from prefect_dask import DaskTaskRunner

        from compositing.composite import composite_tile, group_by_tile, load_items
        from compositing.contracts import CompositeOptions

        groups = group_by_tile(load_items(world["hls"]["items_json"]))

        @task(cache_policy=NO_CACHE)
        def prefect_tile_task(tile: str) -> dict[str, Any]:
            return composite_tile(tile=tile, items=groups[tile], aoi=world["aoi"], season=world["season"],
                                  output_dir=str(out), options=CompositeOptions(chunk_size=args.chunk)).to_dict()

        @flow(task_runner=DaskTaskRunner(address=args.address))
        def region_composite() -> dict[str, Any]:
            futures = {tile: prefect_tile_task.with_options(name=f"composite-{tile}").submit(tile) for tile in groups}
            return {tile: f.result() for tile, f in futures.items()}

        @task(cache_policy=NO_CACHE)
        def noop(i: int) -> int:
            return i

        @flow(task_runner=DaskTaskRunner(address=args.address))
        def warm_up() -> list[int]:  # long-running workers have their Prefect task engine set up already
            return [f.result() for f in [noop.submit(i) for i in range(2 * len(groups))]]

        warm_up()

        def run() -> tuple[dict[str, str], str]:
            return {t: r["path"] for t, r in region_composite().items()}, "tile"
        return _timed_flow(client, run)


def run_prefect_flow(world: dict[str, Any], out: Path, args: argparse.Namespace) -> dict[str, Any]:
    with _prefect(args) as client:
        from prefect import flow, task
        from prefect.cache_policies import NO_CACHE

        from compositing.composite import group_by_tile, load_items
        from compositing.contracts import CompositeOptions
        from flows.stages import composite_tiles

        tiles = list(group_by_tile(load_items(world["hls"]["items_json"])))

        @flow
        def region_composite() -> Any:
            return composite_tiles(world["hls"]["items_json"], tiles, world["aoi"], world["season"],
                                   CompositeOptions(chunk_size=args.chunk), str(out), args.address)

        @task(cache_policy=NO_CACHE)
        def noop(i: int) -> int:
            return i

        @flow
        def warm_up() -> list[int]:  # a long-running flow process has Prefect's engine set up already
            return [f.result() for f in [noop.submit(i) for i in range(len(tiles))]]

        warm_up()

        def run() -> tuple[dict[str, str], str]:
            res = region_composite()
            return _paths(res), res.dask_unit
        return _timed_flow(client, run)


VARIANTS = {"local": run_local, "dask": run_dask, "dask-window": run_dask_window, "prefect": run_prefect,
            "prefect-flow": run_prefect_flow}
DASK_VARIANTS = tuple(v for v in VARIANTS if v != "local")


def _paths(res: Any) -> dict[str, str]:
    return {t: r.path for t, r in res.tiles.items()}


def worker(args: argparse.Namespace) -> None:
    world = json.loads((Path(args.world) / "world.json").read_text())
    base = _peak_rss_mb()
    res = VARIANTS[args.worker](world, Path(args.out), args)
    res.update(variant=args.worker, driver_peak_rss_mb=_peak_rss_mb(), driver_rss_after_imports_mb=base)
    print(json.dumps(res))


# ------------------------------------------------------------------------------------------- driver
def spawn(variant: str, args: argparse.Namespace, out: Path, address: str | None = None) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", variant, "--world", args.world, "--out", str(out),
           "--workers", str(args.workers), "--chunk", str(args.chunk)]
    if address:
        cmd += ["--address", address]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if proc.returncode:
        raise SystemExit(f"variant {variant} failed:\n{proc.stderr[-4000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"  {variant:<12} time={res['time_s']:7.2f} s  driver cpu={res['cpu_s']:6.2f} s"
          + (f"  workers cpu={res['worker_cpu_s']:6.2f} s" if "worker_cpu_s" in res else "")
          + f"  driver peak RSS={res['driver_peak_rss_mb']:6.0f} MB", flush=True)
    return res


def expected_windows(world: dict[str, Any], chunk: int) -> int:
    from compositing.composite import chunk_windows, group_by_tile, load_items, tile_grid

    return sum(len(chunk_windows(tile_grid(t, world["aoi"]), chunk))
               for t in group_by_tile(load_items(world["hls"]["items_json"])))


def n_tiles(world: dict[str, Any]) -> int:
    from compositing.composite import group_by_tile, load_items

    return len(group_by_tile(load_items(world["hls"]["items_json"])))


def input_mpx(world: dict[str, Any]) -> float:
    """Pixels of every input asset (6 bands + Fmask of every granule), from the file headers."""
    import rasterio

    items = json.loads(Path(world["hls"]["items_json"]).read_text())["features"]
    total = 0
    for it in items:
        for a in ASSETS:
            with rasterio.open(it["assets"][a]["href"]) as ds:
                total += ds.width * ds.height
    return total / 1e6


def same_pixels(a: dict[str, str], b: dict[str, str]) -> bool:
    import numpy as np
    import rasterio

    if sorted(a) != sorted(b):
        return False
    for tile in a:
        with rasterio.open(a[tile]) as x, rasterio.open(b[tile]) as y:
            if x.crs != y.crs or not np.array_equal(x.read(), y.read()):
                return False
    return True


def report(name: str, res: dict[str, Any], local: dict[str, Any], mpx: float, cores: int, windows: int,
           tiles: int) -> dict:
    keys = res["task_keys"]
    chunks = [k for k in keys if k.startswith("chunk_task")]
    expected = tiles if res["unit"] == "tile" else windows
    each_once = len(keys) == len(set(keys)) == expected and (res["unit"] != "tile" or not chunks)
    per_core = mpx / res["time_s"] / cores
    base = mpx / local["time_s"] / cores
    fig = {"time_s": res["time_s"], "mpx_s_per_core": per_core, "per_core_vs_local": per_core / base,
           "cpu_vs_local": local["cpu_s"] / (res["worker_cpu_s"] + res["cpu_s"]), "unit": res["unit"],
           "task_executions": len(keys), "unique_task_keys": len(set(keys)), "chunk_task_executions": len(chunks),
           "expected_tasks": expected, "each_task_once": each_once, "windows": windows, "tiles": tiles,
           "worker_cpu_s": res["worker_cpu_s"], "driver_cpu_s": res["cpu_s"],
           "worker_peak_rss_mb": res["worker_peak_rss_mb"], "driver_peak_rss_mb": res["driver_peak_rss_mb"],
           "pixel_identical_to_local": same_pixels(res["paths"], local["paths"])}
    print(f"  {name}: unit {res['unit']}; {per_core:.1f} input Mpx/s per core = {fig['per_core_vs_local']:.2f} x local "
          f"[>= 0.90] (CPU {fig['cpu_vs_local']:.2f} x); Dask tasks executed {len(keys)} (unique {len(set(keys))}, "
          f"expected {expected} = one per {res['unit']}; chunk tasks {len(chunks)}) [each once: {each_once}]; "
          f"worker peak RSS {res['worker_peak_rss_mb']} MB; identical to local: {fig['pixel_identical_to_local']}")
    return fig


def run_round(args: argparse.Namespace, tmp: Path, mpx: float, windows: int, tiles: int) -> dict[str, Any]:
    """One local run, then each Dask variant on a fresh cluster; ratios against this round's local run."""
    local = spawn("local", args, tmp / "local")
    figs: dict[str, Any] = {"local": {"time_s": local["time_s"], "mpx_s_per_core": mpx / local["time_s"] / args.workers,
                                      "cpu_s": local["cpu_s"], "peak_rss_mb": local["driver_peak_rss_mb"]}}
    for name in args.variants:
        (tmp / f"c-{name}").mkdir()
        with dask_cluster(tmp / f"c-{name}", args.workers, args.memory_limit) as address:
            res = spawn(name, args, tmp / name, address)
        figs[name] = report(name, res, local, mpx, args.workers, windows, tiles)
    return figs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", required=True)
    ap.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)), help="dask workers (1 thread "
                    "each) = local threads of the baseline")
    ap.add_argument("--chunk", type=int, default=1024)
    ap.add_argument("--memory-limit", default="2GiB", help="per dask worker")
    ap.add_argument("--repeat", type=int, default=2, help="rounds (local + the variants) for the spread")
    ap.add_argument("--variants", default=",".join(DASK_VARIANTS), help=f"Dask variants, comma-separated, of "
                    f"{','.join(DASK_VARIANTS)} (default: all)")
    ap.add_argument("--skip-prefect", action="store_true", help="leave out the Prefect variants")
    ap.add_argument("--json", default=None, help="also write all figures to this JSON file")
    ap.add_argument("--worker", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--address", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    args.variants = [v for v in args.variants.split(",") if v and not (args.skip_prefect and v.startswith("prefect"))]
    if unknown := set(args.variants) - set(DASK_VARIANTS):
        ap.error(f"unknown variants {sorted(unknown)}; choose among {DASK_VARIANTS}")
    world = json.loads((Path(args.world) / "world.json").read_text())
    mpx, windows, tiles = input_mpx(world), expected_windows(world, args.chunk), n_tiles(world)
    print(f"world {args.world}: tiles {world['tiles']}, {world['hls']['n_scenes']} granules, {mpx:.0f} input Mpx, "
          f"{windows} windows of {args.chunk} px; {args.workers} cores", flush=True)
    rounds = []
    for r in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix=f"bench-region-{r}-") as tmp:
            rounds.append(run_round(args, Path(tmp), mpx, windows, tiles))
    figs: dict[str, Any] = {"input_mpx": mpx, "windows": windows, "tiles": tiles, "cores": args.workers,
                            "rounds": rounds}
    print(f"\nper-core throughput vs the same round's local run, median [min-max] of {args.repeat} rounds:")
    for name in rounds[0]:
        if name != "local":
            v = sorted(rd[name]["per_core_vs_local"] for rd in rounds)
            figs[f"{name}_per_core_vs_local"] = {"median": statistics.median(v), "min": v[0], "max": v[-1]}
            print(f"  {name:<12} {statistics.median(v):.2f} [{v[0]:.2f}-{v[-1]:.2f}]  [>= 0.90]")
    if args.json:
        Path(args.json).write_text(json.dumps(figs, indent=2))
    print(json.dumps(figs))


if __name__ == "__main__":
    main()
