"""TerraTorch / granite-geospatial-biomass layout of a chip export.

``{split}_images/{TILE}_{n}_tile_img.tif`` and ``{split}_labels/{TILE}_{n}_tile_label.tif``: TerraTorch's
``GenericNonGeoPixelwiseRegressionDataModule`` pairs images and labels ONLY by sorted file name, so both
folders hold exactly the same ``{TILE}_{n}`` stems. The files are hard links to the Esri layout's chips
(real files for every tool, no extra space); where hard links are impossible they are relative symlinks
or copies (``links`` option).

``terratorch_config.yaml`` is a granite-style Lightning CLI config (``terratorch fit --config ...``)
filled in with this export's absolute paths, bands, means and stds (training split). Its batch size is
min(64, training chips): TerraTorch drops an incomplete last training batch (``drop_last``, default on),
so granite's 64 on a smaller export trains nothing, and a batch of one chip fails in UPerNet's BatchNorm;
an export therefore needs at least ``MIN_TRAIN_CHIPS`` training chips. With granite-layout chips
(``band_layout="granite"``) ``dataset_bands`` is granite's positional list (-1 for B01, B09, B10, B11).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from core.bands import COMMON_NAMES
from core.constants import GRANITE_LABEL_NODATA

LINK_MODES = ("hardlink", "symlink", "copy")
GRANITE_BATCH_SIZE = 64
MIN_TRAIN_CHIPS = 2  # a training batch of one chip fails in BatchNorm ("Expected more than 1 value per channel")
# HLS L30 band id -> TerraTorch HLSBands name (terratorch.datasets.HLSBands).
HLS_BANDS = COMMON_NAMES  # HLS band id -> granite/TerraTorch band name


def config_batch_size(n_train: int) -> int:
    """min(64, ``n_train``): with drop_last every epoch has >= 1 full batch and no batch of one chip."""
    if n_train < MIN_TRAIN_CHIPS:
        raise ValueError(f"{n_train} training chips: a TerraTorch config needs at least {MIN_TRAIN_CHIPS}")
    return min(GRANITE_BATCH_SIZE, n_train)


def chip_stem(tile: str, n: int, width: int = 5) -> str:
    """``{TILE}_{n:0{width}d}`` (the pairing key of image and label files)."""
    return f"{tile}_{n:0{width}d}"


def place(src: str | os.PathLike[str], dst: str | os.PathLike[str], mode: str) -> str:
    """Put ``src`` at ``dst`` as a hard link, relative symlink or copy; returns the mode actually used.

    ``hardlink`` falls back to ``symlink`` when the file system refuses hard links.
    """
    if mode not in LINK_MODES:
        raise ValueError(f"terratorch link mode must be one of {LINK_MODES}, got {mode!r}")
    if mode == "hardlink":
        try:
            os.link(src, dst)
            return "hardlink"
        except OSError:
            mode = "symlink"
    if mode == "symlink":
        os.symlink(os.path.relpath(src, os.path.dirname(os.fspath(dst))), dst)
        return "symlink"
    shutil.copyfile(src, dst)
    return "copy"


def _data_args(r: Path, dataset_bands: Sequence[str | int], output_bands: Sequence[str], means: Sequence[float],
               stds: Sequence[float], batch_size: int, num_workers: int) -> dict[str, Any]:
    data_args: dict[str, Any] = {
        "batch_size": batch_size,
        "num_workers": num_workers,
        "drop_last": True,  # TerraTorch's default, spelled out: the last incomplete training batch is dropped
        "train_transform": [
            {"class_path": "albumentations.HorizontalFlip", "init_args": {"p": 0.5}},
            {"class_path": "albumentations.VerticalFlip", "init_args": {"p": 0.5}},
            {"class_path": "albumentations.pytorch.transforms.ToTensorV2"},
        ],
        "dataset_bands": list(dataset_bands),
        "output_bands": list(output_bands),
        "rgb_indices": [2, 1, 0],
        "img_grep": "*_tile_img.tif",
        "label_grep": "*_tile_label.tif",
        "means": [float(m) for m in means],
        "stds": [float(s) for s in stds],
        "no_label_replace": int(GRANITE_LABEL_NODATA),
        "no_data_replace": 0,
    }
    for split in ("train", "val", "test"):
        data_args[f"{split}_data_root"] = str(r / f"{split}_images")
        data_args[f"{split}_label_data_root"] = str(r / f"{split}_labels")
    return data_args


def _trainer(r: Path) -> dict[str, Any]:
    return {
        "accelerator": "auto", "strategy": "auto", "devices": "auto", "num_nodes": 1,
        "logger": {"class_path": "TensorBoardLogger", "init_args": {"save_dir": str(r / "experiments"), "name": "agb"}},
        "callbacks": [{"class_path": "LearningRateMonitor", "init_args": {"logging_interval": "epoch"}},
                      {"class_path": "EarlyStopping", "init_args": {"monitor": "val/loss", "patience": 100}}],
        "max_epochs": 300, "check_val_every_n_epoch": 1, "log_every_n_steps": 20,
        "enable_checkpointing": True, "default_root_dir": str(r / "experiments"),
    }


def _model(output_bands: Sequence[str], chip_size: int) -> dict[str, Any]:
    stride = max(1, chip_size * 6 // 7)
    return {
        "class_path": "terratorch.tasks.PixelwiseRegressionTask",
        "init_args": {
            "model_args": {
                "decoder": "UperNetDecoder", "pretrained": False, "backbone": "prithvi_swin_B",
                "backbone_drop_path_rate": 0.3, "decoder_channels": 32, "in_channels": len(output_bands),
                "bands": list(output_bands), "num_frames": 1, "head_dropout": 0.16,
                "head_final_act": "torch.nn.ReLU", "head_learned_upscale_layers": 2,
            },
            "loss": "rmse", "ignore_index": int(GRANITE_LABEL_NODATA), "freeze_backbone": False,
            "freeze_decoder": False, "model_factory": "PrithviModelFactory",
            "tiled_inference_parameters": {"h_crop": chip_size, "h_stride": stride, "w_crop": chip_size,
                                           "w_stride": stride, "average_patches": True},
        },
    }


def terratorch_config(*, root: Path, dataset_bands: Sequence[str | int], output_bands: Sequence[str],
                      means: Sequence[float], stds: Sequence[float], chip_size: int,
                      batch_size: int = GRANITE_BATCH_SIZE, num_workers: int = 2) -> dict[str, Any]:
    """A granite-style TerraTorch config for this export (absolute paths under ``root``).

    Nodata: image pixels masked by their -9999 tag become ``no_data_replace`` 0 (before normalisation, as
    granite does); label pixels masked by their nodata tag become ``no_label_replace`` -1, which the task
    ignores (``ignore_index: -1``).
    """
    if len(means) != len(output_bands) or len(stds) != len(output_bands):
        raise ValueError(f"means/stds need one value per output band {list(output_bands)}")
    r = root.resolve()
    return {
        "seed_everything": 42,
        "trainer": _trainer(r),
        "data": {"class_path": "terratorch.datamodules.GenericNonGeoPixelwiseRegressionDataModule",
                 "init_args": _data_args(r, dataset_bands, output_bands, means, stds, batch_size, num_workers)},
        "model": _model(output_bands, chip_size),
        "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 3.1e-4, "weight_decay": 0.033}},
        "lr_scheduler": {"class_path": "ReduceLROnPlateau", "init_args": {"monitor": "val/loss"}},
    }


def write_config(path: Path, config: dict[str, Any]) -> None:
    """Write the config as YAML with a header naming how to use it."""
    header = ("# TerraTorch config written by chips.export (granite-geospatial-biomass style).\n"
              "# Use: terratorch fit --config terratorch_config.yaml\n")
    path.write_text(header + yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
