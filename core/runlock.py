"""One run at a time per output folder: an advisory ``flock`` on ``<output_dir>/.agb-run.lock``.

The kernel releases the lock when its holder exits in any way (kill -9 included), so a dead run's lock is
taken over by the next run without any pid guessing; the file's content (pid, host, start time, what
runs) only serves the message shown to a run that finds the folder busy. A second run waits up to
``wait_s`` seconds (``AGB_LOCK_WAIT_S``, default 60; 0 refuses at once) and then refuses with
:class:`OutputDirBusy`. The lock is re-entrant within a process: a stage flow run inside a pipeline that
already holds its output folder (or a parent folder of it) does not lock again.

Locks are advisory and local: they guard runs on one machine (or one NFS client whose server honours
``flock``); runs on several hosts sharing one folder over a network file system are not guarded.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

LOCK_NAME = ".agb-run.lock"
WAIT_ENV = "AGB_LOCK_WAIT_S"
DEFAULT_WAIT_S = 60.0
_POLL_S = 0.25

_held: dict[Path, int] = {}  # resolved folder -> depth of re-entrant holds in this process
_mutex = threading.Lock()


class OutputDirBusy(RuntimeError):
    """Another live run holds the output folder's lock."""


def _holder(lock_file: Path) -> dict[str, Any]:
    try:
        return json.loads(lock_file.read_text() or "{}")
    except (OSError, json.JSONDecodeError):
        return {}


def _describe(h: dict[str, Any]) -> str:
    if not h:
        return "a run that has not written its details yet"
    return (f"{h.get('what', 'a run')} (pid {h.get('pid', '?')} on host {h.get('host', '?')}, "
            f"started {h.get('started', '?')})")


def _held_by_us(folder: Path) -> bool:
    return any(folder == p or p in folder.parents for p in _held)


def wait_seconds() -> float:
    """The bounded wait for a busy folder: ``AGB_LOCK_WAIT_S`` (seconds, >= 0) or 60."""
    raw = os.environ.get(WAIT_ENV, "")
    try:
        return max(0.0, float(raw)) if raw.strip() else DEFAULT_WAIT_S
    except ValueError:
        return DEFAULT_WAIT_S


@contextlib.contextmanager
def run_lock(output_dir: str | os.PathLike[str], what: str, wait_s: float | None = None,
             on_wait: Any = None) -> Iterator[dict[str, Any] | None]:
    """Hold ``output_dir``'s run lock for the block. Yields None when this process already holds it (a
    nested flow), else the details the lock file held: those of a run that died holding it, or ``{}``.

    ``on_wait(message)`` is called once when the folder is busy and the run starts waiting.
    Raises :class:`OutputDirBusy` (naming the folder and the holding run) after ``wait_s`` seconds.
    """
    folder = Path(output_dir).resolve()
    with _mutex:
        if _held_by_us(folder):
            _held[folder] = _held.get(folder, 0) + 1
            reentrant = True
        else:
            reentrant = False
    if reentrant:
        try:
            yield None
        finally:
            with _mutex:
                _held[folder] -= 1
                if not _held[folder]:
                    del _held[folder]
        return
    folder.mkdir(parents=True, exist_ok=True)
    lock_file = folder / LOCK_NAME
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        previous = _acquire(fd, lock_file, folder, what, wait_seconds() if wait_s is None else wait_s, on_wait)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "what": what,
              "started": datetime.now(UTC).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        with _mutex:
            _held[folder] = 1
        try:
            yield previous
        finally:
            with _mutex:
                _held.pop(folder, None)
            os.ftruncate(fd, 0)  # a clean exit leaves an empty lock file: nobody to report as a dead holder
    finally:
        os.close(fd)  # releases the flock


def _acquire(fd: int, lock_file: Path, folder: Path, what: str, wait_s: float, on_wait: Any) -> dict[str, Any]:
    """Take the flock (waiting up to ``wait_s``); returns what the file said before (a dead holder's details)."""
    deadline = time.monotonic() + wait_s
    told = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return _holder(lock_file)
        except BlockingIOError:
            holder = _describe(_holder(lock_file))
            if time.monotonic() >= deadline:
                raise OutputDirBusy(
                    f"output folder {folder} is in use by {holder}; this run ({what}) waited {wait_s:.0f} s and "
                    f"gave up, so that two runs never write the same files at once. Let that run finish (or "
                    f"stop it), use another output_dir, or wait longer with {WAIT_ENV}=SECONDS.") from None
            if not told and on_wait is not None:
                on_wait(f"output folder {folder} is in use by {holder}: waiting up to {wait_s:.0f} s for it")
                told = True
            time.sleep(_POLL_S)
