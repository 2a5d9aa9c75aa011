"""Errors for people on the command line: one paragraph on the console, the traceback in a log file.

``python -m flows run`` wraps a flow run in :class:`RunLog`: every log record of the run (Prefect's and the
engines', tracebacks included) goes to a log file; the console handlers keep their lines but lose the
tracebacks (unless ``--debug``). On failure the log is kept as ``<output_dir>/logs/<flow>-<UTC time>.log``
(or under the temp folder's ``agb-logs/`` when output_dir is not a usable folder) and its path printed in the
paragraph :func:`explain` writes: what input, what is wrong, what to do. On success it is removed.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _NoTraceback(logging.Formatter):
    """Formats through ``inner`` with the record's exception and stack left out (one line per record)."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info or record.exc_text or record.stack_info:
            record = logging.makeLogRecord(record.__dict__)
            record.exc_info = record.exc_text = record.stack_info = None
        return self.inner.format(record)


def _console_handlers() -> list[logging.Handler]:
    loggers = [logging.getLogger()] + [lg for lg in logging.root.manager.loggerDict.values()
                                       if isinstance(lg, logging.Logger)]
    out: list[logging.Handler] = []
    for lg in loggers:
        for h in lg.handlers:
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler) and h not in out:
                out.append(h)
    return out


class RunLog:
    """Context of one CLI flow run: a log file catching every record, console tracebacks hidden."""

    def __init__(self, flow: str, output_dir: str | None, *, debug: bool = False) -> None:
        self.flow, self.output_dir, self.debug = flow, output_dir, debug
        fd, tmp = tempfile.mkstemp(prefix=f"agb-{flow}-", suffix=".log")
        os.close(fd)
        self.tmp = Path(tmp)
        self.handler = logging.FileHandler(self.tmp, encoding="utf-8")
        self.handler.setFormatter(logging.Formatter(LOG_FORMAT))
        self.handler.setLevel(logging.DEBUG)
        self._swapped: list[tuple[logging.Handler, logging.Formatter | None]] = []
        self._attached: list[logging.Logger] = []

    def __enter__(self) -> RunLog:
        # the root, and every logger that does not propagate to it but has handlers of its own (prefect's)
        roots = [logging.getLogger()] + [lg for lg in logging.root.manager.loggerDict.values()
                                         if isinstance(lg, logging.Logger) and not lg.propagate and lg.handlers]
        for lg in roots:
            lg.addHandler(self.handler)
            self._attached.append(lg)
        if not self.debug:
            for h in _console_handlers():
                self._swapped.append((h, h.formatter))
                h.setFormatter(_NoTraceback(h.formatter))
        return self

    def __exit__(self, *exc: Any) -> None:
        for lg in self._attached:
            lg.removeHandler(self.handler)
        for h, fmt in self._swapped:
            h.setFormatter(fmt)  # type: ignore[arg-type]
        self.handler.close()

    def keep(self, exc: BaseException) -> Path:
        """Append ``exc``'s traceback and move the log where the user will look: returns its path."""
        with open(self.tmp, "a", encoding="utf-8") as fh:
            fh.write(f"\n{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} flow {self.flow} failed:\n")
            fh.write("".join(traceback.format_exception(exc)))
        name = f"{self.flow}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{os.getpid()}.log"
        for folder in self._log_dirs():
            try:
                folder.mkdir(parents=True, exist_ok=True)
                dest = folder / name
                shutil.move(str(self.tmp), dest)
                return dest
            except OSError:
                continue
        return self.tmp

    def discard(self) -> None:
        self.tmp.unlink(missing_ok=True)

    def _log_dirs(self) -> list[Path]:
        dirs = []
        if self.output_dir:
            out = Path(self.output_dir).expanduser()
            if out.is_dir() or not out.exists():
                dirs.append(out / "logs")
        return [*dirs, Path(tempfile.gettempdir()) / "agb-logs"]


_HINTS: dict[str, str] = {
    "AoiError": "Fix the `aoi` parameter: a lon/lat box [minx, miny, maxx, maxy], a GeoJSON geometry, Feature or "
                "FeatureCollection, or the path of a readable GeoJSON file.",
    "TimelineError": "Choose a `year`/`season` inside the missions' timelines (see the message).",
    "EndpointDownError": "Check the network and the provider's status page, then run again: finished files are kept.",
    "HttpError": "Check the URL and the network; a STAC API must answer JSON. Then run again.",
    "SearchError": "Check `stac_url`, `collection`, the area and the season; then run again.",
    "GediSearchError": "Check the GEDI `stac_url`, the area and the season; then run again.",
    "UnsafePathError": "An input names a place outside output_dir; check the input named above (it may be "
                       "damaged or hostile). Nothing was written outside output_dir.",
    "NotADirectoryError": "Choose an `output_dir` that is a folder (or does not exist yet) and is writable.",
    "FileExistsError": "Choose an `output_dir` that is a folder (or does not exist yet) and is writable.",
    "PermissionError": "Choose an `output_dir` you can write to, or fix the file's permissions.",
    "FileNotFoundError": "Check the path named above (a missing input file or folder).",
}
_DEFAULT_HINT = "Fix the input named above and run again; finished stages are kept and not redone."


def _root_cause(exc: BaseException) -> BaseException:
    """Prefect wraps nothing on a local run, but engines may chain: the deepest explicit cause."""
    seen = {id(exc)}
    while exc.__cause__ is not None and id(exc.__cause__) not in seen:
        exc = exc.__cause__
        seen.add(id(exc))
    return exc


def explain(flow: str, exc: BaseException, log_path: Path | None) -> str:
    """One paragraph: which flow failed, the error (it names the input), what to do, where the log is."""
    cause = _root_cause(exc)
    names = [c.__name__ for c in type(cause).__mro__] + [c.__name__ for c in type(exc).__mro__]
    hint = next((_HINTS[n] for n in names if n in _HINTS), _DEFAULT_HINT)
    what = str(exc).strip() or type(exc).__name__
    if cause is not exc and str(cause) not in what:
        what += f" ({str(cause).strip()})"
    where = (f" The full traceback is in {log_path} (or run again with --debug to see it here)."
             if log_path else "")
    return f"error: flow {flow} failed: {what} [{type(exc).__name__}]. {hint}{where}"


def preflight(params: Any) -> list[str]:
    """Problems visible before any run (no server started): ``output_dir`` not a usable folder, an ``aoi``
    file that does not exist. Each as ``parameter: what is wrong; example``."""
    problems = []
    out = getattr(params, "output_dir", None)
    if isinstance(out, str) and out:
        path = Path(out).expanduser()
        parent = next((p for p in [path, *path.parents] if p.exists()), None)
        if path.exists() and not path.is_dir():
            problems.append(f"output_dir: {path} exists and is not a folder; give a folder (new or existing); "
                            "example: -p output_dir=out/run1")
        elif parent is not None and (not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK)):
            problems.append(f"output_dir: {path} cannot be created or written here ({parent} is not a writable "
                            "folder); example: -p output_dir=out/run1")
    aoi = getattr(params, "aoi", None)
    if isinstance(aoi, str) and not aoi.lstrip().startswith("{") and not Path(aoi).expanduser().is_file():
        problems.append(f"aoi: the GeoJSON file {aoi} does not exist (or is not a file); give a readable GeoJSON "
                        "file, a geometry, or a lon/lat box; example: -p aoi=[-122.1,44.2,-121.9,44.35]")
    return problems
