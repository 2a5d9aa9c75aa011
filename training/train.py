"""Training loop in plain PyTorch: ``train_model`` is the engine behind the ``train-model`` flow.

Writes into ``output_dir`` (the pipeline passes ``<out>/model``): ``last.ckpt`` (every epoch, atomically,
with optimiser state), ``best.ckpt`` (lowest validation loss), ``history.json``, ``train_result.json`` and
the packed chip cache ``cache/``. Deterministic for a given seed on CPU: epoch ``e`` draws its batch order,
augmentations and dropout from generators seeded by ``(seed, e)``, so a run killed mid-epoch and resumed
from ``last.ckpt`` repeats that epoch exactly and ends with the same weights as an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from chips.manifest import MANIFEST_NAME
from core.contracts import Contract
from core.files import write_json_atomic
from training import checkpoint as ckpt
from training.config import TrainConfig, torch_run_scope
from training.data import SplitArrays, band_indices, label_mean, load_split, read_export
from training.losses import masked_loss
from training.model import DEFAULT_BANDS, BiomassModel, build_model, count_parameters
from training.model import freeze_backbone as freeze_encoder
from training.norm import Norm, model_norm, scratch_norm

log = logging.getLogger(__name__)

DEFAULT_LR = {"tiny": 3e-3, "swin_t": 5e-4, "swin_b": 3.1e-4}
# training crop size per preset when crop_size is None (None: the chip size). Small crops placed on labelled
# pixels give the tiny CPU model many more optimiser steps per second (measured on the demo world).
DEFAULT_CROP = {"tiny": 64}
# schedule per preset when schedule is None: a short CPU run of the tiny model learns most at a constant lr
# (demo world, 120 steps: test RMSE 70 with constant vs 84 with cosine decay; ridge baseline 81)
DEFAULT_SCHEDULE = {"tiny": "constant"}
MIN_STEPS_PER_EPOCH = 8
# run settings that may change between an interrupted run and its resumption
_RESUMABLE_DIFFS = {"epochs", "patience", "device", "num_workers", "resume", "time_limit_s", "cpu_threads",
                    "chip_size"}  # chip_size: implied by export_digest; absent from older checkpoints


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> cuda when available, else cpu."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass
class Batcher:
    """Assembles augmented batches from packed arrays: random crops, flips and 90-degree rotations.

    With ``label_crops`` (and crops smaller than the chip) each crop is placed to contain a random labelled
    pixel of its chip (GEDI labels are sparse tracks: more labelled pixels per computed pixel).
    """

    data: SplitArrays
    batch_size: int
    crop: int
    augment: bool
    label_crops: bool = True

    def __post_init__(self) -> None:
        self._labelled: dict[int, np.ndarray] = {}

    def _labelled_pixels(self, chip: int) -> np.ndarray:
        if chip not in self._labelled:
            self._labelled[chip] = np.argwhere(np.asarray(self.data.labels[chip]) >= 0)
        return self._labelled[chip]

    def epoch_batches(self, gen: torch.Generator, steps: int) -> list[np.ndarray]:
        n = len(self.data)
        order = torch.cat([torch.randperm(n, generator=gen) for _ in range(math.ceil(steps * self.batch_size / n))])
        return [order[i * self.batch_size:(i + 1) * self.batch_size].numpy() for i in range(steps)]

    def make(self, idx: np.ndarray, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        images = torch.from_numpy(np.array(self.data.images[np.sort(idx)], np.float32))
        labels = torch.from_numpy(np.array(self.data.labels[np.sort(idx)], np.float32))
        h, w = images.shape[-2:]
        c = min(self.crop, h, w)
        draws = torch.randint(0, 1 << 30, (len(idx), 4), generator=gen).tolist()
        out_i, out_l = [], []
        for k, (dy, dx, rot, flip) in enumerate(draws):
            y0, x0 = dy % (h - c + 1), dx % (w - c + 1)
            pts = self._labelled_pixels(int(np.sort(idx)[k])) if self.label_crops and c < max(h, w) else None
            if pts is not None and len(pts):
                py, px = pts[(dy ^ dx) % len(pts)]
                y0 = int(min(max(py - dy % c, 0), h - c))
                x0 = int(min(max(px - dx % c, 0), w - c))
            im, lb = images[k, :, y0:y0 + c, x0:x0 + c], labels[k, y0:y0 + c, x0:x0 + c]
            if self.augment:
                im, lb = torch.rot90(im, rot % 4, (1, 2)), torch.rot90(lb, rot % 4, (0, 1))
                if flip % 2:
                    im, lb = im.flip(2), lb.flip(1)
            out_i.append(im)
            out_l.append(lb)
        return torch.stack(out_i).contiguous(), torch.stack(out_l).contiguous()


def lr_at(step: int, total: int, base: float, warmup: int, cosine: bool = True) -> float:
    """Linear warm-up, then cosine decay to 1 % of ``base`` (or constant ``base`` when not ``cosine``)."""
    if step < warmup:
        return base * (step + 1) / warmup
    if not cosine:
        return base
    t = (step - warmup) / max(1, total - warmup)
    return base * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def evaluate_loss(model: BiomassModel, data: SplitArrays, device: torch.device, kind: str,
                  batch_size: int = 8) -> dict[str, float]:
    """Pixel-weighted validation loss over all labelled pixels of ``data`` (whole chips, no augmentation)."""
    model.eval()
    sums = {"se": 0.0, "ae": 0.0, "loss": 0.0, "n": 0}
    with torch.no_grad(), _autocast(device):
        for i in range(0, len(data), batch_size):
            x = torch.from_numpy(np.array(data.images[i:i + batch_size], np.float32)).to(device)
            y = torch.from_numpy(np.array(data.labels[i:i + batch_size], np.float32)).to(device)
            pred = model(_to_layout(x, device)).float()
            valid = y >= 0
            n = int(valid.sum())
            if n == 0:
                continue
            d = pred[valid] - y[valid]
            sums["se"] += float((d * d).sum())
            sums["ae"] += float(d.abs().sum())
            loss, _ = masked_loss(pred, y, kind if kind != "rmse" else "mse")
            sums["loss"] += float(loss) * n
            sums["n"] += n
    n = max(1, sums["n"])
    loss = sums["loss"] / n
    return {"loss": math.sqrt(loss) if kind == "rmse" else loss, "rmse": math.sqrt(sums["se"] / n),
            "mae": sums["ae"] / n, "n_pixels": sums["n"]}


def _autocast(device: torch.device) -> Any:
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def _to_layout(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else x


@dataclass
class _Setup:
    net: BiomassModel
    bands: list[str]
    norm: Norm
    init_report: dict[str, Any] | None

    @property
    def mean(self) -> list[float]:
        return self.norm.mean

    @property
    def std(self) -> list[float]:
        return self.norm.std


def _setup_model(info: Any, c: TrainConfig) -> _Setup:
    """The model to train and its bands and normalisation (the rule of :mod:`training.norm`)."""
    torch.manual_seed(c.seed)
    user = (c.norm_mean, c.norm_std)
    if c.init_checkpoint:
        net, ck, report = ckpt.load_model(c.init_checkpoint, model=c.model, allow_partial=c.allow_partial_init)
        # a project checkpoint keeps its bands and normalisation; a foreign one takes granite's (or the user's)
        use = list(ck["bands"]) if "bands" in ck else list(c.bands or DEFAULT_BANDS)[: net.config.in_channels]
        norm = model_norm(ck, use, *user, where=f"init_checkpoint {c.init_checkpoint}")
        band_indices(info, use)  # the export must hold them
        return _Setup(net, use, norm, report.to_dict())
    use = list(c.bands or DEFAULT_BANDS)
    idx = band_indices(info, use)
    net = build_model(c.model or "tiny", in_channels=len(use))
    return _Setup(net, use, scratch_norm([info.mean[i] for i in idx], [info.std[i] for i in idx], use, *user), None)


def _check_resume(state: dict[str, Any], config: dict[str, Any], path: Path) -> None:
    old = state.get("run_config", {})
    diffs = sorted(k for k in set(old) | set(config) if k not in _RESUMABLE_DIFFS and old.get(k) != config.get(k))
    if diffs:
        raise ckpt.CheckpointError(
            f"{path} was written by a run with other settings ({', '.join(diffs)}); use another output_dir "
            "or resume=False to start over"
        )


@dataclass(frozen=True)
class TrainResult(Contract):
    """A finished (or resumed, or skipped) training run: checkpoints, history and throughput."""

    checkpoint: str
    best_checkpoint: str
    last_checkpoint: str
    history_path: str
    history: list[dict[str, Any]]
    best_val_loss: float
    best_epoch: int
    epochs_run: int
    stopped: str
    resumed_from_epoch: int | None
    loss: str
    steps_per_epoch: int
    throughput: dict[str, float]
    model: str
    parameters: int
    frozen_parameters: int
    trainable_parameters: int
    device: str
    cpu_threads: int | None
    init: dict[str, Any] | None
    label_mean: float
    seconds: float
    data: dict[str, Any]
    norm: Norm
    skipped: bool = False


def _resolved_config(c: TrainConfig, export: str, setup: _Setup, dev: torch.device, steps: int,
                     chip_size: int, lr: float, schedule: str, output_lr_mult: float) -> dict[str, Any]:
    """The run's settings as recorded in checkpoints (a resumed run must match them)."""
    preset = setup.net.config.preset
    manifest = Path(export) / MANIFEST_NAME
    return {
        "export": str(Path(export).resolve()), "export_digest": hashlib.sha256(manifest.read_bytes()).hexdigest(),
        "model": preset, "epochs": c.epochs, "batch_size": c.batch_size,
        "lr": lr, "init_checkpoint": c.init_checkpoint, "freeze_backbone": c.freeze_backbone, "seed": c.seed,
        "device": str(dev), "num_workers": c.num_workers, "patience": c.patience, "loss": c.loss,
        "steps_per_epoch": steps, "weight_decay": c.weight_decay, "schedule": schedule,
        "warmup_steps": c.warmup_steps, "grad_clip": c.grad_clip, "bands": setup.bands,
        "crop_size": c.crop_size or DEFAULT_CROP.get(preset, chip_size), "augment": c.augment,
        "compile": c.compile, "resume": c.resume, "time_limit_s": c.time_limit_s, "output_lr_mult": output_lr_mult,
        "norm": setup.norm.to_dict(), "chip_size": chip_size,  # predict_map's default crop
    }


