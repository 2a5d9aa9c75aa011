"""Crash trials: ``kill -9`` of ``python -m flows run biomass-pipeline`` at seeded points of each stage.

A trial starts the pipeline CLI (its own session, so every process it starts is found by process group),
waits for the "Beginning subflow run ... for flow '<stage>'" line and kills the flow process (SIGKILL, the
flow process only: Prefect's server and any helper must go away by themselves) either after a seeded delay
within the stage's measured duration, or at the k-th atomic rename of the stage's outputs (just before or
just after it: ``core.files.replace_into``'s ``AGB_CRASH_AT_RENAME`` knob). After each kill it checks:
no process of the run is left (10 s grace), no partial file under a final name (every raster read whole,
every JSON parsed, every checkpoint a whole zip, every PNG ends in IEND), and only the killed run's temps
exist (the run before it cleaned up its predecessors'). A last run must complete and produce rasters
identical (SHA-256) to an uninterrupted baseline run; time saved = the baseline's time to reach a stage
minus a resumed run's. Used by tests/test_crash_trials.py (few trials) and scripts/crash_soak.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.constants import GRANITE_LABEL_NODATA
from core.files import TEMP_NAME as _TEMP

STAGES = ("hls-composite", "gedi-labels", "export-chips", "train-model", "evaluate-model", "predict-map")
RENAME_PART = {"hls-composite": "/composites/", "gedi-labels": "/labels/", "export-chips": "/chips",
               "train-model": "/model/", "evaluate-model": "/eval/", "predict-map": "/maps/"}


def pipeline_params(output_dir: str | Path, world_dir: str | Path) -> dict[str, Any]:
    """The smallest full pipeline: one training season, one map year, the tiny model for one epoch."""
    return {"output_dir": str(output_dir),
            "sample_world": {"size": "small", "seed": 0, "output_dir": str(world_dir)},
            "gedi": {"nodata": GRANITE_LABEL_NODATA},
            "chips": {"chip_size": 48, "split_block_m": 2000, "split_fractions": [0.6, 0.2, 0.2]},
            "training_years": [2024], "map_years": [2024],
            "training": {"model": "tiny", "epochs": 2, "batch_size": 4, "device": "cpu"}}


@dataclass
class Run:
    """One CLI run: exit status, wall seconds, (seconds since start, line) of its output, the planned kill."""

    pid: int
    rc: int
    wall_s: float
    lines: list[tuple[float, str]]
    kill: str = ""
    killed: bool = False
    stage_start: dict[str, float] = field(default_factory=dict)
    stage_end: dict[str, float] = field(default_factory=dict)

    def result(self) -> dict[str, Any]:
        """The flow's JSON result: the last stdout line that is a JSON object (log lines may follow it)."""
        for _, line in reversed(self.lines):
            if line.startswith("{"):
                return json.loads(line)
        raise ValueError("the run printed no JSON result")


def _stage_of(line: str, what: str) -> str | None:
    """The flow name of a "<what> ... for flow '<name>'" log line."""
    if what in line and "for flow '" in line:
        return line.split("for flow '", 1)[1].split("'", 1)[0]
    return None


