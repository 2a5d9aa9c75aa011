"""Load a chip export with TerraTorch and check it (run in .interop-venv; see scripts/interop.sh).

Checks, each printed with its figures; exits non-zero on the first failure:
1. the TerraTorch config YAML of the export names this export's folders, bands, means and stds;
2. ``GenericNonGeoPixelwiseRegressionDataModule`` built from that config's ``data.init_args`` AS WRITTEN
   (batch size, workers, drop_last) yields train/val/test batches of shape (B, 6, H, W) / (B, H, W),
   float32: at least one full training batch (TerraTorch drops an incomplete last training batch unless
   ``drop_last: false``), and no training batch of a single chip (UPerNet's BatchNorm fails on it);
3. image and label files pair by stem, and every val sample equals its chip files: image -9999 ->
   ``no_data_replace``, label nodata (its GeoTIFF tag) -> -1 = the task's ignore index, labelled pixels
   unchanged; the datamodule's normalisation uses the training-split means/stds;
4. (unless --no-fit) ``terratorch fit --config <yaml> --trainer.fast_dev_run=1``, the config as written
   (no other override), runs one training and one validation step of the granite-style Swin-B/UPerNet
   model on the export ("`Trainer.fit` stopped: `max_steps=1` reached", not "No training batches").
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project (runs in .interop-venv)
from core.constants import GRANITE_LABEL_NODATA, IMAGE_NODATA  # noqa: E402


def _fail(msg: str) -> None:
    print(f"[interop] FAIL: {msg}")
    sys.exit(1)


def _check(cond: bool, msg: str, why: str = "") -> None:
    if not cond:
        _fail(msg + (f" -- {why}" if why else ""))
    print(f"[interop] ok: {msg}")


def _instantiate(spec: Any) -> Any:
    if isinstance(spec, dict) and "class_path" in spec:
        mod, _, name = spec["class_path"].rpartition(".")
        cls = getattr(importlib.import_module(mod), name)
        return cls(**{k: _instantiate(v) for k, v in spec.get("init_args", {}).items()})
    if isinstance(spec, list):
        return [_instantiate(v) for v in spec]
    return spec


def _datamodule(cfg: dict[str, Any]) -> Any:
    """The config's datamodule exactly as written (only the transforms instantiated)."""
    from terratorch.datamodules import GenericNonGeoPixelwiseRegressionDataModule

    args = dict(cfg["data"]["init_args"])
    for key in ("train_transform", "val_transform", "test_transform"):
        if key in args:
            args[key] = _instantiate(args[key])
    return GenericNonGeoPixelwiseRegressionDataModule(**args)


HLS_IDS = {"COASTAL_AEROSOL": "B01", "BLUE": "B02", "GREEN": "B03", "RED": "B04", "NIR_NARROW": "B05",
           "SWIR_1": "B06", "SWIR_2": "B07", "CIRRUS": "B09", "THERMAL_INFRARED_1": "B10",
           "THERMAL_INFRARED_2": "B11"}


def _positions(data: dict[str, Any]) -> list[int]:
    """0-based chip-file band positions TerraTorch takes: dataset_bands.index(b) for b in output_bands."""
    bands = data.get("dataset_bands")
    if not bands or not data.get("output_bands"):
        return list(range(len(data["means"])))
    return [bands.index(b) for b in data["output_bands"]]


def _stats_index(data: dict[str, Any], stats_bands: list[str]) -> list[int]:
    """Where each output band's training statistics sit in chips_export.json (by HLS band id)."""
    out = data.get("output_bands") or []
    ids = [HLS_IDS.get(str(b), str(b)) for b in out]
    if out and all(i in stats_bands for i in ids):
        return [stats_bands.index(i) for i in ids]
    return list(range(len(data["means"])))


