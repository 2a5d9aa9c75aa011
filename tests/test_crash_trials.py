"""kill -9 of ``python -m flows run biomass-pipeline`` on the small sample world, once in each stage
(alternately at a seeded moment and at a rename of the stage's outputs: sampleworld/crashtrials.py), and a
second run on the same output_dir while one holds it. The lock scenario's first run starts its own ephemeral
Prefect server, which must die with it when it is killed; the trials and the other runs use the session's
test-harness API to save that start-up. After each kill: no process of the run left, no partial file under a final name, no temp of an
earlier dead run. The run after the last kill completes, skips the finished stages, and its rasters
(composites, labels, chips, maps: pixels, profile, tags) and model weights equal an uninterrupted run's.
scripts/crash_soak.py runs 10 trials per stage."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from sampleworld.crashtrials import (
    STAGES,
    baseline,
    group_processes,
    leftovers,
    pipeline_params,
    raster_checksums,
    temps,
    trials,
)

REPO = Path(__file__).resolve().parents[1]


def _env(api_url: str | None = None) -> dict[str, str]:
    """The CLI's environment: with ``api_url`` the runs use that Prefect API (the session's test harness, so
    no run waits for an ephemeral server to start), else each run starts its own ephemeral server."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


@pytest.fixture(scope="module")
def base(world_dir: Path, harness_api: str, tmp_path_factory: pytest.TempPathFactory
         ) -> tuple[Path, Any, dict[str, str]]:
    work = tmp_path_factory.mktemp("crash")
    run, sums = baseline(work, world_dir, _env(harness_api))
    return work, run, sums


def test_kill_in_every_stage_then_resume(base: tuple[Path, Any, dict[str, str]], world_dir: Path,
                                         harness_api: str) -> None:
    work, base_run, sums = base
    assert set(STAGES) <= set(base_run.stage_start), base_run.stage_start
    assert len(sums) > 20 and any("/maps/" in f"/{k}" for k in sums)
    done, final, out = trials(work, world_dir, _env(harness_api), base_run, per_stage=1, seed=13)
    report = [f"{t.stage}: {t.kill} killed={t.killed} left={t.leftovers} partial={t.partial} "
              f"stale={t.stale_temps}" for t in done]
    assert sum(t.killed for t in done) >= len(STAGES) - 1, report  # a seeded delay may outlast a short stage
    assert all(not t.leftovers for t in done), report
    assert all(not t.partial for t in done), report
    assert all(not t.stale_temps for t in done), report
    assert any(t.temps_left for t in done), "no kill ever caught a write in progress: the trials test nothing"
    assert final.rc == 0, "\n".join(line for _, line in final.lines[-30:])
    cached = final.result()["cached_stages"]
    assert {"hls-composite", "gedi-labels", "export-chips"} <= set(cached), cached
    assert temps(out) == {}, temps(out)
    assert raster_checksums(out) == sums
    # finished work is not redone: a resumed run reaches the last stage sooner than the uninterrupted one
    last = [t for t in done if t.stage == "predict-map"][0]
    assert last.to_stage_s is not None and last.to_stage_s < base_run.stage_start["predict-map"]


def test_second_run_on_a_busy_output_dir_refuses(base: tuple[Path, Any, dict[str, str]], world_dir: Path,
                                                 harness_api: str) -> None:
    work, _, _ = base
    out = work / "busy"
    pf = work / "busy.json"
    pf.write_text(json.dumps(pipeline_params(out, world_dir)))
    cmd = [sys.executable, "-m", "flows", "run", "biomass-pipeline", "--params", str(pf)]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(),
                             start_new_session=True)
    try:
        assert first.stdout is not None
        for line in first.stdout:  # the first run holds the folder once its pipeline flow began
            if "for flow 'sample-world'" in line:
                break
        second = subprocess.run(cmd, capture_output=True, text=True, env={**_env(harness_api), "AGB_LOCK_WAIT_S": "1"},
                                timeout=300)
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    assert second.returncode == 1, second.stderr[-2000:]
    err = second.stderr
    assert f"output folder {out.resolve()} is in use by biomass-pipeline (pid {first.pid} on host" in err, err[-2000:]
    assert "waited 1 s and gave up" in err
    assert leftovers(first.pid) == []
    # the kill released the lock: a third run takes it over at once and reports the dead holder
    third = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env={**_env(harness_api), "AGB_LOCK_WAIT_S": "0"}, start_new_session=True)
    try:
        assert third.stdout is not None
        seen = ""
        t0 = time.monotonic()
        for line in third.stdout:
            seen += line
            if "took over the lock" in line or "for flow 'hls-composite'" in line or time.monotonic() - t0 > 240:
                break
    finally:
        os.kill(third.pid, signal.SIGKILL)
        third.wait()
    assert f"took over the lock of biomass-pipeline (pid {first.pid}" in seen, seen[-2000:]
    assert leftovers(third.pid) == [] and group_processes(third.pid) == []
