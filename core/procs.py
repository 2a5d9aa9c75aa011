"""Helpers of a run that must not outlive it, even when the run is killed with SIGKILL.

A run starts helper processes (Prefect's ephemeral API server, the sample world's ``rustac serve``) and
private temp folders (Earthdata cookie/netrc files, served copies). Normal exits stop and remove them;
a ``kill -9`` (OOM killer, hard cancel) does not run any exit code. :func:`on_death` registers them with
this process's watchdog: one tiny child process (``python -I -S``, ~10 MB) reading registrations from a
pipe. When the pipe reaches end-of-file (the run died or exited) or its parent changes, the watchdog
stops every registered process that still runs the registered program (``marker`` in its command line:
SIGTERM, SIGKILL after 5 s), removes every registered folder, and exits. It polls nothing while the run
lives, and works whichever thread started the helper.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

WATCHDOG = r"""
import json, os, select, shutil, signal, sys, time
parent = int(sys.argv[1])
procs, folders = {}, set()
def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False
def runs(pid, marker):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return marker.encode() in f.read()
    except OSError:
        return False
buf = b""
while True:  # read registrations until end-of-file (every write end closed: the run is gone) ...
    ready, _, _ = select.select([0], [], [], 1.0)
    if not ready:
        if os.getppid() != parent:  # ... or the run is gone while a forked child still holds the pipe
            break
        continue
    chunk = os.read(0, 65536)
    if not chunk:
        break
    buf += chunk
    while b"\n" in buf:
        line, buf = buf.split(b"\n", 1)
        msg = json.loads(line)
        if "kill" in msg:
            procs[msg["kill"]] = msg["marker"]
        if "remove" in msg:
            folders.add(msg["remove"])
        if "forget" in msg:
            procs.pop(msg["forget"], None)
            folders.discard(msg["forget"])
victims = [p for p, m in procs.items() if alive(p) and runs(p, m)]
for p in victims:
    os.kill(p, signal.SIGTERM)
deadline = time.monotonic() + 5
while any(alive(p) for p in victims) and time.monotonic() < deadline:
    time.sleep(0.05)
for p in victims:
    if alive(p):
        os.kill(p, signal.SIGKILL)
for d in folders:
    shutil.rmtree(d, ignore_errors=True)
"""

_lock = threading.Lock()
_state: dict[str, Any] = {"proc": None, "owner": None}


def _watchdog() -> subprocess.Popen[bytes]:
    proc = _state["proc"]
    if proc is None or _state["owner"] != os.getpid() or proc.poll() is not None:
        proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", WATCHDOG, str(os.getpid())],
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, close_fds=True)
        _state.update(proc=proc, owner=os.getpid())
    return proc


def _send(msg: dict[str, Any]) -> None:
    with _lock:
        proc = _watchdog()
        assert proc.stdin is not None
        proc.stdin.write((json.dumps(msg) + "\n").encode())
        proc.stdin.flush()


def on_death(*, kill: int | None = None, marker: str = "", remove: str | os.PathLike[str] | None = None) -> None:
    """When this process ends (any way), stop process ``kill`` if its command line still contains ``marker``,
    and remove folder ``remove``."""
    if kill is not None:
        if not marker:
            raise ValueError("on_death(kill=...) needs the marker of the program the process runs")
        _send({"kill": int(kill), "marker": marker})
    if remove is not None:
        _send({"remove": str(Path(remove).resolve())})


def forget(*, kill: int | None = None, remove: str | os.PathLike[str] | None = None) -> None:
    """Unregister what :func:`on_death` registered (it was stopped or removed normally)."""
    if _state["proc"] is None or _state["owner"] != os.getpid():
        return
    if kill is not None:
        _send({"forget": int(kill)})
    if remove is not None:
        _send({"forget": str(Path(remove).resolve())})


def watchdog_pid() -> int | None:
    """The pid of this process's watchdog (None before the first registration)."""
    proc = _state["proc"]
    return proc.pid if proc is not None and _state["owner"] == os.getpid() else None
