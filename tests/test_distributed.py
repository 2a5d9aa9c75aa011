"""The composite stage on a real Dask cluster on loopback: ``dask scheduler`` + two ``dask worker`` processes
(one thread each) started as subprocesses; the result must equal the local run pixel for pixel, and both
workers must have done part of the work, per window (``dask_unit="window"``: arrays back to the driver) and
per tile (``dask_unit="tile"``: each worker writes its tiles' COGs)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio

DASK = [sys.executable, "-m", "dask"]
START_TIMEOUT_S = 120.0
CHUNK = 256  # the smallest allowed (HLS block): 4 chunks per small-world tile, spread over both workers
UNITS = ("window", "tile")  # CompositeOptions.dask_unit; the small world's 2 tiles on 2 threads: auto = window


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    for sig, wait_s in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(wait_s)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:] if path.exists() else f"<no {path}>"


def _scheduler_address(sched_file: Path) -> str | None:
    """The scheduler's address from its scheduler file, or None while the file is absent or half-written."""
    try:
        return json.loads(sched_file.read_text())["address"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return None


@pytest.fixture()
def dask_cluster(tmp_path: Path) -> Iterator[str]:
    """Address of a loopback Dask scheduler with two single-threaded workers (separate processes)."""
    from distributed import Client

    sched_file = tmp_path / "scheduler.json"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "DASK_DISTRIBUTED__WORKER__DAEMON": "false"}
    env.pop("AGB_DASK_ADDRESS", None)
    procs: list[subprocess.Popen] = []
    logs: list[Path] = []

    def spawn(name: str, args: list[str]) -> None:
        log = tmp_path / f"{name}.log"
        logs.append(log)
        with open(log, "wb") as fh:
            procs.append(subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
                                          start_new_session=True))

    try:
        spawn("scheduler", [*DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                            "--scheduler-file", str(sched_file)])
        t0 = time.monotonic()
        while (address := _scheduler_address(sched_file)) is None:  # the file appears before it is written
            if procs[0].poll() is not None or time.monotonic() - t0 > START_TIMEOUT_S:
                pytest.fail(f"dask scheduler did not start:\n{_tail(logs[0])}")
            time.sleep(0.2)
        assert address.startswith("tcp://127.0.0.1:"), address
        for i in (1, 2):
            spawn(f"worker{i}", [*DASK, "worker", address, "--nthreads", "1", "--nworkers", "1",
                                 "--host", "127.0.0.1", "--no-dashboard", "--name", f"w{i}",
                                 "--memory-limit", "1.5GiB", "--local-directory", str(tmp_path / f"w{i}")])
        with Client(address, timeout=60) as client:
            try:
                client.wait_for_workers(2, timeout=START_TIMEOUT_S)
            except TimeoutError:
                pytest.fail("dask workers did not join:\n" + "\n".join(_tail(p) for p in logs))
        yield address
    finally:
        for proc in reversed(procs):
            _stop(proc)


def _read(path: str) -> tuple[np.ndarray, dict[str, Any]]:
    with rasterio.open(path) as ds:
        meta = {"crs": ds.crs, "transform": ds.transform, "nodata": ds.nodata, "dtype": ds.dtypes,
                "descriptions": ds.descriptions, "tags": ds.tags()}
        return ds.read(), meta


def _search_and_local_composite(w: dict[str, Any], stac_url: str, tmp_path: Path) -> tuple[dict[str, Any], Any]:
    """(the build_composites arguments of the small world's season, its composite on local threads)."""
    from compositing.composite import build_composites
    from compositing.contracts import CompositeOptions, SearchOptions
    from compositing.search import search_hls

    search = search_hls(aoi=w["aoi"], year=w["year"], options=SearchOptions(stac_url=stac_url, max_cloud_cover=80),
                        output_dir=str(tmp_path / "search"))
    common = dict(items_json=search.items_json, aoi=w["aoi"], season=w["season"],
                  options=CompositeOptions(chunk_size=CHUNK))
    return common, build_composites(**common, output_dir=str(tmp_path / "local"), dask_address=None, threads=2)


