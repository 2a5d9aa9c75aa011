"""What every flow does first with its output folder: take the folder's run lock (:mod:`core.runlock`)
and remove the temp files of dead runs (:func:`core.files.clean_dead_temps`).

Nested flows (the stages of a pipeline on the same folder or a sub-folder) re-enter the lock their parent
run holds and skip the cleanup.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from core.files import clean_dead_temps
from core.runlock import run_lock


def _log() -> logging.Logger | logging.LoggerAdapter[Any]:
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("flows")


@contextlib.contextmanager
def guarded(output_dir: str | os.PathLike[str], what: str, skip: tuple[str, ...] = ()) -> Iterator[None]:
    """Hold ``output_dir``'s run lock for the block; on a first (not nested) hold, clean dead runs' temps.

    ``skip``: sub-folders left alone by the cleanup (e.g. a sample world another run may be serving)."""
    log = _log()
    with run_lock(output_dir, what, on_wait=log.warning) as previous:
        if previous is not None:
            if previous:
                log.warning("took over the lock of %s (pid %s on %s, started %s), which did not finish",
                            previous.get("what", "a run"), previous.get("pid"), previous.get("host"),
                            previous.get("started"))
            removed = clean_dead_temps(output_dir, skip=skip)
            if removed:
                log.warning("removed %d temp file(s) of dead runs under %s: %s", len(removed), output_dir,
                            ", ".join(str(Path(p).relative_to(output_dir)) for p in removed[:10]))
        yield
