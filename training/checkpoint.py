"""Checkpoints: this project's own format, and Lightning / TerraTorch state dicts mapped onto the model.

A project checkpoint is a ``torch.save``'d dict (read back with ``weights_only=True``):
``{"format": "agb-pipeline-checkpoint", "version": 1, "model_config": ModelConfig.to_dict(),
"bands": [...], "norm": {"mean": [...], "std": [...]}, "image_nodata": -9999.0, "label_nodata": -1.0,
"label_mean": float, "state_dict": {...}, "train_state": {...optimizer/scheduler/epoch...} or None,
"meta": {...}}``. ``norm`` is in raw HLS units x10000; image nodata is replaced by 0 before normalising
(as granite's ``no_data_replace: 0``). Weights are only ever read from local files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.files import atomic_path
from training.model import BiomassModel, ModelConfig, build_model

FORMAT = "agb-pipeline-checkpoint"
VERSION = 1

# foreign-name rewrites applied after prefix stripping (TerraTorch before the timm flattening, mmseg)
_NAME_MAPS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^encoder\.stages\.(\d+)\."), r"encoder.stages_\1."),
    (re.compile(r"^backbone\."), "encoder."),
    (re.compile(r"^encoder\.model\."), "encoder."),
)
_PREFIXES = ("model.", "module.", "_orig_mod.", "net.")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model."""


def _atomic_torch_save(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def save_checkpoint(path: str | Path, *, model: BiomassModel, bands: list[str], norm_mean: list[float],
                    norm_std: list[float], image_nodata: float, label_nodata: float, label_mean: float,
                    train_state: dict[str, Any] | None = None, meta: dict[str, Any] | None = None) -> Path:
    """Write a project checkpoint atomically (temp file + ``os.replace``); returns its path."""
    base = getattr(model, "_orig_mod", model)
    obj = {
        "format": FORMAT, "version": VERSION, "model_config": base.config.to_dict(), "bands": list(bands),
        "norm": {"mean": [float(v) for v in norm_mean], "std": [float(v) for v in norm_std]},
        "image_nodata": float(image_nodata), "label_nodata": float(label_nodata),
        "label_mean": float(label_mean),
        "state_dict": {k: v.detach().cpu() for k, v in base.state_dict().items()},
        "train_state": train_state, "meta": meta or {},
    }
    path = Path(path)
    _atomic_torch_save(obj, path)
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """``torch.load(weights_only=True)`` of a local file; clear error when missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated files, non-weights content
        raise CheckpointError(f"checkpoint {path} cannot be read with weights_only=True: {exc}") from exc
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, expected a dict")
    return obj


def is_project_checkpoint(obj: dict[str, Any]) -> bool:
    return obj.get("format") == FORMAT


def extract_state_dict(obj: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The tensor dict inside a project / Lightning / plain checkpoint, prefixes stripped, names mapped."""
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError("no tensors found in the checkpoint (expected a state dict)")
    out: dict[str, torch.Tensor] = {}
    for name, value in tensors.items():
        changed = True
        while changed:
            changed = False
            for prefix in _PREFIXES:
                if name.startswith(prefix):
                    name, changed = name[len(prefix):], True
        for pattern, repl in _NAME_MAPS:
            name = pattern.sub(repl, name)
        out[name] = value
    return out


@dataclass(frozen=True)
class LoadReport:
    """What a load did: keys missing from the file, unexpected keys, shape mismatches (skipped)."""

    loaded: int
    missing: list[str]
    unexpected: list[str]
    mismatched: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"loaded": self.loaded, "missing": self.missing, "unexpected": self.unexpected,
                "mismatched": self.mismatched}


def load_state_dict_into(model: nn.Module, state: dict[str, torch.Tensor], *, allow_partial: bool = False,
                         source: str = "state dict") -> LoadReport:
    """Copy ``state`` into ``model``; refuses missing/unexpected/mismatched keys unless ``allow_partial``."""
    own = model.state_dict()
    missing = sorted(k for k in own if k not in state)
    unexpected = sorted(k for k in state if k not in own)
    mismatched = sorted(k for k in state if k in own and tuple(state[k].shape) != tuple(own[k].shape))
    if (missing or unexpected or mismatched) and not allow_partial:
        def few(names: list[str]) -> str:
            return ", ".join(names[:8]) + (f" ... (+{len(names) - 8})" if len(names) > 8 else "")
        raise CheckpointError(
            f"{source} does not fit the model: {len(missing)} missing [{few(missing)}], {len(unexpected)} "
            f"unexpected [{few(unexpected)}], {len(mismatched)} shape mismatches [{few(mismatched)}]; "
            "pass allow_partial=True to load the matching part anyway"
        )
    usable = {k: v for k, v in state.items() if k in own and k not in mismatched}
    model.load_state_dict(usable, strict=False)
    return LoadReport(len(usable), missing, unexpected, mismatched)


def load_model(path: str | Path, *, model: str | None = None, in_channels: int | None = None,
               allow_partial: bool = False) -> tuple[BiomassModel, dict[str, Any], LoadReport]:
    """Build and load a model from a project checkpoint or a foreign (Lightning/TerraTorch) one.

    A project checkpoint names its preset; a foreign one needs ``model`` (preset) and takes ``in_channels``
    from the patch-embedding weight. Returns (model in eval mode, checkpoint info dict, load report).
    """
    obj = read_checkpoint(path)
    state = extract_state_dict(obj)
    if is_project_checkpoint(obj):
        cfg = ModelConfig.from_dict(obj["model_config"])
        if model is not None and model != cfg.preset:
            raise CheckpointError(f"checkpoint {path} is preset {cfg.preset!r}, but model={model!r} was asked")
        net = BiomassModel(cfg)
        info = {k: obj[k] for k in ("bands", "norm", "image_nodata", "label_nodata", "label_mean") if k in obj}
        info["meta"] = obj.get("meta", {})
    else:
        if model is None:
            raise CheckpointError(f"checkpoint {path} is not a project checkpoint: pass model=<preset>")
        weight = state.get("encoder.patch_embed.projection.weight")
        bands = in_channels or (int(weight.shape[1]) if weight is not None else 6)
        net = build_model(model, in_channels=bands)
        info = {}
    report = load_state_dict_into(net, state, allow_partial=allow_partial, source=f"checkpoint {path}")
    net.eval()
    info["model_config"] = net.config.to_dict()
    info["foreign"] = not is_project_checkpoint(obj)
    return net, info, report