def run_pipeline(params_file: Path, env: dict[str, str], kill_stage: str | None = None, delay_s: float = 0.0,
                 rename: str | None = None, timeout_s: float = 900.0) -> Run:
    """Run the pipeline CLI; with ``kill_stage`` kill -9 it ``delay_s`` after that stage starts (or when the
    next stage starts, whichever comes first); with ``rename`` (``part:k:before|after``) the run kills itself
    at that rename instead (the next-stage kill stays as a fallback)."""
    run_env = dict(env)
    if rename:
        run_env["AGB_CRASH_AT_RENAME"] = rename
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "flows", "run", "biomass-pipeline", "--params", str(params_file)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=run_env,
                            start_new_session=True)
    run = Run(pid=proc.pid, rc=0, wall_s=0.0, lines=[], kill=rename or (f"{kill_stage}+{delay_s:.2f}s"
                                                                        if kill_stage else ""))
    timer: list[threading.Timer] = []
    names: dict[str, str] = {}  # flow run name -> flow (stage) name

    def kill() -> None:
        if proc.poll() is None:
            run.killed = True
            os.kill(proc.pid, signal.SIGKILL)

    assert proc.stdout is not None
    for line in proc.stdout:
        now = time.monotonic() - t0
        run.lines.append((now, line.rstrip("\n")))
        started = _stage_of(line, "Beginning subflow run")
        if started:
            names[line.split("Beginning subflow run '", 1)[1].split("'", 1)[0]] = started
            run.stage_start.setdefault(started, now)
            if kill_stage and started == kill_stage and not timer and not rename:
                timer.append(threading.Timer(delay_s, kill))
                timer[0].start()
            elif kill_stage and started != kill_stage and kill_stage in run.stage_start:
                kill()  # the stage ended before the delay: kill at the next stage's start
        if "Finished in state" in line and "Flow run '" in line:
            name = names.get(line.split("Flow run '", 1)[1].split("'", 1)[0])
            if name:
                run.stage_end[name] = now
    proc.wait(timeout_s)
    for t in timer:
        t.cancel()
    run.rc, run.wall_s = proc.returncode, time.monotonic() - t0
    run.killed = run.killed or run.rc == -signal.SIGKILL
    return run


def group_processes(pgid: int) -> list[str]:
    """``pid cmdline`` of every live process in process group ``pgid`` (zombies excluded)."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid or fields[0] == "Z":
                continue
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:160]
        except (OSError, IndexError, ValueError):
            continue
        found.append(f"{d.name} {cmd}")
    return found


def leftovers(pgid: int, grace_s: float = 10.0) -> list[str]:
    """Processes of the killed run still alive after ``grace_s`` seconds."""
    deadline = time.monotonic() + grace_s
    while True:
        left = group_processes(pgid)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def _check_file(p: Path) -> str | None:
    """Why ``p`` is not a whole file, or None."""
    try:
        if p.suffix == ".tif":
            import rasterio

            with rasterio.open(p) as ds:
                ds.read()
        elif p.suffix in (".json", ".emd"):
            json.loads(p.read_text())
        elif p.suffix == ".ckpt":
            with zipfile.ZipFile(p) as z:
                bad = z.testzip()
                if bad:
                    return f"bad member {bad}"
        elif p.suffix == ".npy":
            import numpy as np

            np.load(p)
        elif p.suffix == ".png" and not p.read_bytes().endswith(b"IEND\xaeB`\x82"):
            return "PNG without IEND"
        elif p.stat().st_size == 0 and p.name != ".agb-run.lock":
            return "empty"
    except Exception as exc:  # noqa: BLE001 - any failure to read is the finding
        return f"{type(exc).__name__}: {exc}"
    return None


def partial_files(out: Path) -> list[str]:
    """Files under final (non-temp) names under ``out`` that are not whole."""
    bad = []
    for dirpath, dirnames, filenames in os.walk(out):
        dirnames[:] = [d for d in dirnames if not _TEMP.match(d)]
        for name in filenames:
            if _TEMP.match(name):
                continue
            why = _check_file(Path(dirpath) / name)
            if why:
                bad.append(f"{Path(dirpath, name).relative_to(out)}: {why}")
    return bad


def temps(out: Path) -> dict[str, int]:
    """Temp names under ``out`` -> owning pid."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(out):
        for name in [*dirnames, *filenames]:
            m = _TEMP.match(name)
            if m:
                found[str(Path(dirpath, name).relative_to(out))] = int(m["pid"])
    return found


