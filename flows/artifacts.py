"""Prefect UI artifacts: markdown summaries, tables, progress and PNG quicklooks of the stage outputs.

Quicklooks are written as PNG files beside the outputs and embedded in markdown artifacts as data URIs
(small, downsampled from the COG overviews), so the UI shows them without a file server.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.constants import IMAGE_NODATA

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
    """A Prefect progress artifact (0-100 %), a no-op outside a flow run."""

    def __init__(self, key: str, description: str = "") -> None:
        self.id = None
        if _prefect_available():
            from prefect.artifacts import create_progress_artifact

            self.id = create_progress_artifact(progress=0.0, key=_key(key), description=description or None)

    def update(self, fraction: float) -> None:
        if self.id is not None:
            from prefect.artifacts import update_progress_artifact

            update_progress_artifact(artifact_id=self.id, progress=float(max(0.0, min(100.0, 100 * fraction))))


def _read_preview(path: str, bands: Sequence[int], max_px: int = 512) -> tuple[np.ndarray, float | None]:
    import rasterio
    from rasterio.enums import Resampling

    with rasterio.open(path) as ds:
        scale = max(1, int(np.ceil(max(ds.width, ds.height) / max_px)))
        shape = (len(bands), max(1, ds.height // scale), max(1, ds.width // scale))
        arr = ds.read(list(bands), out_shape=shape, resampling=Resampling.nearest).astype(np.float32)
        return arr, ds.nodata


def _png_datauri(png: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()


def _save(fig: Any, png: Path) -> Path:
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=80, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return png


def quicklook_rgb(composite: str, png: str) -> Path:
    """True-colour quicklook (B04, B03, B02 = bands 3, 2, 1) stretched 2-98 %."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arr, nodata = _read_preview(composite, (3, 2, 1))
    valid = np.all(arr != (nodata if nodata is not None else IMAGE_NODATA), axis=0)
    rgb = np.zeros(arr.shape[1:] + (3,), np.float32)
    if valid.any():
        lo, hi = np.percentile(arr[:, valid], [2, 98])
        rgb = np.clip((np.moveaxis(arr, 0, -1) - lo) / max(hi - lo, 1e-6), 0, 1)
        rgb[~valid] = 0
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.imshow(rgb)
    ax.set_title(Path(composite).parent.name + " true colour")
    ax.axis("off")
    return _save(fig, Path(png))


def quicklook_band(raster: str, png: str, *, band: int = 1, title: str, cmap: str = "viridis",
                   label: str = "Mg/ha") -> Path:
    """One band as a colour map (labels, biomass maps); nodata transparent."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arr, nodata = _read_preview(raster, (band,))
    data = np.ma.masked_equal(arr[0], nodata if nodata is not None else IMAGE_NODATA)
    fig, ax = plt.subplots(figsize=(5, 5))
    im = ax.imshow(data, cmap=cmap, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, label=label)
    ax.set_title(title)
    ax.axis("off")
    return _save(fig, Path(png))


def image_markdown(title: str, png: Path) -> str:
    return f"### {title}\n\n![{title}]({_png_datauri(png)})\n\n`{png}`\n"


def safe_quicklook(fn: Any, *args: Any, **kwargs: Any) -> Path | None:
    """Render a quicklook; a failure is logged (never fails the stage: the data outputs are what matter)."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # quicklooks are diagnostics: report, do not lose the run
        log.warning("quicklook %s failed: %s", args[:1], exc)
        return None