def _check_sample(img_t: torch.Tensor, mask_t: torch.Tensor, fname: str, label_dir: Path,
                  no_data_replace: float, positions: list[int]) -> tuple[int, int]:
    """Compare one val sample with its files; returns (labelled pixels, ignore-index pixels)."""
    img_path = Path(fname)
    lab_path = label_dir / img_path.name.replace("_tile_img.tif", "_tile_label.tif")
    _check(lab_path.exists(), f"label file {lab_path.name} pairs with {img_path.name}")
    with rasterio.open(img_path) as ds:
        img = ds.read()
        img_nodata = ds.nodata
    with rasterio.open(lab_path) as ds:
        lab = ds.read(1)
        lab_nodata = ds.nodata
    if img_nodata != IMAGE_NODATA or lab_nodata is None:
        _fail(f"{img_path.name}: image nodata tag {img_nodata}, label nodata tag {lab_nodata}")
    sel = img[positions]
    expect_img = np.where(sel == img_nodata, no_data_replace, sel).astype(np.float32)
    got_img = img_t.numpy()
    if not np.array_equal(got_img, expect_img):
        _fail(f"{img_path.name}: image tensor differs from the file (max abs diff "
              f"{np.abs(got_img - expect_img).max()})")
    expect_mask = np.where(lab == lab_nodata, GRANITE_LABEL_NODATA, lab).astype(np.float32)
    got_mask = mask_t.numpy()
    if not np.array_equal(got_mask, expect_mask):
        _fail(f"{img_path.name}: mask differs from the label file")
    return int((lab != lab_nodata).sum()), int((got_mask == -1).sum())


def check_export(export: Path, fit: bool) -> None:
    if not (export / "chips_export.json").is_file():
        _fail(f"{export} holds no chips_export.json: not a chip export folder (this check reads the export's "
              "own terratorch_config.yaml through it)")
    meta = json.loads((export / "chips_export.json").read_text())
    tt = export / meta["layouts"]["terratorch"]
    cfg_path = export / meta["terratorch_config"]
    cfg = yaml.safe_load(cfg_path.read_text())
    data = cfg["data"]["init_args"]
    train_stats = meta["stats"]["train"]
    _check(cfg["data"]["class_path"].endswith("GenericNonGeoPixelwiseRegressionDataModule"),
           f"config {cfg_path.name} uses GenericNonGeoPixelwiseRegressionDataModule")
    _check(Path(data["train_data_root"]).resolve() == (tt / "train_images").resolve(),
           f"config train_data_root = {data['train_data_root']}")
    si = _stats_index(data, train_stats["bands"])
    positions = _positions(data)
    nb = len(positions)
    print(f"[interop] config takes chip bands {[i + 1 for i in positions]} as {data.get('output_bands')}")
    _check(np.allclose(data["means"], np.asarray(train_stats["mean"])[si])
           and np.allclose(data["stds"], np.asarray(train_stats["std"])[si]),
           f"config means/stds = training-split stats {np.round(data['means'], 1).tolist()} / "
           f"{np.round(data['stds'], 1).tolist()}")
    _check(data["no_label_replace"] == -1 and cfg["model"]["init_args"]["ignore_index"] == -1,
           "label nodata -> no_label_replace -1 = task ignore_index -1")
    counts = meta["splits"]
    bs = int(data["batch_size"])
    cs = meta["chip_size"]
    _check_train_batches(counts["train"], bs, bool(data.get("drop_last", True)))
    dm = _datamodule(cfg)
    dm.setup("fit")
    dm.setup("test")
    for split, ds in (("train", dm.train_dataset), ("val", dm.val_dataset), ("test", dm.test_dataset)):
        _check(len(ds) == counts[split], f"{split}: dataset holds {len(ds)} chips = export's {counts[split]}")
        stems_i = [Path(f).name.replace("_tile_img.tif", "") for f in ds.image_files]
        stems_l = [Path(f).name.replace("_tile_label.tif", "") for f in ds.segmentation_mask_files]
        _check(stems_i == stems_l, f"{split}: {len(stems_i)} image/label files pair by sorted name")
    loaders = {"train": dm.train_dataloader(), "val": dm.val_dataloader(), "test": dm.test_dataloader()}
    for split, loader in loaders.items():
        batch = next(iter(loader), None)
        _check(batch is not None, f"{split}: the loader yields a batch")
        img, mask = batch["image"], batch["mask"]
        n = min(bs, counts[split])
        _check(tuple(img.shape) == (n, nb, cs, cs) and img.dtype == torch.float32,
               f"{split} batch image {tuple(img.shape)} {img.dtype}")
        _check(tuple(mask.shape) == (n, cs, cs) and mask.dtype == torch.float32,
               f"{split} batch mask {tuple(mask.shape)} {mask.dtype}")
    _check_val(dm, loaders["val"], tt, data, positions)
    if fit:
        _fast_dev_run(cfg_path)


