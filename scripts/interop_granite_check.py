"""granite-geospatial-biomass drop-in check of a chip export (run in .interop-venv; see scripts/interop.sh).

Usage: python scripts/interop_granite_check.py EXPORT [--config PATH] [--checkpoint CKPT]
       [--composites DIR] [--fit-batch-size 2] [--no-fit] [--no-infer]

EXPORT is a folder holding granite's six split folders (train_images, train_labels, val_images, ...), or
an export folder whose chips_export.json names it (layout "granite", else "terratorch"). The config is
granite's published one, read in place (default ../shared/reference/granite_config.yaml beside the repo);
only its six data-root lines are replaced. Granite selects bands by POSITION: its dataset_bands are
(-1, BLUE, GREEN, RED, NIR_NARROW, SWIR_1, SWIR_2, -1, -1, -1, -1) and its img_grep/label_grep are "*".

Checks, each printed with its figures; exits 1 with a list of what failed:
1. layout: the six folders; only ``*_tile_img.tif`` / ``*_tile_label.tif`` files in them (granite's "*"
   greps take every file); image and label files pair by sorted name; every image chip is a float32
   GeoTIFF, nodata tag -9999, bands B01, B02..B07, B09, B10, B11 (descriptions; extra bands only after
   B11, where granite's config ignores them), the bands the project does not composite (B01, B09,
   B10, B11) nodata everywhere; every label chip 1 band float32 with a nodata tag, on the image's grid;
   the real granite chip (../shared/realdata) has that structure;
2. TerraTorch's GenericNonGeoPixelwiseRegressionDataModule built from the config (roots replaced; batch
   size shrunk and workers 0 for this in-process read only) yields one batch per split, (B, 6, H, W) /
   (B, H, W) float32, and every val sample equals chip bands 2-7 (nodata -> 0) and its label (nodata -> -1);
   the real granite chip reads through the same code to its bands 2-7;
3. ``terratorch fit --config <granite config> --trainer.fast_dev_run true`` with only the data roots and
   ``--data.init_args.batch_size`` (CPU memory; <= training chips) overridden runs one training step;
4. ``LightningInferenceModel.from_config(config, checkpoint).inference_on_dir(val_images)`` (the model
   card's code) loads a checkpoint of this project's model (built with training.model/training.checkpoint
   when --checkpoint is not given) and predicts (N, H, W); with --composites, also on that folder.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT.parent / "shared" / "reference" / "granite_config.yaml"
REAL_CHIP = ROOT.parent / "shared" / "realdata" / "chips_granite"
GRANITE_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B09", "B10", "B11")
USED = (1, 2, 3, 4, 5, 6)  # 0-based positions of B02..B07 = granite's BLUE..SWIR_2
PLACEHOLDER = (0, 7, 8, 9)
SPLITS = ("train", "val", "test")
sys.path.insert(0, str(ROOT))
from core.constants import GRANITE_LABEL_NODATA, IMAGE_NODATA  # noqa: E402

NODATA = IMAGE_NODATA
FAILED: list[str] = []


def _summary_exit() -> None:
    print(f"[granite] FAILED ({len(FAILED)}):")
    for m in FAILED:
        print(f"[granite]   - {m}")
    sys.exit(1)


def _check(cond: bool, msg: str, why: str = "", fatal: bool = False) -> bool:
    """Print ok/FAIL; failures are collected; ``fatal`` stops the run (with the list so far)."""
    if cond:
        print(f"[granite] ok: {msg}")
        return True
    text = msg + (f" -- {why}" if why else "")
    FAILED.append(text)
    print(f"[granite] FAIL: {text}")
    if fatal:
        _summary_exit()
    return False


def find_layout(export: Path) -> Path:
    """The folder holding {split}_images / {split}_labels."""
    if (export / "train_images").is_dir():
        return export
    meta = export / "chips_export.json"
    if meta.is_file():
        layouts = json.loads(meta.read_text()).get("layouts", {})
        for key in ("granite", "terratorch"):
            if key in layouts and (export / layouts[key] / "train_images").is_dir():
                return export / layouts[key]
    for sub in ("granite", "terratorch"):
        if (export / sub / "train_images").is_dir():
            return export / sub
    _check(False, f"{export} holds granite's split folders",
           "no train_images/ in it, in its chips_export.json layouts, or in granite/ or terratorch/", fatal=True)
    raise AssertionError


def _files(layout: Path, split: str) -> tuple[list[Path], list[Path]]:
    imgs = sorted((layout / f"{split}_images").iterdir())
    labs = sorted((layout / f"{split}_labels").iterdir())
    return imgs, labs


def check_names(layout: Path) -> dict[str, int]:
    """Folders, file names and pairing; returns chips per split."""
    counts = {}
    for split in SPLITS:
        for kind in ("images", "labels"):
            _check((layout / f"{split}_{kind}").is_dir(), f"{split}_{kind}/ exists", fatal=True)
        imgs, labs = _files(layout, split)
        odd = [p.name for p in imgs if not p.name.endswith("_tile_img.tif")]
        odd += [p.name for p in labs if not p.name.endswith("_tile_label.tif")]
        _check(not odd, f"{split}: only *_tile_img.tif / *_tile_label.tif files",
               f"also {odd[:4]}: granite's img_grep/label_grep '*' would read them as chips")
        stems_i = [p.name[: -len("_tile_img.tif")] for p in imgs]
        stems_l = [p.name[: -len("_tile_label.tif")] for p in labs]
        _check(len(imgs) > 0 and stems_i == stems_l,
               f"{split}: {len(imgs)} image and {len(labs)} label chips pair by sorted name",
               "TerraTorch pairs the i-th sorted image with the i-th sorted label", fatal=True)
        counts[split] = len(imgs)
    return counts


def _chip_problem(img: Path, lab: Path) -> str | None:
    with rasterio.open(img) as ds:
        desc = tuple(d or "" for d in ds.descriptions)
        if ds.count < 10:
            effect = ("TerraTorch raises IndexError" if ds.count < 7 else
                      f"TerraTorch silently reads {desc[1:7]} as BLUE..SWIR_2")
            return (f"{img.name} has {ds.count} bands {desc}: granite's dataset_bands take file positions "
                    f"2-7 of the 10-band layout {', '.join(GRANITE_BANDS)}; here {effect}")
        if ds.dtypes[0] != "float32" or ds.nodata != NODATA:
            return f"{img.name}: dtype {ds.dtypes[0]}, nodata tag {ds.nodata} (want float32, {NODATA})"
        if desc[:10] != GRANITE_BANDS:
            return f"{img.name}: band descriptions {desc}, want {GRANITE_BANDS} (+ extras after B11)"
        grid = (ds.crs, ds.transform, ds.shape)
    with rasterio.open(lab) as ds:
        if ds.count != 1 or ds.dtypes[0] != "float32" or ds.nodata is None:
            return f"{lab.name}: {ds.count} bands {ds.dtypes[0]} nodata {ds.nodata} (want 1 band float32 + tag)"
        if (ds.crs, ds.transform, ds.shape) != grid:
            return f"{lab.name} is not on its image chip's grid"
    return None


def check_chips(layout: Path) -> None:
    """Header of every chip; placeholder-band content of the val chips."""
    problems = []
    for split in SPLITS:
        for img, lab in zip(*_files(layout, split), strict=True):
            p = _chip_problem(img, lab)
            if p:
                problems.append(p)
    _check(not problems, "every image chip: bands B01,B02..B07,B09,B10,B11 float32 nodata -9999; "
                         "every label chip: 1 band float32 with a nodata tag on the image grid",
           f"{len(problems)} chips wrong, first: {problems[0]}" if problems else "", fatal=True)
    bad = []
    for img in _files(layout, "val")[0]:
        with rasterio.open(img) as ds:
            a = ds.read()
        if not (a[list(PLACEHOLDER)] == NODATA).all() or not (a[list(USED)] != NODATA).any():
            bad.append(img.name)
    _check(not bad, "val chips: B01, B09, B10, B11 (not composited) are nodata everywhere, B02-B07 hold data",
           f"{bad[:3]}")
    if (REAL_CHIP / "granite_biomass_chip_T14_input.tif").is_file():
        with rasterio.open(REAL_CHIP / "granite_biomass_chip_T14_input.tif") as ds:
            real = (ds.count, ds.dtypes[0], ds.nodata, ds.shape)
        _check(real[:3] == (10, "float32", NODATA),
               f"the real granite chip has the same structure: {real[0]} bands {real[1]} nodata {real[2]} "
               f"{real[3]}")


def load_config(path: Path) -> dict[str, Any]:
    cfg = yaml.safe_load(path.read_text())
    bands = cfg["data"]["init_args"]["dataset_bands"]
    print(f"[granite] config {path}: dataset_bands {bands}, output_bands "
          f"{cfg['data']['init_args']['output_bands']}, batch_size {cfg['data']['init_args']['batch_size']}, "
          f"greps {cfg['data']['init_args'].get('img_grep', '*')!r}/{cfg['data']['init_args'].get('label_grep', '*')!r}")
    return cfg


def _roots(layout: Path) -> dict[str, str]:
    out = {}
    for split in SPLITS:
        out[f"{split}_data_root"] = str(layout / f"{split}_images")
        out[f"{split}_label_data_root"] = str(layout / f"{split}_labels")
    return out


def _instantiate(spec: Any) -> Any:
    if isinstance(spec, dict) and "class_path" in spec:
        path = spec["class_path"]
        path = {"ToTensorV2": "albumentations.pytorch.transforms.ToTensorV2"}.get(path, path)
        mod, _, name = path.rpartition(".")
        return getattr(importlib.import_module(mod), name)(
            **{k: _instantiate(v) for k, v in spec.get("init_args", {}).items()})
    if isinstance(spec, list):
        return [_instantiate(v) for v in spec]
    return spec


def datamodule(cfg: dict[str, Any], layout: Path, batch_size: int, **extra: Any) -> Any:
    from terratorch.datamodules import GenericNonGeoPixelwiseRegressionDataModule

    args = copy.deepcopy(cfg["data"]["init_args"])
    args.update(_roots(layout), batch_size=batch_size, num_workers=0, **extra)
    for key in ("train_transform", "val_transform", "test_transform"):
        if key in args:
            args[key] = _instantiate(args[key])
    return GenericNonGeoPixelwiseRegressionDataModule(**args)


def check_datamodule(cfg: dict[str, Any], layout: Path, counts: dict[str, int]) -> None:
    init = cfg["data"]["init_args"]
    gbs = int(init["batch_size"])
    n_batches = counts["train"] // gbs if init.get("drop_last", True) else -(-counts["train"] // gbs)
    print(f"[granite] note: granite's batch_size {gbs} with TerraTorch's drop_last (default on) gives "
          f"{n_batches} training batches per epoch on these {counts['train']} training chips")
    bs = max(1, min(4, *counts.values()))
    dm = datamodule(cfg, layout, bs)
    dm.setup("fit")
    dm.setup("test")
    for split in SPLITS:
        ds = getattr(dm, f"{split}_dataset")
        _check(len(ds) == counts[split] and ds.filter_indices == list(USED),
               f"{split}: dataset of {len(ds)} chips, bands taken from file positions "
               f"{[i + 1 for i in ds.filter_indices]} (B02..B07)")
        b = next(iter(getattr(dm, f"{split}_dataloader")()))
        img, mask = b["image"], b["mask"]
        h, w = img.shape[-2:]
        _check(tuple(img.shape) == (bs, 6, h, w) and img.dtype == torch.float32 and tuple(mask.shape) == (bs, h, w)
               and mask.dtype == torch.float32,
               f"{split} batch (batch {bs} for this read): image {tuple(img.shape)} {img.dtype}, mask "
               f"{tuple(mask.shape)} {mask.dtype}")
    n_lab = n_ign = 0
    for b in dm.val_dataloader():
        for i in range(b["image"].shape[0]):
            a, g = _compare_sample(b["image"][i], b["mask"][i], Path(b["filename"][i]), layout,
                                   float(init["no_data_replace"]), float(init["no_label_replace"]))
            n_lab, n_ign = n_lab + a, n_ign + g
    _check(n_lab > 0, f"val: every sample = chip bands 2-7 (nodata -> {init['no_data_replace']}) and its "
                      f"label (nodata -> {init['no_label_replace']}); {n_lab} labelled, {n_ign} ignored pixels")


def _compare_sample(img_t: torch.Tensor, mask_t: torch.Tensor, img_path: Path, layout: Path,
                    no_data: float, no_label: float) -> tuple[int, int]:
    lab_path = layout / "val_labels" / img_path.name.replace("_tile_img.tif", "_tile_label.tif")
    with rasterio.open(img_path) as ds:
        img = ds.read()[list(USED)]
    with rasterio.open(lab_path) as ds:
        lab, lab_nodata = ds.read(1), ds.nodata
    want_img = np.where(img == NODATA, no_data, img).astype(np.float32)
    want_mask = np.where(lab == lab_nodata, no_label, lab).astype(np.float32)
    if not np.array_equal(img_t.numpy(), want_img):
        _check(False, f"{img_path.name}: image tensor = file bands 2-7", fatal=True)
    if not np.array_equal(mask_t.numpy(), want_mask):
        _check(False, f"{img_path.name}: mask = label file (nodata -> {no_label})", fatal=True)
    return int((want_mask >= 0).sum()), int((want_mask == no_label).sum())


def check_real_chip(cfg: dict[str, Any]) -> None:
    """The real granite chip through the same dataset code: bands 2-7 come out."""
    if not (REAL_CHIP / "granite_biomass_chip_T14_input.tif").is_file():
        print(f"[granite] skip: {REAL_CHIP} absent")
        return
    with tempfile.TemporaryDirectory() as tmp:
        for split in SPLITS:
            for kind, src in (("images", "input"), ("labels", "label")):
                (Path(tmp) / f"{split}_{kind}").mkdir()
                suffix = "img" if kind == "images" else "label"
                (Path(tmp) / f"{split}_{kind}" / f"T14_00000_tile_{suffix}.tif").symlink_to(
                    REAL_CHIP / f"granite_biomass_chip_T14_{src}.tif")
        dm = datamodule(cfg, Path(tmp), 1)
        dm.setup("fit")
        got = dm.val_dataset[0]["image"].numpy()
        with rasterio.open(REAL_CHIP / "granite_biomass_chip_T14_input.tif") as ds:
            want = ds.read()[list(USED)]
    _check(np.array_equal(got, want), "the real granite chip reads through the same code to its bands 2-7")


def check_fit(cfg_path: Path, layout: Path, n_train: int, batch: int) -> None:
    bs = min(batch, n_train)
    if not _check(bs >= 2, f"{n_train} training chips allow a batch of >= 2",
                  "a training batch of 1 chip fails in UPerNet's BatchNorm (pooled 1x1 features)"):
        return
    exe = Path(sys.executable).with_name("terratorch")
    roots = [f"--data.init_args.{k}={v}" for k, v in _roots(layout).items()]
    cmd = [str(exe), "fit", "--config", str(cfg_path), *roots, "--trainer.fast_dev_run=true",
           f"--data.init_args.batch_size={bs}"]
    print(f"[granite] running (overrides: the six data roots; batch_size {bs} instead of granite's "
          f"{yaml.safe_load(cfg_path.read_text())['data']['init_args']['batch_size']}, for CPU memory and "
          f"small exports): {' '.join(cmd)}")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as cwd:  # granite's ./experiments stays out of the repo
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, cwd=cwd)
    out = proc.stdout + proc.stderr
    stopped = [ln.strip() for ln in out.splitlines() if "Trainer.fit` stopped" in ln]
    if proc.returncode != 0:
        print(out[-3000:])
    _check(proc.returncode == 0 and any("max_steps=1" in s for s in stopped),
           f"terratorch fit fast_dev_run with granite's config: one training step "
           f"({stopped[-1] if stopped else 'no stop line'}; exit {proc.returncode}; "
           f"{time.perf_counter() - t0:.0f} s)")


def project_checkpoint(path: Path) -> Path:
    """A checkpoint of this project's model (random weights) in the project's own format."""
    sys.path.insert(0, str(ROOT))
    from training.checkpoint import save_checkpoint
    from training.model import build_model

    torch.manual_seed(0)
    model = build_model("swin_b", in_channels=6)
    return save_checkpoint(path, model=model, bands=list(GRANITE_BANDS[1:7]), norm_mean=[0.0] * 6,
                           norm_std=[1.0] * 6, image_nodata=NODATA, label_nodata=GRANITE_LABEL_NODATA, label_mean=0.0)


def check_inference(cfg_path: Path, layout: Path, ckpt: Path | None, composites: Path | None) -> None:
    from terratorch.cli_tools import LightningInferenceModel

    with tempfile.TemporaryDirectory() as tmp:
        made = ckpt is None
        ckpt = ckpt or project_checkpoint(Path(tmp) / "project.ckpt")
        cwd = os.getcwd()
        os.chdir(tmp)  # granite's relative ./experiments, if anything is written, stays out of the repo
        try:
            lim = LightningInferenceModel.from_config(str(cfg_path), str(ckpt))
            _infer_dirs(lim, layout, ckpt if made else None, composites)
        finally:
            os.chdir(cwd)


def _infer_dirs(lim: Any, layout: Path, made: Path | None, composites: Path | None) -> None:
    """inference_on_dir on the val chips (and the composites folder), as the model card does."""
    if made:
        own = torch.load(made, map_location="cpu", weights_only=True)["state_dict"]
        theirs = lim.model.model.state_dict()
        _check(set(own) == set(theirs) and all(torch.equal(own[k], theirs[k]) for k in own),
               f"LightningInferenceModel.from_config(granite config, project checkpoint) loads all "
               f"{len(own)} tensors of this project's swin_b checkpoint unchanged")
    dirs = [layout / "val_images"] + ([composites] if composites else [])
    for d in dirs:
        if d == composites:
            check_composites(d)
        t0 = time.perf_counter()
        preds, names = lim.inference_on_dir(str(d))
        shapes = {_shape(Path(n)) for n in names}
        _check(len(names) == len(list(d.iterdir())) and preds.ndim == 3 and len(shapes) == 1
               and tuple(preds.shape[1:]) == shapes.pop() and bool(torch.isfinite(preds).all()),
               f"inference_on_dir({d}): predictions {tuple(preds.shape)} for {len(names)} files, "
               f"[{float(preds.min()):.1f}, {float(preds.max()):.1f}] ({time.perf_counter() - t0:.0f} s)")


def _shape(path: Path) -> tuple[int, int]:
    with rasterio.open(path) as ds:
        return ds.shape


def check_composites(folder: Path) -> None:
    """A folder for inference_on_dir: only 10-band granite-layout GeoTIFFs (granite's img_grep is '*')."""
    files = sorted(folder.iterdir())
    odd = [p.name for p in files if p.suffix.lower() not in (".tif", ".tiff")]
    _check(bool(files) and not odd, f"{folder}: only GeoTIFFs ({len(files)})",
           f"also {odd[:4]}: inference_on_dir reads every file of the folder", fatal=True)
    shapes = set()
    for p in files:
        with rasterio.open(p) as ds:
            ok = (ds.count == 10 and ds.dtypes[0] == "float32" and ds.nodata == NODATA
                  and tuple(d or "" for d in ds.descriptions) == GRANITE_BANDS)
            _check(ok, f"{p.name}: 10 bands {GRANITE_BANDS[0]}..{GRANITE_BANDS[-1]} float32 nodata -9999",
                   f"has {ds.count} bands {ds.descriptions} {ds.dtypes[0]} nodata {ds.nodata}", fatal=True)
            shapes.add(ds.shape)
    _check(len(shapes) == 1, f"{folder}: all files {sorted(shapes)[0]} pixels",
           f"sizes {sorted(shapes)}: inference_on_dir concatenates the predictions (torch.cat) and fails "
           "on rasters of different sizes", fatal=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("export", type=Path)
    ap.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="granite's config.yaml (read in place)")
    ap.add_argument("--checkpoint", type=Path, help="checkpoint for inference_on_dir (default: a fresh "
                                                    "project checkpoint, random weights)")
    ap.add_argument("--composites", type=Path, help="a folder of granite-layout composites for inference_on_dir")
    ap.add_argument("--fit-batch-size", type=int, default=2)
    ap.add_argument("--no-fit", action="store_true")
    ap.add_argument("--no-infer", action="store_true")
    a = ap.parse_args()
    _check(a.config.is_file(), f"granite config {a.config}", "not found (../shared beside the repo?)", fatal=True)
    cfg_path = a.config.resolve()
    layout = find_layout(a.export.resolve())
    print(f"[granite] checking {layout}")
    counts = check_names(layout)
    check_chips(layout)
    cfg = load_config(cfg_path)
    check_datamodule(cfg, layout, counts)
    check_real_chip(cfg)
    if not a.no_fit:
        check_fit(cfg_path, layout, counts["train"], a.fit_batch_size)
    if not a.no_infer:
        check_inference(cfg_path, layout, a.checkpoint, a.composites.resolve() if a.composites else None)
    if FAILED:
        _summary_exit()
    print("[granite] PASS")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
