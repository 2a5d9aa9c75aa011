"""A small chips export that follows the contract (:class:`chips.manifest.ExportManifest`), for tests and
benchmarks (not a realistic world)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine

from chips.manifest import ExportManifest
from core.bands import BAND_NAMES, MODEL_BANDS, WAVELENGTHS_UM
from core.constants import AGB_UNITS, GRANITE_LABEL_NODATA, IMAGE_NODATA

ORIGIN = (500000.0, 4000000.0)  # upper-left corner, EPSG:32610


@dataclass(frozen=True)
class Scene:
    """Arrays of the synthetic scene: bands (6, h, w) HLS units, truth AGB and noisy sparse labels (Mg/ha)."""

    bands: np.ndarray
    agb: np.ndarray
    label: np.ndarray
    pft: np.ndarray


def synthetic_scene(h: int, w: int, seed: int, label_nodata: float) -> Scene:
    """Six smooth reflectance bands, a true AGB that is a nonlinear function of them, GEDI-like sparse labels
    along tracks with noise, and a 3 x 3 square of image nodata at (5, 5)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    fields = [np.sin(xx / (9 + 3 * k) + rng.uniform(0, 6)) * np.cos(yy / (11 + 2 * k) + rng.uniform(0, 6))
              for k in range(3)]
    green = 0.5 + 0.5 * fields[0]
    soil = 0.5 + 0.5 * fields[1]
    base = np.array([400, 700, 600, 2500, 1800, 1000], np.float32)
    slope = np.array([-250, -200, -450, 1800, -900, -700], np.float32)
    bands = base[:, None, None] + slope[:, None, None] * green + 300 * soil + 40 * rng.standard_normal((6, h, w))
    bands = bands.astype(np.float32)
    agb = (260 * green**2 * (0.6 + 0.4 * (fields[2] > 0))).astype(np.float32)
    pft = np.where(green > 0.5, 1, 6).astype(np.float32)
    label = np.full((h, w), label_nodata, np.float32)
    label[:, 3::7] = agb[:, 3::7] + rng.normal(0, 10, (h, len(range(3, w, 7)))).astype(np.float32)
    label[1::2, :] = label_nodata
    label[(label < 0) & (label != label_nodata)] = 0.0
    bands[:, 5:8, 5:8] = IMAGE_NODATA
    return Scene(bands, agb, label, pft)


def _split_of_row(r: int, rows: int) -> str:
    return "test" if r == rows - 1 else "val" if r == rows - 2 else "train"


def _write_chips(tt: Path, scene: Scene, chip: int, grid: tuple[int, int], with_pft: bool,
                 label_nodata: float) -> dict[str, int]:
    profile = {"driver": "GTiff", "dtype": "float32", "crs": "EPSG:32610", "width": chip, "height": chip}
    counts = {"train": 0, "val": 0, "test": 0}
    for r in range(grid[0]):
        split = _split_of_row(r, grid[0])
        (tt / f"{split}_images").mkdir(parents=True, exist_ok=True)
        (tt / f"{split}_labels").mkdir(parents=True, exist_ok=True)
        for c in range(grid[1]):
            win = (slice(r * chip, (r + 1) * chip), slice(c * chip, (c + 1) * chip))
            tr = Affine(30.0, 0.0, ORIGIN[0] + 30.0 * c * chip, 0.0, -30.0, ORIGIN[1] - 30.0 * r * chip)
            stem = f"10TEK_{counts[split]:05d}"
            with rasterio.open(tt / f"{split}_images" / f"{stem}_tile_img.tif", "w", count=6, nodata=IMAGE_NODATA,
                               transform=tr, **profile) as dst:
                dst.write(scene.bands[:, win[0], win[1]])
            lab = [scene.label[win]] + ([scene.pft[win]] if with_pft else [])
            with rasterio.open(tt / f"{split}_labels" / f"{stem}_tile_label.tif", "w", count=len(lab),
                               nodata=label_nodata, transform=tr, **profile) as dst:
                dst.write(np.stack(lab))
            counts[split] += 1
    return counts


def _manifest(scene: Scene, chip: int, grid: tuple[int, int], counts: dict[str, int], with_pft: bool,
              label_nodata: float) -> ExportManifest:
    train_rows = slice(0, (grid[0] - 2) * chip)
    tb = scene.bands[:, train_rows]
    valid = tb > IMAGE_NODATA
    per_band = [tb[i][valid[i]] for i in range(6)]
    train_labels = scene.label[train_rows][scene.label[train_rows] >= 0]
    return ExportManifest(
        bands=list(MODEL_BANDS), band_names=list(BAND_NAMES), wavelengths_um=list(WAVELENGTHS_UM),
        chip_size=chip, stride=chip, image_nodata=IMAGE_NODATA, image_units="HLS reflectance x 10000",
        label_nodata=label_nodata, label_bands=["agbd", "pft"] if with_pft else ["agbd"], label_units=AGB_UNITS,
        splits=counts,
        stats={"train": {"bands": list(MODEL_BANDS), "count": [int(v.size) for v in per_band],
                         "min": [float(v.min()) for v in per_band], "max": [float(v.max()) for v in per_band],
                         "mean": [float(v.mean()) for v in per_band], "std": [float(v.std()) for v in per_band]}},
        label_stats={"train": {"bands": ["agbd"], "count": [int(train_labels.size)],
                               "mean": [float(train_labels.mean())]}},
        layouts={"terratorch": "terratorch"}, split_file=None, terratorch_config=None, sources=[])


def _write_scene_rasters(root: Path, scene: Scene) -> None:
    h, w = scene.agb.shape
    full = {"driver": "GTiff", "dtype": "float32", "crs": "EPSG:32610", "width": w, "height": h,
            "transform": Affine(30.0, 0.0, ORIGIN[0], 0.0, -30.0, ORIGIN[1]), "nodata": IMAGE_NODATA}
    comp = np.concatenate([scene.bands, np.full((1, h, w), 5, np.float32)])
    with rasterio.open(root / "composite.tif", "w", count=7, **full) as dst:
        dst.write(comp)
        for i, name in enumerate([*MODEL_BANDS, "count"], start=1):
            dst.set_band_description(i, name)
        dst.update_tags(MGRS_TILE="10TEK")
    with rasterio.open(root / "truth.tif", "w", count=1, **full) as dst:
        dst.write(scene.agb[None])


def write_synthetic_export(root: str | Path, *, chip: int = 64, grid: tuple[int, int] = (4, 4), seed: int = 0,
                           with_pft: bool = True, label_nodata: float = GRANITE_LABEL_NODATA) -> dict[str, Any]:
    """A small export of one scene of ``grid`` chips (rows, cols) of ``chip`` px (see :func:`synthetic_scene`).

    Chips of the last row are ``test``, the one before ``val``, the rest ``train``. Also writes the scene as
    a 7-band composite (``composite.tif``, nodata -9999) and the truth (``truth.tif``). Returns paths and counts.
    """
    root = Path(root)
    scene = synthetic_scene(grid[0] * chip, grid[1] * chip, seed, label_nodata)
    counts = _write_chips(root / "terratorch", scene, chip, grid, with_pft, label_nodata)
    _manifest(scene, chip, grid, counts, with_pft, label_nodata).write(root)
    _write_scene_rasters(root, scene)
    return {"export": str(root), "composite": str(root / "composite.tif"), "truth": str(root / "truth.tif"),
            "splits": counts}