def _with_unit(common: dict[str, Any], unit: str) -> dict[str, Any]:
    import dataclasses

    return {**common, "options": dataclasses.replace(common["options"], dask_unit=unit)}


@pytest.mark.parametrize("unit", UNITS)
def test_composite_on_dask_cluster_equals_local(small_world: dict[str, Any], stac_url: str, dask_cluster: str,
                                                tmp_path: Path, unit: str) -> None:
    from distributed import Client, get_task_stream

    from compositing.composite import build_composites
    from compositing.dask_tiles import TILE_TASK_KEY

    common, local = _search_and_local_composite(small_world, stac_url, tmp_path)
    with Client(dask_cluster) as client:
        before = client.run(lambda dask_worker: dask_worker.state.executed_count)
        with get_task_stream(client) as ts:
            dist = build_composites(**_with_unit(common, unit), output_dir=str(tmp_path / "dask"),
                                    dask_address=dask_cluster)
        after = client.run(lambda dask_worker: dask_worker.state.executed_count)

    assert dist.dask_unit == unit
    assert sorted(dist.tiles) == sorted(local.tiles) == sorted(small_world["tiles"])
    done = {addr: after[addr] - before.get(addr, 0) for addr in after}
    assert len(done) == 2 and all(n > 0 for n in done.values()), f"tasks per worker: {done}"
    keys = [str(t["key"]) for t in ts.data]
    tile_keys = [k for k in keys if k.startswith(TILE_TASK_KEY)]
    chunk_keys = [k for k in keys if k.startswith("chunk_task")]
    if unit == "tile":  # one task per tile, each run once, and no window fanned back out to the cluster
        assert len(tile_keys) == len(set(tile_keys)) == len(local.tiles) and not chunk_keys, keys
    else:
        assert not tile_keys and chunk_keys and len(chunk_keys) == len(set(chunk_keys)), keys
    for tile, res in local.tiles.items():
        a, meta_a = _read(res.path)
        b, meta_b = _read(dist.tiles[tile].path)
        assert res.path != dist.tiles[tile].path
        assert a.dtype == b.dtype == np.int16 and a.shape == b.shape
        assert np.array_equal(a, b), f"{tile}: {np.count_nonzero(a != b)} pixels differ"
        assert (a[:6] != -9999).any(), f"{tile}: composite is all nodata"
        for key in ("crs", "transform", "nodata", "dtype", "descriptions"):
            assert meta_a[key] == meta_b[key], (tile, key)
        assert json.loads(meta_a["tags"]["SCENE_IDS"]) == json.loads(meta_b["tags"]["SCENE_IDS"])


@pytest.mark.parametrize("unit", UNITS)
def test_composite_survives_a_killed_dask_worker(small_world: dict[str, Any], stac_url: str, dask_cluster: str,
                                                tmp_path: Path, unit: str) -> None:
    """kill -9 of a worker process while it runs a composite chunk (or a whole tile): the scheduler reruns
    the lost tasks on the other worker (or the nanny's restarted one) and the composite equals the local run
    pixel for pixel; no temp is left (tile mode: the driver removes the lost worker's)."""
    import threading

    from distributed import Client

    from compositing.composite import build_composites

    common, local = _search_and_local_composite(small_world, stac_url, tmp_path)
    killed: dict[str, Any] = {}
    stop = threading.Event()
    with Client(dask_cluster) as client:
        victim = sorted(client.scheduler_info()["workers"])[0]
        pid = client.run(os.getpid, workers=[victim])[victim]

        def assassin() -> None:  # kill the worker at the first moment it executes a chunk of this composite
            while not stop.is_set():
                try:
                    busy = client.run(lambda dask_worker: len(dask_worker.state.executing), workers=[victim])
                except Exception:  # noqa: BLE001 - the worker went away some other way
                    return
                if busy.get(victim):
                    os.kill(pid, signal.SIGKILL)
                    killed.update(pid=pid, executing=busy[victim], at=time.monotonic())
                    return
                time.sleep(0.02)

        t = threading.Thread(target=assassin, daemon=True)
        t.start()
        t0 = time.monotonic()
        try:
            dist = build_composites(**_with_unit(common, unit), output_dir=str(tmp_path / "dask"),
                                    dask_address=dask_cluster)
        finally:
            stop.set()
            t.join(10)
        ended = time.monotonic()
    assert killed, "the worker was never seen executing a chunk: nothing was killed"
    assert t0 < killed["at"] < ended, "the worker must die during the composite"
    stat = Path(f"/proc/{killed['pid']}/stat")
    assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z", "the worker is still alive"
    assert sorted(dist.tiles) == sorted(local.tiles) == sorted(small_world["tiles"])
    for tile, res in local.tiles.items():
        a, _ = _read(res.path)
        b, _ = _read(dist.tiles[tile].path)
        assert np.array_equal(a, b), f"{tile}: {np.count_nonzero(a != b)} pixels differ after the worker was killed"
        assert (a[:6] != -9999).any()
    assert not list((tmp_path / "dask").rglob(".*.tmp-*")), "temp files left by the composite"


