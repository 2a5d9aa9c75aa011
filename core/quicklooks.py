"""PNG quicklooks of the pipeline's rasters (matplotlib, Agg backend), each with a colour bar and its units.

* :func:`true_colour`: a composite's B04/B03/B02 as RGB, one linear 2-98 % stretch for the three bands; the
  colour bar shows that stretch as surface reflectance (unitless, 0-1).
* :func:`band`: one band of a raster (label AGBD, biomass map), Mg/ha by default.
* :func:`label_density`: GEDI shots per km2 from a label raster's ``shot_count`` band, summed over cells.
* :func:`interval_width`: ``agb_upper - agb_lower`` of a map with interval bands (Mg/ha).
* :func:`change`: a difference raster (Mg/ha), diverging colours symmetric around 0 (brown loss, green gain).

Rasters are read decimated to at most ``max_px`` pixels a side (nearest), except label density, which sums
counts over whole cells. Nodata is transparent. PNGs are written atomically; each function returns a
:class:`Quicklook`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.constants import AGB_UNITS, HLS_REFLECTANCE_SCALE, IMAGE_NODATA
from core.contracts import Contract
from core.files import temp_sibling

MAX_PX = 512
DPI = 80


@dataclass(frozen=True)
class Quicklook(Contract):
    """A written PNG: what it shows, its colour scale (``vmin``..``vmax`` in ``units``) and its size."""

    path: str
    kind: str
    title: str
    units: str
    vmin: float
    vmax: float
    width_px: int
    height_px: int
    valid_fraction: float


def _read(path: str, bands: list[int], max_px: int) -> tuple[np.ndarray, np.ndarray]:
    """(data (bands, h, w) float32, valid mask (h, w)) decimated to <= max_px a side."""
    import rasterio
    from rasterio.enums import Resampling

    with rasterio.open(path) as ds:
        scale = max(1, int(np.ceil(max(ds.width, ds.height) / max_px)))
        shape = (len(bands), max(1, ds.height // scale), max(1, ds.width // scale))
        arr = ds.read(bands, out_shape=shape, resampling=Resampling.nearest).astype(np.float32)
        nodata = ds.nodata if ds.nodata is not None else IMAGE_NODATA
    valid = np.all(np.isfinite(arr) & (arr != nodata), axis=0)
    return arr, valid


def _band_index(path: str, name: str, default: int) -> int:
    import rasterio

    with rasterio.open(path) as ds:
        names = [d or "" for d in ds.descriptions]
    return names.index(name) + 1 if name in names else default


def _png_size(png: Path) -> tuple[int, int]:
    head = png.read_bytes()[:24]
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def _render(image: np.ndarray, png: str, *, kind: str, title: str, units: str, cmap: Any, vmin: float,
            vmax: float, valid: np.ndarray, rgb: bool = False) -> Quicklook:
    """Draw ``image`` (masked 2-D, or RGB (h, w, 3) in 0-1) with a colour bar labelled ``units``; save atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    fig, ax = plt.subplots(figsize=(5.6, 5))
    norm = Normalize(vmin=vmin, vmax=vmax if vmax > vmin else vmin + 1.0)
    if rgb:
        ax.imshow(image, interpolation="nearest")
    else:
        ax.imshow(image, cmap=cmap, norm=norm, interpolation="nearest")
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, fraction=0.046, pad=0.04, label=units)
    ax.set_title(title, fontsize=10)
    ax.axis("off")
    out = Path(png)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(out, ext=".png")
    try:
        fig.savefig(tmp, dpi=DPI, bbox_inches="tight", format="png")
        os.replace(tmp, out)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    w, h = _png_size(out)
    return Quicklook(path=str(out), kind=kind, title=title, units=units, vmin=float(norm.vmin), vmax=float(norm.vmax),
                     width_px=w, height_px=h, valid_fraction=float(valid.mean()) if valid.size else 0.0)


def true_colour(composite: str, png: str, *, title: str | None = None, max_px: int = MAX_PX) -> Quicklook:
    """True colour (B04, B03, B02: bands by description, else 3, 2, 1), stretched 2-98 % over the three bands."""
    idx = [_band_index(composite, b, d) for b, d in (("B04", 3), ("B03", 2), ("B02", 1))]
    arr, valid = _read(composite, idx, max_px)
    lo, hi = (np.percentile(arr[:, valid], [2, 98]) if valid.any() else (0.0, 1.0))
    hi = max(float(hi), float(lo) + 1e-6)
    rgb = np.clip((np.moveaxis(arr, 0, -1) - lo) / (hi - lo), 0, 1)
    rgb[~valid] = 1.0  # nodata white
    return _render(rgb, png, kind="true_colour", title=title or f"{Path(composite).parent.name} true colour (B04/B03/B02)",
                   units="surface reflectance (stretch of B04/B03/B02)", cmap="gray",
                   vmin=float(lo) * HLS_REFLECTANCE_SCALE, vmax=hi * HLS_REFLECTANCE_SCALE, valid=valid, rgb=True)