def raster_checksums(out: Path) -> dict[str, str]:
    """SHA-256 of every GeoTIFF of the composites, labels, chips and maps: its pixels, its profile and its
    tags with ``out`` written as ``<out>`` (maps name their checkpoint and composite by path, so two
    folders differ in those tags only) except ``INPUTS_KEY`` (the input files' sizes and mtimes); plus ``model/best.ckpt``'s weights (each tensor's bytes)."""
    import rasterio

    sums = {}
    for p in sorted(out.rglob("*.tif")):
        rel = p.relative_to(out)
        if any(part.startswith(".") for part in rel.parts):
            continue
        h = hashlib.sha256()
        with rasterio.open(p) as ds:
            h.update(ds.read().tobytes())
            h.update(repr(sorted((k, str(v)) for k, v in ds.profile.items())).encode())
            tags = {k: v for k, v in ds.tags().items() if k != "INPUTS_KEY"}  # input files' mtimes
            h.update(json.dumps(tags, sort_keys=True).replace(str(out), "<out>").encode())
            h.update(repr(ds.descriptions).encode())
        sums[str(rel)] = h.hexdigest()
    best = out / "model" / "best.ckpt"
    if best.is_file():
        import torch

        state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
        h = hashlib.sha256()
        for k in sorted(state):
            h.update(k.encode() + state[k].cpu().numpy().tobytes())
        sums["model/best.ckpt:weights"] = h.hexdigest()
    return sums


@dataclass
class Trial:
    stage: str
    kill: str
    killed: bool
    rc: int
    to_stage_s: float | None  # seconds from start to the stage's start (earlier stages resumed or cached)
    leftovers: list[str]
    partial: list[str]
    stale_temps: list[str]  # temps of runs killed before this one (should have been cleaned)
    temps_left: int


def _kill_plan(rng: random.Random, stage: str, i: int, duration_s: float) -> dict[str, Any]:
    """Odd trials (counted over all stages) kill at a rename of the stage's outputs (before or after it),
    even ones at a seeded time within the stage's baseline duration (+10 %)."""
    if i % 2:
        when = rng.choice(["before", "after"])
        return {"kill_stage": stage, "delay_s": 1e9, "rename": f"{RENAME_PART[stage]}:{rng.randint(1, 3)}:{when}"}
    return {"kill_stage": stage, "delay_s": round(rng.uniform(0.0, 1.1 * duration_s), 2)}


def baseline(work: Path, world_dir: Path, env: dict[str, str]) -> tuple[Run, dict[str, str]]:
    """An uninterrupted run into ``work/baseline``: the run and its raster checksums."""
    out = work / "baseline"
    pf = work / "baseline.json"
    pf.write_text(json.dumps(pipeline_params(out, world_dir)))
    run = run_pipeline(pf, env)
    if run.rc != 0:
        raise RuntimeError("baseline run failed:\n" + "\n".join(line for _, line in run.lines[-30:]))
    return run, raster_checksums(out)


def trials(work: Path, world_dir: Path, env: dict[str, str], base: Run, per_stage: int, seed: int,
           stages: tuple[str, ...] = STAGES, log: Any = None) -> tuple[list[Trial], Run, Path]:
    """``per_stage`` kills in each stage, in order, on one output folder; then one run to completion."""
    rng = random.Random(seed)
    out = work / "trials"
    pf = work / "trials.json"
    pf.write_text(json.dumps(pipeline_params(out, world_dir)))
    done: list[Trial] = []
    dead: set[int] = set()
    for stage in stages:
        duration = base.stage_end.get(stage, 5.0) - base.stage_start.get(stage, 0.0)
        for i in range(per_stage):
            run = run_pipeline(pf, env, **_kill_plan(rng, stage, len(done), duration))
            left = leftovers(run.pid)
            for line in left:  # never leave them running, whatever the verdict
                _kill_quietly(int(line.split()[0]))
            now = temps(out)
            t = Trial(stage=stage, kill=run.kill, killed=run.killed, rc=run.rc,
                      to_stage_s=run.stage_start.get(stage), leftovers=left, partial=partial_files(out),
                      stale_temps=sorted(k for k, pid in now.items() if pid in dead), temps_left=len(now))
            if run.killed:
                dead.add(run.pid)
            done.append(t)
            (log or _say)(f"{stage:15s} trial {i + 1}/{per_stage}: kill {t.kill:32s} killed={t.killed} rc={t.rc} "
                f"to-stage={t.to_stage_s} temps={t.temps_left} stale={len(t.stale_temps)} "
                f"left={len(t.leftovers)} partial={len(t.partial)}")
    final = run_pipeline(pf, env)
    return done, final, out


def _say(msg: str) -> None:
    print(msg, flush=True)


def _kill_quietly(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