def test_tile_task_on_a_worker_does_not_fan_out(small_world: dict[str, Any], stac_url: str, dask_cluster: str,
                                               tmp_path: Path) -> None:
    """``composite_tile`` inside a Dask task (Prefect's DaskTaskRunner's case) runs its windows on that task's
    thread: the cluster executes that one task and no chunk task; the COG equals the local run's."""
    from distributed import Client, get_task_stream

    from compositing.composite import composite_tile, group_by_tile, load_items

    common, local = _search_and_local_composite(small_world, stac_url, tmp_path)
    tile = sorted(local.tiles)[0]
    items = group_by_tile(load_items(common["items_json"]))[tile]
    kwargs = dict(tile=tile, items=items, aoi=common["aoi"], season=common["season"], options=common["options"],
                  output_dir=str(tmp_path / "task"))
    with Client(dask_cluster) as client, get_task_stream(client) as ts:
        res = client.submit(composite_tile, **kwargs, pure=False).result()
    assert [str(t["key"]).split("-")[0] for t in ts.data] == ["composite_tile"], [t["key"] for t in ts.data]
    assert np.array_equal(_read(res.path)[0], _read(local.tiles[tile].path)[0])


def test_dask_unit_choice(tmp_path: Path) -> None:
    """auto: tiles when >= 4 tiles per worker thread (and >= 2) and every worker sees the output folder (the
    probe's marker is removed); 'tile' where a worker does not see it is an error naming the folder."""
    from compositing.composite import CompositeError
    from compositing.dask_tiles import choose_dask_unit

    class FakeClient:
        def __init__(self, threads: dict[str, int], sees: bool) -> None:
            self.threads, self.sees = threads, sees

        def nthreads(self) -> dict[str, int]:
            return self.threads

        def run(self, fn: Any, *args: Any) -> dict[str, Any]:
            return {a: fn(*args) if self.sees else False for a in self.threads}

    two = {"w1": 1, "w2": 1}
    out = str(tmp_path / "out")
    assert choose_dask_unit(FakeClient(two, True), "auto", 8, out) == "tile"
    assert choose_dask_unit(FakeClient(two, True), "auto", 7, out) == "window"  # < 4 tiles per thread
    assert choose_dask_unit(FakeClient(two, True), "auto", 2, out) == "window"
    assert choose_dask_unit(FakeClient({"w1": 1}, True), "auto", 4, out) == "tile"
    assert choose_dask_unit(FakeClient({"w1": 1}, True), "auto", 1, out) == "window"  # one tile: windows
    assert choose_dask_unit(FakeClient({"w1": 4}, True), "auto", 15, out) == "window"
    assert choose_dask_unit(FakeClient(two, False), "auto", 8, out) == "window"
    assert choose_dask_unit(FakeClient(two, True), "window", 4, out) == "window"
    assert choose_dask_unit(FakeClient(two, True), "tile", 1, out) == "tile"
    assert choose_dask_unit(FakeClient({}, True), "auto", 4, out) == "window"
    with pytest.raises(CompositeError, match="does not see|not every Dask worker sees"):
        choose_dask_unit(FakeClient(two, False), "tile", 4, out)
    assert not list(Path(out).iterdir()), "probe marker left behind"


