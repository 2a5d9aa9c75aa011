"""Crash soak: kill -9 the biomass pipeline at seeded points of every stage, then check the resumed run.

    PYTHONPATH=. .venv/bin/python scripts/crash_soak.py [--per-stage 10] [--seed 0] [--work DIR]

Per trial (see sampleworld/crashtrials.py): the kill point (seconds into the stage, or the k-th rename of
the stage's outputs, before/after it), whether processes of the killed run were left behind, partial
files under final names, stale temps of earlier dead runs. At the end: the figures (trials per stage,
time to reach each stage in a resumed run vs the uninterrupted baseline = time saved, the final run's
wall time, raster equality with the baseline). Exit 1 when any guarantee failed. Runs on the small
sample world with a private PREFECT_HOME; about 15 s per trial on 2 idle cores.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sampleworld import generate_world  # noqa: E402
from sampleworld.crashtrials import STAGES, baseline, raster_checksums, temps, trials  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-stage", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", help="work folder (default: a new temp folder)")
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--server", choices=["ephemeral", "shared"], default="ephemeral",
                    help="ephemeral: every run starts (and must take down) its own Prefect server, as the CLI "
                         "does; shared: one `prefect server start` for all runs (faster trials)")
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="crash-soak-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    repo = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": repo + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "PREFECT_HOME": str(work / "prefect-home"), "AGB_LOCK_WAIT_S": "30"}
    world = work / "world"
    generate_world(str(world), size="small", seed=0)
    server = _shared_server(work, env) if args.server == "shared" else None
    try:
        return _soak(args, work, world, env)
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)


def _shared_server(work: Path, env: dict[str, str]) -> subprocess.Popen:
    """``prefect server start`` on a free loopback port; sets PREFECT_API_URL in ``env``."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(work / "prefect-server.log", "wb")  # noqa: SIM115 - the server's log for the soak's life
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port",
                             str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    env["PREFECT_API_URL"] = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(env["PREFECT_API_URL"] + "/health", timeout=5) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(1)
    proc.kill()
    raise RuntimeError(f"prefect server did not start: see {work / 'prefect-server.log'}")


def _soak(args: argparse.Namespace, work: Path, world: Path, env: dict[str, str]) -> int:
    t0 = time.monotonic()
    base, sums = baseline(work, world, env)
    print(f"baseline: {base.wall_s:.1f} s; stage starts " +
          ", ".join(f"{s} {base.stage_start.get(s, float('nan')):.1f}s" for s in STAGES))
    done, final, out = trials(work, world, env, base, args.per_stage, args.seed, tuple(args.stages.split(",")))
    final_sums = raster_checksums(out)
    same = final_sums == sums
    cached = final.result().get("cached_stages") if final.rc == 0 else None
    report = _figures(done, base, final, same, cached, temps(out))
    print(json.dumps(report, indent=2))
    print(f"total {time.monotonic() - t0:.0f} s ({args.server} Prefect server), work folder {work}")
    return 0 if report["ok"] else 1


def _figures(done: list, base, final, same: bool, cached: list | None, left_temps: dict) -> dict:
    per_stage: dict[str, dict] = {}
    for t in done:
        f = per_stage.setdefault(t.stage, {"trials": 0, "killed": 0, "kill_points": [], "to_stage_s": []})
        f["trials"] += 1
        f["killed"] += int(t.killed)
        f["kill_points"].append(t.kill)
        if t.to_stage_s is not None:
            f["to_stage_s"].append(round(t.to_stage_s, 1))
    for stage, f in per_stage.items():
        b = base.stage_start.get(stage)
        later = f["to_stage_s"][1:]  # the first trial of a stage may still finish the stage before it
        f["baseline_to_stage_s"] = round(b, 1) if b is not None else None
        f["time_saved_s"] = round(b - sum(later) / len(later), 1) if later and b is not None else None
    failures = {"leftover_processes": sum(len(t.leftovers) for t in done),
                "partial_files": sum(len(t.partial) for t in done),
                "stale_temps": sum(len(t.stale_temps) for t in done),
                "final_rc": final.rc, "final_temps": len(left_temps), "rasters_equal_baseline": same}
    ok = (not failures["leftover_processes"] and not failures["partial_files"] and not failures["stale_temps"]
          and final.rc == 0 and not left_temps and same)
    return {"ok": ok, "per_stage": per_stage, "checks": failures, "baseline_wall_s": round(base.wall_s, 1),
            "final_wall_s": round(final.wall_s, 1), "final_cached_stages": cached,
            "examples": {"leftovers": [x for t in done for x in t.leftovers][:5],
                         "partial": [x for t in done for x in t.partial][:5],
                         "stale": [x for t in done for x in t.stale_temps][:5]}}


if __name__ == "__main__":
    sys.exit(main())
