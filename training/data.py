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
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio

from chips.manifest import MANIFEST_NAME, SPLITS, ExportError, ExportManifest
from core.constants import GRANITE_LABEL_NODATA
from core.files import replace_into, temp_sibling

IGNORE = GRANITE_LABEL_NODATA  # TerraTorch's ignore index
PFT_NONE = 255


@dataclass(frozen=True)
class ExportInfo:
    """What training needs from an export's manifest; ``mean``/``std`` are the train statistics per band."""

    root: Path
    manifest: ExportManifest
    mean: list[float]
    std: list[float]
    label_mean: float | None

    @property
    def bands(self) -> list[str]:
        return list(self.manifest.bands)

    @property
    def chip_size(self) -> int:
        return self.manifest.chip_size

    @property
    def image_nodata(self) -> float:
        return float(self.manifest.image_nodata)

    @property
    def label_nodata(self) -> float:
        return float(self.manifest.label_nodata)

    @property
    def label_bands(self) -> list[str]:
        return list(self.manifest.label_bands)

    @property
    def layouts(self) -> dict[str, str]:
        return dict(self.manifest.layouts)


def read_export(export: str | Path) -> ExportInfo:
    """The export's manifest (strict, :class:`chips.manifest.ExportManifest`) and its train statistics."""
    man = ExportManifest.read(export)
    mean, std = man.train_mean_std()
    counts = man.stats["train"].get("count") or [1] * len(std)
    # bands without a valid training pixel (granite layout's B01, B09, B10, B11 placeholders) have no std
    if any(not np.isfinite(s) or s <= 0 for s, n in zip(std, counts, strict=True) if n):
        raise ExportError(f"{Path(export) / MANIFEST_NAME}: train std must be positive, got {std}")
    label_mean = (man.label_stats.get("train") or {}).get("mean")
    if isinstance(label_mean, list) and label_mean:  # per label band: the first is agbd
        label_mean = label_mean[0]
    return ExportInfo(root=Path(export), manifest=man, mean=mean, std=std,
                      label_mean=float(label_mean) if isinstance(label_mean, int | float) else None)


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
        tmp = temp_sibling(cdir / f"{name}.npy", ext=".npy")
        np.save(tmp, arr)
        replace_into(tmp, cdir / f"{name}.npy")
    tmp = temp_sibling(cdir / "done.json")
    tmp.write_text(json.dumps({"names": names, "shape": list(images.shape)}))
    replace_into(tmp, cdir / "done.json")


def label_mean(arrays: SplitArrays) -> float:
    """Mean of the labelled pixels (Mg/ha); 0 when none."""
    lab = np.asarray(arrays.labels)
    valid = lab >= 0
    return float(lab[valid].mean()) if valid.any() else 0.0