@pytest.mark.parametrize(("tiles_per_thread", "unit"), [(1, "tile"), (None, "window")])
def test_hls_composite_flow_chooses_the_unit_once(small_world: dict[str, Any], stac_url: str, dask_cluster: str,
                                                  prefect_harness: None, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch, tiles_per_thread: int | None,
                                                  unit: str) -> None:
    """The hls-composite flow with ``dask_address``: the unit is chosen once for the region (auto: the small
    world's 2 tiles on 2 worker threads are windows; with ``AUTO_TILES_PER_THREAD`` 1 and the output folder
    shared, tiles: one Dask task per tile, no chunk task); the COGs equal the local run's."""
    from distributed import Client, get_task_stream

    import compositing.dask_tiles as dask_tiles
    from flows.params import HlsCompositeParams
    from flows.stages import hls_composite

    if tiles_per_thread is not None:
        monkeypatch.setattr(dask_tiles, "AUTO_TILES_PER_THREAD", tiles_per_thread)
    _, local = _search_and_local_composite(small_world, stac_url, tmp_path)
    params = HlsCompositeParams(aoi=small_world["aoi"], year=small_world["year"], season=small_world["season"],
                                stac_url=stac_url, max_cloud_cover=80, output_dir=str(tmp_path / "flow"),
                                dask_address=dask_cluster)
    with Client(dask_cluster) as client, get_task_stream(client) as ts:
        comps = hls_composite(params).result.composites
    keys = [str(t["key"]) for t in ts.data]
    assert comps.dask_unit == unit
    tile_keys = [k for k in keys if k.startswith(dask_tiles.TILE_TASK_KEY)]
    chunk_keys = [k for k in keys if k.startswith("chunk_task")]
    if unit == "tile":
        assert sorted(k.split("-")[1] for k in tile_keys) == sorted(local.tiles) and not chunk_keys, keys
    else:
        assert chunk_keys and not tile_keys, keys
    for tile, res in local.tiles.items():
        assert np.array_equal(_read(res.path)[0], _read(comps.tiles[tile].path)[0]), tile


def test_dask_task_runner_tile_tasks_do_not_fan_out(small_world: dict[str, Any], stac_url: str, dask_cluster: str,
                                                    prefect_harness: None, tmp_path: Path) -> None:
    """A flow on Prefect's ``DaskTaskRunner`` with one task per tile calling ``composite_tile`` (the
    ``prefect`` variant of benchmarks/bench_region.py): one Dask task per tile, no chunk task, COGs equal
    to the local run's."""
    from distributed import Client, get_task_stream
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE
    from prefect_dask import DaskTaskRunner

    from compositing.composite import composite_tile, group_by_tile, load_items

    common, local = _search_and_local_composite(small_world, stac_url, tmp_path)
    groups = group_by_tile(load_items(common["items_json"]))
    out = str(tmp_path / "prefect")

    @task(cache_policy=NO_CACHE)
    def tile_task(tile: str) -> str:
        return composite_tile(tile=tile, items=groups[tile], aoi=common["aoi"], season=common["season"],
                              options=common["options"], output_dir=out).path

    @flow(task_runner=DaskTaskRunner(address=dask_cluster))
    def region() -> dict[str, str]:
        futures = {tile: tile_task.submit(tile) for tile in groups}
        return {tile: f.result() for tile, f in futures.items()}

    with Client(dask_cluster) as client, get_task_stream(client) as ts:
        paths = region()
    keys = [str(t["key"]) for t in ts.data]
    assert len(keys) == len(set(keys)) == len(groups) and not [k for k in keys if k.startswith("chunk_task")], keys
    for tile, res in local.tiles.items():
        assert np.array_equal(_read(res.path)[0], _read(paths[tile])[0]), tile
