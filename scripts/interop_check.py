"""Load a chip export with TerraTorch and check it (run in .interop-venv; see scripts/interop.sh).

Checks, each printed with its figures; exits non-zero on the first failure:
1. the TerraTorch config YAML of the export names this export's folders, bands, means and stds;
2. ``GenericNonGeoPixelwiseRegressionDataModule`` built from that config's ``data.init_args`` (batch size
   and workers shrunk) yields train/val/test batches of shape (B, 6, H, W) / (B, H, W), float32;
3. image and label files pair by stem, and every val sample equals its chip files: image -9999 ->
   ``no_data_replace``, label nodata (its GeoTIFF tag) -> -1 = the task's ignore index, labelled pixels
   unchanged; the datamodule's normalisation uses the training-split means/stds;
4. (unless --no-fit) ``terratorch fit --config <yaml> --trainer.fast_dev_run=1`` runs one training and one
   validation step of the granite-style Swin-B/UPerNet model on the export (CPU, batch 2).
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

from core.constants import GRANITE_LABEL_NODATA, IMAGE_NODATA


def _fail(msg: str) -> None:
    print(f"[interop] FAIL: {msg}")
    sys.exit(1)


def _check(cond: bool, msg: str) -> None:
    if not cond:
        _fail(msg)
    print(f"[interop] ok: {msg}")


def _instantiate(spec: Any) -> Any:
    if isinstance(spec, dict) and "class_path" in spec:
        mod, _, name = spec["class_path"].rpartition(".")
        cls = getattr(importlib.import_module(mod), name)
        return cls(**{k: _instantiate(v) for k, v in spec.get("init_args", {}).items()})
    if isinstance(spec, list):
        return [_instantiate(v) for v in spec]
    return spec


def _datamodule(cfg: dict[str, Any], batch_size: int) -> Any:
    from terratorch.datamodules import GenericNonGeoPixelwiseRegressionDataModule

    args = dict(cfg["data"]["init_args"])
    args.update(batch_size=batch_size, num_workers=0)
    for key in ("train_transform", "val_transform", "test_transform"):
        if key in args:
            args[key] = _instantiate(args[key])
    return GenericNonGeoPixelwiseRegressionDataModule(**args)


def _check_sample(img_t: torch.Tensor, mask_t: torch.Tensor, fname: str, label_dir: Path,
                  no_data_replace: float) -> tuple[int, int]:
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
    expect_img = np.where(img[:6] == img_nodata, no_data_replace, img[:6]).astype(np.float32)
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
    _check(np.allclose(data["means"], train_stats["mean"][:6]) and np.allclose(data["stds"], train_stats["std"][:6]),
           f"config means/stds = training-split stats {np.round(data['means'], 1).tolist()} / "
           f"{np.round(data['stds'], 1).tolist()}")
    _check(data["no_label_replace"] == -1 and cfg["model"]["init_args"]["ignore_index"] == -1,
           "label nodata -> no_label_replace -1 = task ignore_index -1")
    counts = meta["splits"]
    bs = max(1, min(4, counts["train"], counts["val"], counts["test"]))
    cs = meta["chip_size"]
    dm = _datamodule(cfg, bs)
    dm.setup("fit")
    dm.setup("test")
    for split, ds in (("train", dm.train_dataset), ("val", dm.val_dataset), ("test", dm.test_dataset)):
        _check(len(ds) == counts[split], f"{split}: dataset holds {len(ds)} chips = export's {counts[split]}")
        stems_i = [Path(f).name.replace("_tile_img.tif", "") for f in ds.image_files]
        stems_l = [Path(f).name.replace("_tile_label.tif", "") for f in ds.segmentation_mask_files]
        _check(stems_i == stems_l, f"{split}: {len(stems_i)} image/label files pair by sorted name")
    loaders = {"train": dm.train_dataloader(), "val": dm.val_dataloader(), "test": dm.test_dataloader()}
    for split, loader in loaders.items():
        batch = next(iter(loader))
        img, mask = batch["image"], batch["mask"]
        _check(tuple(img.shape) == (bs, 6, cs, cs) and img.dtype == torch.float32,
               f"{split} batch image {tuple(img.shape)} {img.dtype}")
        _check(tuple(mask.shape) == (bs, cs, cs) and mask.dtype == torch.float32,
               f"{split} batch mask {tuple(mask.shape)} {mask.dtype}")
    # Pixel-exact comparison on the val split (no random transforms there).
    n_lab = n_ign = 0
    for batch in loaders["val"]:
        for i in range(batch["image"].shape[0]):
            a, b = _check_sample(batch["image"][i], batch["mask"][i], batch["filename"][i],
                                 tt / "val_labels", data["no_data_replace"])
            n_lab, n_ign = n_lab + a, n_ign + b
    _check(n_lab > 0 and n_ign > 0, f"val: {n_lab} labelled pixels kept, {n_ign} nodata pixels = ignore index -1")
    normed = dm.aug({"image": batch["image"].clone()})["image"]
    mean = torch.tensor(data["means"]).view(1, -1, 1, 1)
    std = torch.tensor(data["stds"]).view(1, -1, 1, 1)
    _check(torch.allclose(normed, (batch["image"] - mean) / std, atol=1e-4),
           "datamodule normalisation = (x - train mean) / train std")
    if fit:
        _fast_dev_run(cfg_path)


def _fast_dev_run(cfg_path: Path) -> None:
    import tempfile

    exe = Path(sys.executable).with_name("terratorch")
    logs = tempfile.mkdtemp(prefix="interop-fit-")
    cmd = [str(exe), "fit", "--config", str(cfg_path), "--trainer.fast_dev_run=1", "--trainer.accelerator=cpu",
           "--trainer.devices=1", "--data.init_args.batch_size=2", "--data.init_args.num_workers=0",
           f"--trainer.logger.init_args.save_dir={logs}", f"--trainer.default_root_dir={logs}",
           "--trainer.enable_checkpointing=false"]
    print("[interop] running:", " ".join(cmd))
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    finally:
        shutil.rmtree(logs, ignore_errors=True)
    tail = (proc.stdout + proc.stderr)[-3000:]
    if proc.returncode != 0:
        print(tail)
        _fail(f"terratorch fit --trainer.fast_dev_run=1 exited {proc.returncode}")
    lines = [ln for ln in tail.splitlines() if "loss" in ln.lower() or "fast_dev_run" in ln.lower()]
    print("\n".join(lines[-6:]))
    _check(True, f"terratorch fit fast_dev_run (1 train + 1 val step, Swin-B UPerNet, CPU) in "
                 f"{time.perf_counter() - t0:.0f} s")


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
