"""SIGTERM (``timeout``, a worker cancelling a run, ``kill``) stops a CLI flow run cleanly and promptly.

The first SIGTERM raises :class:`RunStopped` in the main thread (inside a flow, Prefect's own handler turns
it into ``TerminationSignal``, marks the run, then re-delivers the signal to this handler). Unwinding removes
the temp files of ``core.files.atomic_path`` / ``StagedFiles``; a watchdog makes sure the process is gone
within ``grace_s`` seconds even when a thread is stuck in a native call: it removes this process's temp
files under ``output_dir`` itself and exits with 143 (128 + SIGTERM). A second SIGTERM exits at once
(after the same clean-up).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from core.files import remove_own_temps

STOPPED_EXIT = 128 + signal.SIGTERM
GRACE_S = 20.0


class RunStopped(BaseException):  # noqa: N818 (not an error: a request to stop)
    """The run was asked to stop (SIGTERM); a BaseException so no ``except Exception`` swallows it."""


def remove_own_temp_files(output_dir: str | None, pid: int | None = None) -> list[Path]:
    """Remove the temp files/folders this process left under ``output_dir`` (every project temp name,
    ``.<name>.tmp-<pid>[.<ext>...]`` and ``.<name>.staged-<pid>``: :data:`core.files.TEMP_NAME`); returns them."""
    if not output_dir or not Path(output_dir).is_dir():
        return []
    return remove_own_temps(output_dir, pid)


class StopOnSigterm:
    """Installs the handler for the CLI run; ``stopped`` says whether a SIGTERM came."""

    def __init__(self, output_dir: str | None, *, grace_s: float = GRACE_S) -> None:
        self.output_dir, self.grace_s = output_dir, grace_s
        self.stopped = False
        self._previous: Any = None

    def __enter__(self) -> StopOnSigterm:
        self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            signal.signal(signal.SIGTERM, self._previous if self._previous is not None else signal.SIG_DFL)
        except (ValueError, TypeError):
            pass

    def _force_exit(self) -> None:
        remove_own_temp_files(self.output_dir)
        sys.stderr.write(f"stopped: SIGTERM received; the run did not unwind within {self.grace_s:g} s, exiting "
                         "now (temp files removed, finished outputs kept)\n")
        sys.stderr.flush()
        os._exit(STOPPED_EXIT)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.stopped:  # a second SIGTERM: the caller does not want to wait
            self._force_exit()
        self.stopped = True
        timer = threading.Timer(self.grace_s, self._force_exit)
        timer.daemon = True
        timer.start()
        raise RunStopped(f"SIGTERM ({signum})")
