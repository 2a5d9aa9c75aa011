"""Reading a chips export (docs/DESIGN.md "Chips export contract") into packed in-memory arrays.

Images: raw HLS units x10000; pixels equal to the export's ``image_nodata`` (or NaN) are replaced by 0
before normalising with the export's train ``mean``/``std`` (granite's ``no_data_replace: 0``). Labels:
AGBD in Mg/ha; a pixel is labelled when it is finite, >= 0 and not ``label_nodata`` (granite's ``>= 0``
rule; -1 and -9999 are both unlabelled). Packed arrays: ``images`` float32 (N, C, H, W) normalised,
``labels`` float32 (N, H, W) with -1 = unlabelled, ``pft`` uint8 (N, H, W), 255 = none (optional).
A split is read once from the GeoTIFF chips and cached as ``.npy`` files (read back memory-mapped).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio

SPLITS = ("train", "val", "test")
IGNORE = -1.0
PFT_NONE = 255


class ExportError(ValueError):
    """A chips export that does not follow the contract."""


@dataclass(frozen=True)
class ExportInfo:
    """What training needs from ``chips_export.json``; ``mean``/``std`` are the train statistics per band."""

    root: Path
    bands: list[str]
    chip_size: int
    image_nodata: float
    label_nodata: float
    mean: list[float]
    std: list[float]
    label_bands: list[str]
    layouts: dict[str, str]
    label_mean: float | None
    raw: dict[str, Any]


def read_export(export: str | Path) -> ExportInfo:
    """Parse ``<export>/chips_export.json``; raises :class:`ExportError` naming the file and the problem."""
    root = Path(export)
    meta_path = root / "chips_export.json"
    if not meta_path.is_file():
        raise ExportError(f"{meta_path} is missing: not a chips export")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise ExportError(f"{meta_path} is not valid JSON: {exc}") from exc
    try:
        bands = [str(b) for b in meta["bands"]]
        train = meta["stats"]["train"]
        mean, std = [float(v) for v in train["mean"]], [float(v) for v in train["std"]]
    except (KeyError, TypeError) as exc:
        raise ExportError(f"{meta_path} lacks {exc} (needs bands and stats.train.mean/std)") from exc
    if len(mean) != len(bands) or len(std) != len(bands):
        raise ExportError(f"{meta_path}: {len(bands)} bands but {len(mean)} means / {len(std)} stds")
    if any(not np.isfinite(s) or s <= 0 for s in std):
        raise ExportError(f"{meta_path}: train std must be positive, got {std}")
    label_stats = meta.get("label_stats") or {}
    label_mean = label_stats.get("mean", (label_stats.get("train") or {}).get("mean"))
    if isinstance(label_mean, list) and label_mean:  # per label band: the first is agbd
        label_mean = label_mean[0]
    return ExportInfo(
        root=root, bands=bands, chip_size=int(meta.get("chip_size", 224)),
        image_nodata=float(meta.get("image_nodata", -9999)), label_nodata=float(meta.get("label_nodata", -1)),
        mean=mean, std=std, label_bands=[str(b) for b in meta.get("label_bands", ["agbd"])],
        layouts=dict(meta.get("layouts") or {"terratorch": "terratorch"}),
        label_mean=float(label_mean) if isinstance(label_mean, int | float) else None, raw=meta,
    )


def list_split(info: ExportInfo, split: str) -> list[tuple[Path, Path]]:
    """(image, label) pairs of ``split``: TerraTorch layout (paired by sorted file name) or Esri + split.json."""
    if split not in SPLITS:
        raise ExportError(f"unknown split {split!r}; choose one of {SPLITS}")
    tt = info.root / info.layouts.get("terratorch", "terratorch")
    if (tt / f"{split}_images").is_dir():
        images = sorted((tt / f"{split}_images").glob("*.tif"))
        labels = sorted((tt / f"{split}_labels").glob("*.tif"))
        if len(images) != len(labels):
            raise ExportError(f"{tt}: {len(images)} {split} images but {len(labels)} labels")
        for img, lab in zip(images, labels, strict=True):
            if img.name.replace("_tile_img", "") != lab.name.replace("_tile_label", ""):
                raise ExportError(f"{tt}: image {img.name} is paired with label {lab.name} by sorted name")
        return list(zip(images, labels, strict=True))
    return _list_esri_split(info, split)


def _list_esri_split(info: ExportInfo, split: str) -> list[tuple[Path, Path]]:
    esri = info.root / info.layouts.get("esri", "esri")
    split_path = info.root / "split.json"
    if not (esri / "map.txt").is_file() or not split_path.is_file():
        raise ExportError(f"{info.root}: neither a TerraTorch layout ({split}_images/) nor esri/map.txt + "
                          "split.json")
    pairs = []
    for line in (esri / "map.txt").read_text().splitlines():
        parts = line.strip().replace("\\", "/").split()
        if len(parts) == 2:
            pairs.append((esri / parts[0], esri / parts[1]))
    doc = json.loads(split_path.read_text())
    entries = doc.get(split, doc.get("splits", {}).get(split)) if isinstance(doc, dict) else None
    if entries is None:
        raise ExportError(f"{split_path} has no {split!r} list")
    wanted = {Path(str(e.get("esri", e.get("image", "")) if isinstance(e, dict) else e)).stem for e in entries}
    chosen = [p for p in pairs if p[0].stem in wanted]
    if len(chosen) != len(wanted):
        raise ExportError(f"{split_path}: {len(wanted)} {split} chips listed, {len(chosen)} found in map.txt")
    return chosen


@dataclass
class SplitArrays:
    """Packed, normalised arrays of one split (see module docstring)."""

    images: np.ndarray
    labels: np.ndarray
    pft: np.ndarray | None
    names: list[str]
    read_seconds: float
    from_cache: bool

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def n_labelled(self) -> int:
        return int((self.labels >= 0).sum())


def band_indices(info: ExportInfo, bands: list[str]) -> list[int]:
    """Positions of ``bands`` among the export's bands; raises if one is absent."""
    missing = [b for b in bands if b not in info.bands]
    if missing:
        raise ExportError(f"{info.root}: bands {missing} not in the export's bands {info.bands}")
    return [info.bands.index(b) for b in bands]