def band(raster: str, png: str, *, band: int = 1, title: str, units: str = AGB_UNITS, cmap: str = "YlGn",
         kind: str = "map", max_px: int = MAX_PX) -> Quicklook:
    """One band; colours from 0 (or the band's 1st percentile when negative) to its 99th percentile."""
    arr, valid = _read(raster, [band], max_px)
    data = arr[0]
    lo, hi = (np.percentile(data[valid], [1, 99]) if valid.any() else (0.0, 1.0))
    return _render(np.ma.masked_where(~valid, data), png, kind=kind, title=title, units=units, cmap=cmap,
                   vmin=min(0.0, float(lo)), vmax=float(hi), valid=valid)


def label_density(labels: str, png: str, *, cell_m: float = 1000.0, title: str | None = None) -> Quicklook:
    """GEDI shots per km2 on cells of ``cell_m`` (band ``shot_count``; without it, labelled pixels)."""
    import rasterio

    with rasterio.open(labels) as ds:
        names = [d or "" for d in ds.descriptions]
        counts = ds.read(names.index("shot_count") + 1 if "shot_count" in names else 1).astype(np.float64)
        nodata = ds.nodata
        res = abs(ds.transform.a)
        tile = ds.tags().get("MGRS_TILE", Path(labels).parent.name)
    if "shot_count" not in names:
        counts = (np.isfinite(counts) & (counts >= 0) & (counts != nodata)).astype(np.float64)
    counts[~np.isfinite(counts) | (counts < 0)] = 0.0
    cell = max(1, int(round(cell_m / res)))
    h, w = counts.shape
    pad = np.zeros((-(-h // cell) * cell, -(-w // cell) * cell))
    pad[:h, :w] = counts
    sums = pad.reshape(pad.shape[0] // cell, cell, pad.shape[1] // cell, cell).sum(axis=(1, 3))
    density = sums / (cell * res / 1000.0) ** 2
    valid = np.ones(density.shape, bool)
    return _render(np.ma.masked_where(density <= 0, density), png, kind="label_density",
                   title=title or f"{tile} GEDI shot density ({cell * res / 1000:g} km cells)", units="GEDI shots per km²",
                   cmap="viridis", vmin=0.0, vmax=float(max(density.max(), 1.0)), valid=valid)


def interval_width(map_path: str, png: str, *, title: str | None = None, max_px: int = MAX_PX) -> Quicklook:
    """Width of the prediction interval, ``agb_upper - agb_lower`` (Mg/ha)."""
    lo_i, hi_i = _band_index(map_path, "agb_lower", 0), _band_index(map_path, "agb_upper", 0)
    if not lo_i or not hi_i:
        raise ValueError(f"{map_path} has no agb_lower/agb_upper bands (map it with a calibration)")
    arr, valid = _read(map_path, [lo_i, hi_i], max_px)
    width = arr[1] - arr[0]
    hi = float(np.percentile(width[valid], 99)) if valid.any() else 1.0
    return _render(np.ma.masked_where(~valid, width), png, kind="interval_width",
                   title=title or f"{Path(map_path).stem}: prediction interval width", units=f"interval width ({AGB_UNITS})",
                   cmap="magma", vmin=0.0, vmax=hi, valid=valid)


def change(diff: str, png: str, *, band: int = 1, title: str | None = None, max_px: int = MAX_PX) -> Quicklook:
    """A difference raster (later - earlier, Mg/ha): BrBG colours symmetric around 0 at the 98th |percentile|."""
    arr, valid = _read(diff, [band], max_px)
    data = arr[0]
    m = float(np.percentile(np.abs(data[valid]), 98)) if valid.any() else 1.0
    m = max(m, 1e-3)
    return _render(np.ma.masked_where(~valid, data), png, kind="change",
                   title=title or f"{Path(diff).stem}: AGB change", units=f"AGB change ({AGB_UNITS})", cmap="BrBG",
                   vmin=-m, vmax=m, valid=valid)
