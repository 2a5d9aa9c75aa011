"""Multi-tile composites on a Dask cluster, one task per tile (``CompositeOptions.dask_unit``).

In tile mode each MGRS tile is one Dask task running :func:`compositing.composite.composite_tile` on a
worker, which writes the COG under ``output_dir`` itself: only the small :class:`TileComposite` travels
back. That needs ``output_dir`` visible to every worker, which :func:`workers_see` probes. (The window mode
is :func:`compositing.composite.build_composites`' own: windows as tasks, arrays back to the driver.)
"""

from __future__ import annotations

import dataclasses
import logging
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.area import Season
from core.files import remove_temps_of

from .contracts import TileComposite
from .granite import granite_path
from .runner import dask_client

if TYPE_CHECKING:
    from .composite import CompositeError

log = logging.getLogger(__name__)

TILE_TASK_THREADS = 1  # threads of a whole-tile Dask task's windows: the one thread Dask gave the task
TILE_TASK_KEY = "composite_tile_task"  # key prefix of the whole-tile Dask tasks (dask_unit "tile")
# auto picks tile mode from this many tiles per worker thread: a tile task is the unit of balance, and with
# fewer tiles the threads finish unevenly (4 tiles on 2 single-thread workers, benchmarks/bench_region.py:
# 0.81-0.89x the one-process throughput per core in tile mode, 0.92-1.08x in windows)
AUTO_TILES_PER_THREAD = 4


def composite_tile_task(tile: str, items: list[dict[str, Any]], opts: dict[str, Any]) -> TileComposite:
    """A whole tile as one Dask task: :func:`compositing.composite.composite_tile` on the worker's thread,
    which writes the COG itself."""
    from .composite import composite_tile

    return composite_tile(tile=tile, items=items, **opts)


def workers_see(client: Any, output_dir: str | os.PathLike[str]) -> bool:
    """Whether every worker of ``client`` sees ``output_dir``: the driver writes a marker file there, each
    worker reads it back (``client.run``), the marker is removed. No worker: False."""
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    marker = folder / f".dask-probe-{token}"
    marker.write_text(token)
    try:
        seen = client.run(_reads_token, str(marker), token)
    except Exception as exc:  # noqa: BLE001 - a worker that cannot answer cannot be relied on
        log.info("output folder probe failed on a worker: %s", exc)
        return False
    finally:
        marker.unlink(missing_ok=True)
    return bool(seen) and all(seen.values())


def _reads_token(path: str, token: str) -> bool:
    try:
        return Path(path).read_text() == token
    except OSError:
        return False


def choose_dask_unit(client: Any, requested: str, n_tiles: int, output_dir: str) -> str:
    """``tile`` or ``window`` for ``CompositeOptions.dask_unit`` (see there) on ``client``'s cluster.

    ``tile`` asked for while a worker does not see ``output_dir`` is a :class:`CompositeError`."""
    from .composite import CompositeError

    if requested == "window":
        return "window"
    worker_threads = sum(client.nthreads().values())
    if requested == "auto" and (n_tiles < max(2, AUTO_TILES_PER_THREAD * worker_threads) or worker_threads == 0):
        log.info("dask unit: window (%d tiles, %d worker threads)", n_tiles, worker_threads)
        return "window"
    if not workers_see(client, output_dir):
        if requested == "tile":
            raise CompositeError(f"dask_unit 'tile': not every Dask worker sees {output_dir} (each tile task "
                                 "writes its COG there: mount it on the workers, or use dask_unit 'window')")
        log.info("dask unit: window (the workers do not all see %s)", output_dir)
        return "window"
    log.info("dask unit: tile (%d tiles, %d worker threads, output folder shared)", n_tiles, worker_threads)
    return "tile"


def region_dask_unit(dask_address: str | None, requested: str, n_tiles: int, output_dir: str) -> str | None:
    """:func:`choose_dask_unit` for a region composited one call per tile (a flow's per-tile tasks, each
    given the unit chosen here): None without a cluster (local threads)."""
    with dask_client(dask_address) as client:
        return None if client is None else choose_dask_unit(client, requested, n_tiles, output_dir)


def run_tiles_on_workers(groups: dict[str, list[dict[str, Any]]], opts: dict[str, Any], client: Any
                          ) -> dict[str, TileComposite | CompositeError]:
    """One Dask task per tile (:func:`composite_tile_task`); only the small results travel back. Temps left
    in the tiles' folders by workers lost meanwhile are removed (their pids, from before and after)."""
    from distributed import as_completed

    from .composite import CompositeError

    before = client.run(os.getpid, on_error="ignore")  # a worker dying right now is not one of ours
    task_opts = {**opts, "threads": None, "options": dataclasses.replace(opts["options"], dask_unit="tile")}
    run_id = uuid.uuid4().hex[:8]
    pending = {client.submit(composite_tile_task, tile, items, task_opts, key=f"{TILE_TASK_KEY}-{tile}-{run_id}"): tile
               for tile, items in groups.items()}
    results: dict[str, TileComposite | CompositeError] = {}
    try:
        for fut in as_completed(list(pending)):
            tile = pending.pop(fut)
            try:
                results[tile] = fut.result()
            except CompositeError as exc:
                if opts["options"].on_read_error == "fail":
                    raise
                results[tile] = exc
            finally:
                fut.release()
    finally:
        for fut in pending:
            fut.cancel()
        _remove_lost_temps(client, before, list(groups), opts)
    return {tile: results[tile] for tile in groups}


def _remove_lost_temps(client: Any, before: dict[str, int], tiles: list[str], opts: dict[str, Any]) -> None:
    """Remove the temps of the tiles' outputs written by workers that left the cluster during the run."""
    try:  # every tile task of the run is over: a temp of a worker that does not answer is a leftover
        now = client.run(os.getpid, on_error="ignore")
    except Exception:  # noqa: BLE001 - no worker left to ask: every earlier one is gone
        now = {}
    lost = {pid for addr, pid in before.items() if addr not in now}
    if not lost:
        return
    from .composite import output_paths

    season = Season.from_any(opts["season"])
    for tile in tiles:
        folders = [output_paths(opts["output_dir"], tile, season)[0].parent]
        if opts["options"].granite_layout:
            folders.append(granite_path(opts["output_dir"], tile, season).parent)
        for folder in folders:
            for p in remove_temps_of(folder, lost):
                log.info("removed %s, left by a Dask worker lost during the run", p)