def read_chip(image: Path, label: Path, idx: list[int], info: ExportInfo
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """One chip: image float32 (C, H, W) raw units with nodata -> 0; label (H, W) with -1 = unlabelled; pft."""
    try:
        with rasterio.open(image) as src:
            img = src.read([i + 1 for i in idx]).astype(np.float32, copy=False)
            nod = src.nodata if src.nodata is not None else info.image_nodata
        with rasterio.open(label) as src:
            lab = src.read().astype(np.float32, copy=False)
            lab_nod = src.nodata if src.nodata is not None else info.label_nodata
    except rasterio.errors.RasterioIOError as exc:
        raise ExportError(f"cannot read chip {image} / {label}: {exc}") from exc
    if img.shape[1:] != lab.shape[1:]:
        raise ExportError(f"chip {image} is {img.shape[1:]} but label {label} is {lab.shape[1:]}")
    img[(img == nod) | (img == info.image_nodata) | ~np.isfinite(img)] = 0.0
    agbd = lab[0]
    agbd[~np.isfinite(agbd) | (agbd == lab_nod) | (agbd == info.label_nodata) | (agbd < 0)] = IGNORE
    pft = None
    if "pft" in info.label_bands and lab.shape[0] > info.label_bands.index("pft"):
        p = lab[info.label_bands.index("pft")]
        pft = np.where(np.isfinite(p) & (p >= 0) & (p < 255), p, PFT_NONE).astype(np.uint8)
    return img, agbd, pft


def _cache_key(info: ExportInfo, split: str, bands: list[str], pairs: list[tuple[Path, Path]]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([split, bands, info.mean, info.std, info.image_nodata, info.label_nodata]).encode())
    for img, lab in pairs:
        for p in (img, lab):
            st = p.stat()
            h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def load_split(info: ExportInfo, split: str, bands: list[str], *, mean: list[float] | None = None,
               std: list[float] | None = None, cache_dir: str | Path | None = None,
               num_workers: int = 2) -> SplitArrays:
    """Read and normalise a split, through a ``.npy`` cache in ``cache_dir`` when given (reused if valid).

    ``mean``/``std`` (one per entry of ``bands``, raw units) default to the export's train statistics.
    """
    pairs = list_split(info, split)
    if not pairs:
        raise ExportError(f"{info.root}: split {split!r} has no chips")
    idx = band_indices(info, bands)
    mean = list(mean) if mean is not None else [info.mean[i] for i in idx]
    std = list(std) if std is not None else [info.std[i] for i in idx]
    if len(mean) != len(bands) or len(std) != len(bands):
        raise ExportError(f"normalisation needs one mean/std per band {bands}, got {len(mean)}/{len(std)}")
    key = _cache_key(info, split, bands + [str(v) for v in mean + std], pairs)
    cdir = Path(cache_dir) / f"{split}-{key}" if cache_dir else None
    t0 = time.perf_counter()
    if cdir is not None and (cdir / "done.json").is_file():
        names = json.loads((cdir / "done.json").read_text())["names"]
        pft = np.load(cdir / "pft.npy", mmap_mode="r") if (cdir / "pft.npy").is_file() else None
        return SplitArrays(np.load(cdir / "images.npy", mmap_mode="r"), np.load(cdir / "labels.npy"), pft,
                           names, time.perf_counter() - t0, True)
    with ThreadPoolExecutor(max(1, num_workers)) as pool:
        chips = list(pool.map(lambda p: read_chip(p[0], p[1], idx, info), pairs))
    images = np.stack([c[0] for c in chips])
    m = np.asarray(mean, np.float32)[None, :, None, None]
    s = np.asarray(std, np.float32)[None, :, None, None]
    images = (images - m) / s
    labels = np.stack([c[1] for c in chips])
    pft = np.stack([c[2] for c in chips]) if all(c[2] is not None for c in chips) else None
    names = [p[0].name for p in pairs]
    seconds = time.perf_counter() - t0
    if cdir is not None:
        _write_cache(cdir, images, labels, pft, names)
    return SplitArrays(images, labels, pft, names, seconds, False)


def _write_cache(cdir: Path, images: np.ndarray, labels: np.ndarray, pft: np.ndarray | None,
                 names: list[str]) -> None:
    cdir.mkdir(parents=True, exist_ok=True)
    arrays = {"images": images, "labels": labels} | ({"pft": pft} if pft is not None else {})
    for name, arr in arrays.items():
        tmp = cdir / f"{name}.tmp-{os.getpid()}.npy"
        np.save(tmp, arr)
        os.replace(tmp, cdir / f"{name}.npy")
    tmp = cdir / f"done.json.tmp-{os.getpid()}"
    tmp.write_text(json.dumps({"names": names, "shape": list(images.shape)}))
    os.replace(tmp, cdir / "done.json")


def label_mean(arrays: SplitArrays) -> float:
    """Mean of the labelled pixels (Mg/ha); 0 when none."""
    lab = np.asarray(arrays.labels)
    valid = lab >= 0
    return float(lab[valid].mean()) if valid.any() else 0.0


def write_synthetic_export(root: str | Path, *, chip: int = 64, grid: tuple[int, int] = (4, 4), seed: int = 0,
                           with_pft: bool = True, label_nodata: float = -1.0) -> dict[str, Any]:
    """A small export following the contract, for tests and benchmarks (not a realistic world).

    One scene of ``grid`` chips (rows, cols) of ``chip`` px: six smooth reflectance bands (HLS units),
    a true AGB that is a nonlinear function of them (Mg/ha), GEDI-like sparse labels along tracks with
    noise, a few nodata image pixels. Chips of the last row are ``test``, the one before ``val``, the rest
    ``train``. Also writes the scene as a 7-band composite (``composite.tif``, nodata -9999) and the truth
    (``truth.tif``). Returns paths and counts.
    """
    from affine import Affine

    root = Path(root)
    rng = np.random.default_rng(seed)
    h, w = grid[0] * chip, grid[1] * chip
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
    bands[:, 5:8, 5:8] = -9999.0
    transform = Affine(30.0, 0.0, 500000.0, 0.0, -30.0, 4000000.0)
    profile = {"driver": "GTiff", "dtype": "float32", "crs": "EPSG:32610", "width": chip, "height": chip}
    tt = root / "terratorch"
    counts = {"train": 0, "val": 0, "test": 0}
    for r in range(grid[0]):
        split = "test" if r == grid[0] - 1 else "val" if r == grid[0] - 2 else "train"
        for c in range(grid[1]):
            win = (slice(r * chip, (r + 1) * chip), slice(c * chip, (c + 1) * chip))
            tr = Affine(30.0, 0.0, 500000.0 + 30.0 * c * chip, 0.0, -30.0, 4000000.0 - 30.0 * r * chip)
            stem = f"10TEK_{counts[split]:05d}"
            (tt / f"{split}_images").mkdir(parents=True, exist_ok=True)
            (tt / f"{split}_labels").mkdir(parents=True, exist_ok=True)
            with rasterio.open(tt / f"{split}_images" / f"{stem}_tile_img.tif", "w", count=6, nodata=-9999,
                               transform=tr, **profile) as dst:
                dst.write(bands[:, win[0], win[1]])
            lab = [label[win]] + ([pft[win]] if with_pft else [])
            with rasterio.open(tt / f"{split}_labels" / f"{stem}_tile_label.tif", "w", count=len(lab),
                               nodata=label_nodata, transform=tr, **profile) as dst:
                dst.write(np.stack(lab))
            counts[split] += 1
    train_rows = slice(0, (grid[0] - 2) * chip)
    tb = bands[:, train_rows]
    valid = tb > -9999
    meta = {
        "bands": list(("B02", "B03", "B04", "B05", "B06", "B07")),
        "band_names": ["Blue", "Green", "Red", "NIR_Narrow", "SWIR1", "SWIR2"],
        "wavelengths_um": [0.49, 0.56, 0.665, 0.864, 1.61, 2.2], "chip_size": chip, "image_nodata": -9999,
        "label_nodata": label_nodata, "splits": counts,
        "stats": {"train": {"min": [float(tb[i][valid[i]].min()) for i in range(6)],
                            "max": [float(tb[i][valid[i]].max()) for i in range(6)],
                            "mean": [float(tb[i][valid[i]].mean()) for i in range(6)],
                            "std": [float(tb[i][valid[i]].std()) for i in range(6)]}},
        "label_stats": {"mean": float(label[train_rows][label[train_rows] >= 0].mean())},
        "label_bands": ["agbd", "pft"] if with_pft else ["agbd"], "layouts": {"terratorch": "terratorch"},
    }
    (root / "chips_export.json").write_text(json.dumps(meta, indent=2))
    comp = np.concatenate([bands, np.full((1, h, w), 5, np.float32)])
    comp[:, 5:8, 5:8] = -9999.0
    full = dict(profile, width=w, height=h, transform=transform, nodata=-9999)
    with rasterio.open(root / "composite.tif", "w", count=7, **full) as dst:
        dst.write(comp)
        for i, name in enumerate(meta["bands"] + ["count"], start=1):
            dst.set_band_description(i, name)
        dst.update_tags(MGRS_TILE="10TEK")
    with rasterio.open(root / "truth.tif", "w", count=1, **full) as dst:
        dst.write(agb[None])
    return {"export": str(root), "composite": str(root / "composite.tif"), "truth": str(root / "truth.tif"),
            "splits": counts}