def _check_val(dm: Any, loader: Any, tt: Path, data: dict[str, Any], positions: list[int]) -> None:
    """Pixel-exact comparison on the val split (no random transforms there), then the normalisation."""
    n_lab = n_ign = 0
    for batch in loader:
        for i in range(batch["image"].shape[0]):
            a, b = _check_sample(batch["image"][i], batch["mask"][i], batch["filename"][i],
                                 tt / "val_labels", data["no_data_replace"], positions)
            n_lab, n_ign = n_lab + a, n_ign + b
    _check(n_lab > 0 and n_ign > 0, f"val: {n_lab} labelled pixels kept, {n_ign} nodata pixels = ignore index -1")
    normed = dm.aug({"image": batch["image"].clone()})["image"]
    mean = torch.tensor(data["means"]).view(1, -1, 1, 1)
    std = torch.tensor(data["stds"]).view(1, -1, 1, 1)
    _check(torch.allclose(normed, (batch["image"] - mean) / std, atol=1e-4),
           "datamodule normalisation = (x - train mean) / train std")


def _check_train_batches(n_train: int, bs: int, drop_last: bool) -> None:
    """What TerraTorch's train loader makes of the config's batch size (drop_last applies to train only)."""
    full, rest = divmod(n_train, bs)
    sizes = [bs] * full + ([rest] if rest and not drop_last else [])
    print(f"[interop] config batch_size {bs}, drop_last {drop_last}: {n_train} training chips -> training "
          f"batches of {sorted(set(sizes)) or 'nothing'} per epoch")
    _check(bool(sizes), "at least one training batch",
           f"batch_size {bs} > {n_train} training chips with drop_last on (TerraTorch's default): "
           "`terratorch fit` trains nothing ('Trainer.fit stopped: No training batches') and exits 0; "
           "the config must have batch_size <= training chips (or drop_last: false)")
    _check(min(sizes) >= 2, "no training batch of a single chip",
           "UPerNet's pooled 1x1 BatchNorm fails in training on a batch of 1 ('Expected more than 1 value "
           "per channel when training')")


def _fast_dev_run(cfg_path: Path) -> None:
    import tempfile

    exe = Path(sys.executable).with_name("terratorch")
    cmd = [str(exe), "fit", "--config", str(cfg_path), "--trainer.fast_dev_run=1"]
    print("[interop] running the generated config as written:", " ".join(cmd))
    t0 = time.perf_counter()
    cwd = tempfile.mkdtemp(prefix="interop-fit-")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, cwd=cwd)
    finally:
        shutil.rmtree(cwd, ignore_errors=True)
    out = proc.stdout + proc.stderr
    stopped = [ln.strip() for ln in out.splitlines() if "Trainer.fit` stopped" in ln]
    if proc.returncode != 0:
        print(out[-3000:])
        _fail(f"terratorch fit --trainer.fast_dev_run=1 exited {proc.returncode}")
    _check(any("max_steps=1" in ln for ln in stopped),
           f"terratorch fit fast_dev_run: one training + one validation step of the Swin-B UPerNet "
           f"({stopped[-1] if stopped else 'no stop line'}; {time.perf_counter() - t0:.0f} s)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("export", type=Path, help="chip export folder (holds chips_export.json)")
    ap.add_argument("--no-fit", action="store_true", help="skip the terratorch fit fast_dev_run")
    a = ap.parse_args()
    check_export(a.export, fit=not a.no_fit)
    print("[interop] PASS")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
