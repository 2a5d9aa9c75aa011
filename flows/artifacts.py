"""Prefect UI artifacts: markdown summaries, tables, progress, and the embedding of PNG quicklooks.

Quicklooks are rendered by the engine module :mod:`core.quicklooks` as PNG files beside the outputs; here they
are embedded in markdown artifacts as data URIs (small), so the UI shows them without a file server.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _prefect_available() -> bool:
    try:
        from prefect.context import FlowRunContext, TaskRunContext

        return FlowRunContext.get() is not None or TaskRunContext.get() is not None
    except ImportError:  # pragma: no cover - prefect is a dependency
        return False


def _key(text: str) -> str:
    """Artifact keys: lowercase letters, digits and dashes."""
    out = "".join(c if c.isalnum() else "-" for c in text.lower())
    return "-".join(filter(None, out.split("-")))[:100]


def markdown(key: str, text: str, description: str = "") -> None:
    if not _prefect_available():
        return
    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact(markdown=text, key=_key(key), description=description or None)


def table_md(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


class Progress:
    """A Prefect progress artifact (0-100 %), a no-op outside a flow run; and a progress bar on stderr when
    stdout is a terminal (quiet otherwise: logs, pipes, workers). ``stream``: where the bar goes (tests)."""

    def __init__(self, key: str, description: str = "", *, stream: Any = None) -> None:
        import sys

        self.id = None
        self.description = description or key
        self._stream = stream if stream is not None else (sys.stderr if _is_terminal(sys.stdout) else None)
        if _prefect_available():
            from prefect.artifacts import create_progress_artifact

            self.id = create_progress_artifact(progress=0.0, key=_key(key), description=description or None)
        self._bar(0.0)

    def update(self, fraction: float) -> None:
        if self.id is not None:
            from prefect.artifacts import update_progress_artifact

            update_progress_artifact(artifact_id=self.id, progress=float(max(0.0, min(100.0, 100 * fraction))))
        self._bar(fraction)

    def _bar(self, fraction: float, width: int = 30) -> None:
        if self._stream is None:
            return
        f = max(0.0, min(1.0, float(fraction)))
        done = int(round(f * width))
        end = "\n" if f >= 1.0 else ""
        self._stream.write(f"\r{self.description} [{'#' * done}{'.' * (width - done)}] {100 * f:5.1f} %{end}")
        self._stream.flush()


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _png_datauri(png: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()


def image_markdown(title: str, png: Path | str) -> str:
    return f"### {title}\n\n![{title}]({_png_datauri(Path(png))})\n\n`{png}`\n"


def safe_quicklook(fn: Any, *args: Any, **kwargs: Any) -> Path | None:
    """Render a quicklook (a :mod:`core.quicklooks` function); a failure is logged, never fails the stage
    (the data outputs are what matter). Returns the PNG path or None."""
    try:
        res = fn(*args, **kwargs)
    except Exception as exc:  # quicklooks are diagnostics: report, do not lose the run
        log.warning("quicklook %s failed: %s", args[:1], exc)
        return None
    return Path(res.path) if hasattr(res, "path") else Path(res)
