"""One run per output folder (core.runlock) and the cleanup of dead runs' temps (core.files), with real
processes: a holder in a subprocess, a second run in another, kill -9 of the holder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.files import TEMP_NAME, atomic_path, clean_dead_temps, staged, temp_sibling
from core.runlock import LOCK_NAME, OutputDirBusy, run_lock

REPO = Path(__file__).resolve().parents[1]
HOLD = """
import sys, time
from core.runlock import run_lock
with run_lock(sys.argv[1], "holder-run", wait_s=0):
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
print("released", flush=True)
"""
TRY = """
import sys, time
from core.runlock import OutputDirBusy, run_lock
t0 = time.monotonic()
try:
    with run_lock(sys.argv[1], "second-run", wait_s=float(sys.argv[2])) as prev:
        print("GOT", round(time.monotonic() - t0, 2), repr(prev), flush=True)
except OutputDirBusy as exc:
    print("BUSY", round(time.monotonic() - t0, 2), exc, flush=True)
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def _holder(folder: Path, seconds: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), str(seconds)], stdout=subprocess.PIPE,
                            text=True, env=_env())
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def _second(folder: Path, wait_s: float) -> str:
    return subprocess.run([sys.executable, "-c", TRY, str(folder), str(wait_s)], capture_output=True, text=True,
                          env=_env(), timeout=60, check=True).stdout.strip()


def test_second_run_refuses_naming_the_folder_and_the_holder(tmp_path: Path) -> None:
    holder = _holder(tmp_path, 30)
    try:
        out = _second(tmp_path, 0.5)
    finally:
        holder.kill()
        holder.wait()
    assert out.startswith("BUSY"), out
    waited = float(out.split()[1])
    assert 0.5 <= waited < 5
    assert str(tmp_path.resolve()) in out and f"pid {holder.pid}" in out and "holder-run" in out
    assert "started 20" in out and "host " in out and "AGB_LOCK_WAIT_S" in out


def test_second_run_waits_for_the_first_to_finish(tmp_path: Path) -> None:
    holder = _holder(tmp_path, 1.5)
    out = _second(tmp_path, 30)
    holder.wait(10)
    assert out.startswith("GOT"), out
    assert 0.5 < float(out.split()[1]) < 20
    assert out.endswith("{}")  # the first run finished cleanly: nobody to report


def test_lock_of_a_killed_run_is_taken_over_at_once(tmp_path: Path) -> None:
    holder = _holder(tmp_path, 60)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    out = _second(tmp_path, 0)  # no wait: the kernel released the flock with the process
    assert out.startswith("GOT"), out
    assert f"'pid': {holder.pid}" in out and "holder-run" in out  # the dead holder is reported


def test_lock_is_reentrant_in_one_process_and_covers_sub_folders(tmp_path: Path) -> None:
    with run_lock(tmp_path, "outer", wait_s=0) as first:
        assert first == {}
        with run_lock(tmp_path / "model", "inner", wait_s=0) as inner:
            assert inner is None  # a stage of this run: no second lock, no deadlock
        holder_doc = json.loads((tmp_path / LOCK_NAME).read_text())
        assert holder_doc["pid"] == os.getpid() and holder_doc["what"] == "outer"
        out = _second(tmp_path, 0)
        assert out.startswith("BUSY") and "outer" in out
    assert (tmp_path / LOCK_NAME).read_text() == ""
    assert _second(tmp_path, 0).startswith("GOT")


def test_busy_error_type(tmp_path: Path) -> None:
    holder = _holder(tmp_path, 30)
    try:
        with pytest.raises(OutputDirBusy, match="is in use by holder-run"), run_lock(tmp_path, "me", wait_s=0.3):
            pass
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("final,kind,ext", [
    ("a.tif", "tmp", ""), ("chips", "tmp", ""), ("images.npy", "tmp", ".npy"), ("x.png", "tmp", ".png"),
    ("hls_items.json", "staged", ""), ("with.dots.in.name.tif", "tmp", ""), ("a.tif", "tmp", ".scratch.tif"),
])
def test_temp_names_carry_the_owning_pid(tmp_path: Path, final: str, kind: str, ext: str) -> None:
    tmp = temp_sibling(tmp_path / final, kind=kind, ext=ext)
    m = TEMP_NAME.match(tmp.name)
    assert m is not None and int(m["pid"]) == os.getpid() and m["final"] == final
    assert tmp.parent == tmp_path


def test_final_names_are_not_temp_names() -> None:
    for name in ("T10SEG_2024.tif", ".cache", "best.ckpt", "last.ckpt", ".agb-run.lock", "done.json",
                 "a.tmp", ".x.tmp", "metrics.json"):
        assert TEMP_NAME.match(name) is None, name


def test_cleanup_removes_dead_runs_temps_only(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    dead_pid = int(dead.stdout)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / "sub" / "deep").mkdir(parents=True)
        dead_file = tmp_path / "sub" / f".a.tif.tmp-{dead_pid}"
        dead_dir = tmp_path / f".chips.tmp-{dead_pid}"
        dead_npy = tmp_path / "sub" / "deep" / f".images.npy.tmp-{dead_pid}.npy"
        dead_staged = tmp_path / f".hls_items.json.staged-{dead_pid}"
        live_file = tmp_path / "sub" / f".b.tif.tmp-{live.pid}"
        mine = tmp_path / f".c.tif.tmp-{os.getpid()}"
        finals = [tmp_path / "sub" / "a.tif", tmp_path / "keep.tmp"]
        for p in (dead_file, dead_npy, dead_staged, live_file, mine, *finals):
            p.write_text("x")
        dead_dir.mkdir()
        (dead_dir / "chip.tif").write_text("x")
        removed = clean_dead_temps(tmp_path)
        assert sorted(removed) == sorted([dead_file, dead_dir, dead_npy, dead_staged])
        assert all(p.exists() for p in (live_file, mine, *finals))
        assert not any(p.exists() for p in removed)
    finally:
        live.kill()
        live.wait()


def test_atomic_and_staged_writes_use_the_recognised_names(tmp_path: Path) -> None:
    seen = []
    with atomic_path(tmp_path / "x.tif") as tmp:
        seen.append(tmp.name)
        tmp.write_text("1")
    with staged() as st:
        t = st.path(tmp_path / "y.json")
        seen.append(t.name)
        t.write_text("{}")
    assert all(TEMP_NAME.match(n) for n in seen), seen
    assert (tmp_path / "x.tif").read_text() == "1" and (tmp_path / "y.json").exists()


def test_waiting_is_bounded_by_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    holder = _holder(tmp_path, 30)
    monkeypatch.setenv("AGB_LOCK_WAIT_S", "0.4")
    t0 = time.monotonic()
    try:
        with pytest.raises(OutputDirBusy, match="waited 0 s"), run_lock(tmp_path, "me"):
            pass
    finally:
        holder.kill()
        holder.wait()
    assert time.monotonic() - t0 < 5
