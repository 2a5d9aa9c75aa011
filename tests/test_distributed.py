"""The composite stage on a real Dask cluster on loopback: ``dask scheduler`` + two ``dask worker`` processes
(one thread each) started as subprocesses; the result must equal the local run pixel for pixel, and both
workers must have done part of the work."""

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
        while not sched_file.exists():
            if procs[0].poll() is not None or time.monotonic() - t0 > START_TIMEOUT_S:
                pytest.fail(f"dask scheduler did not start:\n{_tail(logs[0])}")
            time.sleep(0.2)
        address = json.loads(sched_file.read_text())["address"]
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


def test_composite_on_dask_cluster_equals_local(small_world: dict[str, Any], stac_url: str, dask_cluster: str,
                                                tmp_path: Path) -> None:
    from distributed import Client

    from compositing.composite import build_composites

    common, local = _search_and_local_composite(small_world, stac_url, tmp_path)
    with Client(dask_cluster) as client:
        before = client.run(lambda dask_worker: dask_worker.state.executed_count)
    dist = build_composites(**common, output_dir=str(tmp_path / "dask"), dask_address=dask_cluster)
    with Client(dask_cluster) as client:
        after = client.run(lambda dask_worker: dask_worker.state.executed_count)

    assert sorted(dist.tiles) == sorted(local.tiles) == sorted(small_world["tiles"])
    done = {addr: after[addr] - before.get(addr, 0) for addr in after}
    assert len(done) == 2 and all(n > 0 for n in done.values()), f"tasks per worker: {done}"
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


def test_composite_survives_a_killed_dask_worker(small_world: dict[str, Any], stac_url: str, dask_cluster: str,
                                                tmp_path: Path) -> None:
    """kill -9 of a worker process while it runs a composite chunk: the scheduler reruns the lost chunks on
    the other worker (or the nanny's restarted one) and the composite equals the local run pixel for pixel."""
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
            dist = build_composites(**common, output_dir=str(tmp_path / "dask"), dask_address=dask_cluster)
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