def train_model(*, export: str, output_dir: str, config: TrainConfig = TrainConfig(),
                on_step: Callable[[int, int], None] | None = None) -> TrainResult:
    """Train (or fine-tune from ``config.init_checkpoint``) a biomass model on a chips export.

    Seeds and torch thread settings are scoped to the run (:func:`training.config.torch_run_scope`).
    ``on_step(epoch, step)`` is called after every optimiser step (tests use it to inject an interruption).
    """
    dev = resolve_device(config.device)
    with torch_run_scope(config.cpu_threads if dev.type == "cpu" else None) as threads:
        return _train(export, output_dir, config, dev, threads if dev.type == "cpu" else None, on_step)


def _train(export: str, output_dir: str, c: TrainConfig, dev: torch.device, threads: int | None,
           on_step: Callable[[int, int], None] | None) -> TrainResult:
    t_start = time.perf_counter()
    info = read_export(export)
    setup = _setup_model(info, c)
    preset = setup.net.config.preset
    model_dir = Path(output_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    train, val = (load_split(info, s, setup.bands, mean=setup.mean, std=setup.std, cache_dir=model_dir / "cache",
                             num_workers=c.num_workers) for s in ("train", "val"))
    lmean = label_mean(train)
    lab = np.asarray(train.labels)
    lstd = float(lab[lab >= 0].std()) if (lab >= 0).any() else 1.0
    # the output layer must move in Mg/ha: scale its lr with the label spread
    out_mult = c.output_lr_mult if c.output_lr_mult is not None else float(min(50.0, max(1.0, lstd / 7.0)))
    if c.init_checkpoint is None:
        setup.net.set_output_bias(lmean)
    frozen = freeze_encoder(setup.net) if c.freeze_backbone else 0
    steps = c.steps_per_epoch or max(MIN_STEPS_PER_EPOCH, math.ceil(len(train) / c.batch_size))
    if c.max_steps_per_epoch:
        steps = min(steps, int(c.max_steps_per_epoch))
    cfg = _resolved_config(c, export, setup, dev, steps, info.chip_size,
                           float(c.lr if c.lr is not None else DEFAULT_LR.get(preset, 3e-4)),
                           c.schedule or DEFAULT_SCHEDULE.get(preset, "cosine"), out_mult)
    fit = _fit(setup, info, train, val, dev, cfg, model_dir, lmean, on_step)
    if fit.get("skipped"):
        return TrainResult.from_dict(fit)
    result = TrainResult(**fit, model=preset, parameters=count_parameters(setup.net), frozen_parameters=frozen,
                         trainable_parameters=sum(p.numel() for p in setup.net.parameters() if p.requires_grad),
                         device=str(dev), cpu_threads=threads, init=setup.init_report, label_mean=lmean,
                         seconds=time.perf_counter() - t_start, data=_data_report(train, val),
                         norm=setup.norm)
    write_json_atomic(model_dir / "train_result.json", result.to_dict())
    return result


def _data_report(train: SplitArrays, val: SplitArrays) -> dict[str, Any]:
    read_s = train.read_seconds + val.read_seconds
    return {"train_chips": len(train), "val_chips": len(val), "train_labelled_pixels": train.n_labelled,
            "tiff_or_cache_read_s": read_s, "read_chips_per_s": (len(train) + len(val)) / max(1e-9, read_s),
            "from_cache": train.from_cache and val.from_cache}


def _save(path: Path, setup: _Setup, lmean: float, info: Any, train_state: dict[str, Any] | None,
          meta: dict[str, Any]) -> None:
    ckpt.save_checkpoint(path, model=setup.net, bands=setup.bands, norm_mean=setup.mean, norm_std=setup.std,
                         image_nodata=info.image_nodata, label_nodata=info.label_nodata, label_mean=lmean,
                         train_state=train_state, meta={**meta, "norm_source": setup.norm.source})


@dataclass
class _Loop:
    """Mutable state of one training run (optimiser, scheduler, counters)."""

    net: BiomassModel
    runner: Any
    params: list[torch.nn.Parameter]
    opt: torch.optim.Optimizer
    plateau: torch.optim.lr_scheduler.ReduceLROnPlateau
    warmup: int
    t_model: float = 0.0
    t_data: float = 0.0
    n_img: int = 0


def _make_loop(net: BiomassModel, dev: torch.device, cfg: dict[str, Any]) -> _Loop:
    net = net.to(dev)
    if dev.type == "cuda":
        net = net.to(memory_format=torch.channels_last)
    params = [p for p in net.parameters() if p.requires_grad]
    out_layer = set(net.head.head[-1].parameters())
    groups = [{"params": [p for p in params if p not in out_layer], "lr_mult": 1.0},
              {"params": [p for p in params if p in out_layer], "lr_mult": cfg["output_lr_mult"]}]
    opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    for g in opt.param_groups:
        g["lr"] = cfg["lr"] * g["lr_mult"]
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=max(1, cfg["patience"] // 3))
    total = cfg["steps_per_epoch"] * cfg["epochs"]
    warmup = cfg["warmup_steps"] if cfg["warmup_steps"] is not None else min(100, max(1, total // 20))
    runner = torch.compile(net) if cfg["compile"] and dev.type == "cuda" else net
    return _Loop(net, runner, params, opt, plateau, warmup)


def _restore(loop: _Loop, setup: _Setup, state: dict[str, Any], cfg: dict[str, Any], model_dir: Path
             ) -> dict[str, Any] | None:
    """Load ``last.ckpt`` into the run (returns a finished run's saved result to skip it)."""
    last = model_dir / "last.ckpt"
    if not (cfg["resume"] and last.is_file()):
        return None
    saved = ckpt.read_checkpoint(last)
    ts = saved.get("train_state") or {}
    if ts.get("run_config", {}).get("export_digest") != cfg["export_digest"]:
        log.info("the chips export changed since %s was written: training starts over", last)
        return None
    _check_resume(ts, cfg, last)
    prev = model_dir / "train_result.json"
    if ts.get("finished") and ts.get("run_config", {}).get("epochs") == cfg["epochs"] and prev.is_file():
        log.info("training in %s already finished; skipping", model_dir)
        return json.loads(prev.read_text()) | {"skipped": True}
    ckpt.load_state_dict_into(setup.net, ckpt.extract_state_dict(saved), source=str(last))
    loop.opt.load_state_dict(ts["optimizer"])
    loop.plateau.load_state_dict(ts["plateau"])
    state.update({k: ts[k] for k in state})
    state["stopped"] = None
    log.info("resuming from %s after epoch %d", last, state["epoch"])
    return None


def _train_epoch(loop: _Loop, batcher: Batcher, epoch: int, dev: torch.device, cfg: dict[str, Any],
                 on_step: Callable[[int, int], None] | None) -> tuple[list[float], int]:
    """One epoch of optimiser steps; returns (batch losses, batches skipped for lack of labels)."""
    steps = cfg["steps_per_epoch"]
    gen = torch.Generator().manual_seed(cfg["seed"] * 1_000_003 + epoch)
    torch.manual_seed(cfg["seed"] * 7919 + epoch + 1)
    loop.net.train()
    if cfg["freeze_backbone"]:
        loop.net.encoder.eval()
    losses, skipped = [], 0
    for i, idx in enumerate(batcher.epoch_batches(gen, steps)):
        td = time.perf_counter()
        x, y = batcher.make(idx, gen)
        x = _to_layout(x.to(dev, non_blocking=True), dev)
        y = y.to(dev, non_blocking=True)
        tm = time.perf_counter()
        loop.t_data += tm - td
        if cfg["schedule"] != "plateau":
            step_lr = lr_at(epoch * steps + i, steps * cfg["epochs"], cfg["lr"], loop.warmup,
                            cfg["schedule"] == "cosine")
            for g in loop.opt.param_groups:
                g["lr"] = step_lr * g["lr_mult"]
        with _autocast(dev):
            pred = loop.runner(x)
        loss, n = masked_loss(pred.float(), y, cfg["loss"])
        if n == 0:
            skipped += 1
            continue
        loop.opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg["grad_clip"]:
            torch.nn.utils.clip_grad_norm_(loop.params, cfg["grad_clip"])
        loop.opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        loop.t_model += time.perf_counter() - tm
        loop.n_img += x.shape[0]
        losses.append(loss.item())
        if on_step is not None:
            on_step(epoch, i)
    return losses, skipped


def _fit(setup: _Setup, info: Any, train: SplitArrays, val: SplitArrays, dev: torch.device,
         cfg: dict[str, Any], model_dir: Path, lmean: float,
         on_step: Callable[[int, int], None] | None) -> dict[str, Any]:
    loop = _make_loop(setup.net, dev, cfg)
    state = {"epoch": -1, "history": [], "best": math.inf, "best_epoch": -1, "bad": 0, "stopped": None}
    done = _restore(loop, setup, state, cfg, model_dir)
    if done is not None:
        return done
    resumed_from = state["epoch"] if state["epoch"] >= 0 else None
    batcher = Batcher(train, cfg["batch_size"], cfg["crop_size"], cfg["augment"])
    last = model_dir / "last.ckpt"
    t0 = time.perf_counter()
    for epoch in range(state["epoch"] + 1, cfg["epochs"]):
        te = time.perf_counter()
        losses, skipped = _train_epoch(loop, batcher, epoch, dev, cfg, on_step)
        v = evaluate_loss(loop.net, val, dev, cfg["loss"])
        if cfg["schedule"] == "plateau":
            loop.plateau.step(v["loss"])
        rec = {"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else None, "val_loss": v["loss"],
               "val_rmse": v["rmse"], "val_mae": v["mae"], "lr": loop.opt.param_groups[0]["lr"],
               "skipped_batches": skipped,
               "img_per_s": cfg["steps_per_epoch"] * cfg["batch_size"] / max(1e-9, time.perf_counter() - te)}
        state["history"].append(rec)
        state["epoch"] = epoch
        improved = v["loss"] < state["best"]
        if improved:
            state.update(best=v["loss"], best_epoch=epoch, bad=0)
        else:
            state["bad"] += 1
        stop = _stop_reason(state, cfg, epoch, t0)
        meta = {"epoch": epoch, "val_loss": v["loss"], "run_config": cfg}
        if improved:
            _save(model_dir / "best.ckpt", setup, lmean, info, None, meta)
        ts = dict(state, optimizer=loop.opt.state_dict(), plateau=loop.plateau.state_dict(), run_config=cfg,
                  finished=stop is not None or epoch == cfg["epochs"] - 1)
        _save(last, setup, lmean, info, ts, meta)
        write_json_atomic(model_dir / "history.json", state["history"])
        log.info("epoch %d/%d train_loss %.3f val_loss %.3f val_rmse %.2f Mg/ha lr %.2e %.1f img/s", epoch + 1,
                 cfg["epochs"], rec["train_loss"] or float("nan"), v["loss"], v["rmse"], rec["lr"], rec["img_per_s"])
        if stop:
            state["stopped"] = stop
            break
    return {
        "checkpoint": str(model_dir / "best.ckpt"), "best_checkpoint": str(model_dir / "best.ckpt"),
        "last_checkpoint": str(last), "history_path": str(model_dir / "history.json"),
        "history": state["history"], "best_val_loss": state["best"], "best_epoch": state["best_epoch"],
        "epochs_run": len(state["history"]), "stopped": state["stopped"] or "completed",
        "resumed_from_epoch": resumed_from, "loss": cfg["loss"], "steps_per_epoch": cfg["steps_per_epoch"],
        "throughput": {"model_img_per_s": loop.n_img / max(1e-9, loop.t_model),
                       "batch_assembly_img_per_s": loop.n_img / max(1e-9, loop.t_data),
                       "wall_img_per_s": loop.n_img / max(1e-9, time.perf_counter() - t0)},
    }


def _stop_reason(state: dict[str, Any], cfg: dict[str, Any], epoch: int, t0: float) -> str | None:
    if state["bad"] >= cfg["patience"]:
        return "early_stopping"
    if cfg["time_limit_s"] and time.perf_counter() - t0 > cfg["time_limit_s"]:
        return "time_limit"
    return None
