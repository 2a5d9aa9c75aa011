"""core.procs: helpers registered with the watchdog go away when their run is killed with SIGKILL, and
only those (a process whose pid now runs another program is left alone)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUN = """
import subprocess, sys, tempfile, time
from core.procs import on_death, watchdog_pid
helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)  # agb-test-helper"])
other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
folder = tempfile.mkdtemp(prefix="agb-procs-test-")
on_death(kill=helper.pid, marker="agb-test-helper")
on_death(kill=other.pid, marker="not-what-it-runs")
on_death(remove=folder)
print(helper.pid, other.pid, folder, watchdog_pid(), flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_registered_helpers_die_with_a_killed_run() -> None:
    run = subprocess.Popen([sys.executable, "-c", RUN], stdout=subprocess.PIPE, text=True,
                           env={**os.environ, "PYTHONPATH": str(REPO)})
    assert run.stdout is not None
    helper, other, folder, watchdog = run.stdout.readline().split()
    try:
        assert _alive(int(helper)) and _alive(int(watchdog)) and Path(folder).is_dir()
        os.kill(run.pid, signal.SIGKILL)
        run.wait()
        deadline = time.monotonic() + 15
        while (_alive(int(helper)) or Path(folder).exists() or _alive(int(watchdog))) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(int(helper)), "the registered helper outlived its run"
        assert not Path(folder).exists(), "the registered folder outlived its run"
        assert not _alive(int(watchdog)), "the watchdog did not exit"
        assert _alive(int(other)), "a process not running the registered program was killed"
    finally:
        for pid in (int(helper), int(other)):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_no_watchdog_until_something_is_registered() -> None:
    out = subprocess.run([sys.executable, "-c", "import flows, core.procs as p; print(p.watchdog_pid())"],
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert out.stdout.strip() == "None", out.stderr
