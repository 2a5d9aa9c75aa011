"""Evaluation over labelled pixels: ``evaluate_model`` is the engine behind the ``evaluate-model`` flow.

Metrics (Mg/ha): RMSE, MAE, bias (mean prediction - label), R^2, and RMSE binned by label
(0-100, 100-200, 200-300, 0-300; a bin is ``lo <= label < hi`` as granite's ``binwise_rmse``), per PFT
where the label chips carry a PFT band. The same metrics for two baselines on the same pixels: the
training-label mean, and a per-pixel ridge regression on the normalised bands fitted on the train split.
Writes ``<output_dir>/metrics.json`` (``metrics_<split>.json`` for other splits), a scatter plot
(predicted vs GEDI) and a residual histogram as PNG. Works zero-shot on any checkpoint that loads.
With ``intervals`` (default on), split-conformal prediction intervals are calibrated on the validation split
(:mod:`training.uncertainty`), written to ``<output_dir>/calibration.json`` for the maps, and their empirical
coverage on the evaluated split is reported under ``interval`` in metrics.json.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.contracts import Contract
from core.files import replace_into, temp_sibling, write_json_atomic
from training.checkpoint import load_model
from training.config import torch_run_scope
from training.data import ExportError, SplitArrays, label_mean, load_split, read_export
from training.model import DEFAULT_BANDS, BiomassModel
from training.norm import Norm, model_norm
from training.seasons import chip_seasons, per_season_metrics
from training.train import _autocast, _to_layout, resolve_device
from training.uncertainty import (
    DEFAULT_INTERVALS,
    Calibration,
    CalibrationError,
    IntervalOptions,
    calibrate,
    coverage,
)

BINS = ((0.0, 100.0), (100.0, 200.0), (200.0, 300.0), (0.0, 300.0))


def regression_metrics(label: np.ndarray, pred: np.ndarray) -> dict[str, float | int | None]:
    """RMSE, MAE, bias, R^2 and count over paired 1-D arrays (Mg/ha). Empty input -> None values."""
    n = int(label.size)
    if n == 0:
        return {"n": 0, "rmse": None, "mae": None, "bias": None, "r2": None}
    d = pred.astype(np.float32) - label.astype(np.float32)
    var = float(np.var(label, dtype=np.float64))
    mse = float(np.mean(d * d, dtype=np.float64))
    return {"n": n, "rmse": mse**0.5, "mae": float(np.mean(np.abs(d), dtype=np.float64)),
            "bias": float(np.mean(d, dtype=np.float64)), "r2": (1.0 - mse / var) if var > 0 else None}


def binned_rmse(label: np.ndarray, pred: np.ndarray, bins: tuple[tuple[float, float], ...] = BINS
                ) -> dict[str, dict[str, float | int | None]]:
    """RMSE and count per label bin ``[lo, hi)``, keyed ``"lo-hi"``."""
    out = {}
    for lo, hi in bins:
        sel = (label >= lo) & (label < hi)
        d = pred[sel] - label[sel]
        out[f"{lo:g}-{hi:g}"] = {"n": int(sel.sum()),
                                 "rmse": float(np.sqrt(np.mean(d * d, dtype=np.float64))) if sel.any() else None}
    return out


def full_metrics(label: np.ndarray, pred: np.ndarray, pft: np.ndarray | None) -> dict[str, Any]:
    """:func:`regression_metrics` + binned RMSE + per-PFT metrics (when ``pft`` is given)."""
    m: dict[str, Any] = regression_metrics(label, pred)
    m["binned_rmse"] = binned_rmse(label, pred)
    if pft is not None:
        m["per_pft"] = {str(int(c)): regression_metrics(label[pft == c], pred[pft == c])
                        for c in np.unique(pft) if c != 255}
    return m


def fit_ridge(x: np.ndarray, y: np.ndarray, alpha: float = 1.0, max_samples: int = 500_000,
              seed: int = 0) -> np.ndarray:
    """Ridge weights (bands..., intercept) for ``x`` (n, bands) normalised, ``y`` (n,) Mg/ha.

    Solved as a float32 least-squares problem on the augmented matrix (intercept not penalised);
    at most ``max_samples`` pixels, drawn with a fixed seed.
    """
    if x.shape[0] > max_samples:
        pick = np.random.default_rng(seed).choice(x.shape[0], max_samples, replace=False)
        x, y = x[pick], y[pick]
    k = x.shape[1]
    a = np.concatenate([np.hstack([x, np.ones((x.shape[0], 1), np.float32)]),
                        np.hstack([np.sqrt(alpha) * np.eye(k, dtype=np.float32), np.zeros((k, 1), np.float32)])])
    b = np.concatenate([y, np.zeros(k, np.float32)])
    w, *_ = np.linalg.lstsq(a.astype(np.float32), b.astype(np.float32), rcond=None)
    return w.astype(np.float32)


def labelled_pixels(arrays: SplitArrays) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(bands (n, C), labels (n,), pft (n,) or None) of every labelled pixel of a split."""
    lab = np.asarray(arrays.labels)
    valid = lab >= 0
    x = np.moveaxis(np.asarray(arrays.images), 1, -1)[valid]
    pft = np.asarray(arrays.pft)[valid] if arrays.pft is not None else None
    return x.astype(np.float32), lab[valid].astype(np.float32), pft


def predict_chips(net: BiomassModel, arrays: SplitArrays, device: torch.device, batch_size: int = 8
                  ) -> np.ndarray:
    """Model output (N, H, W) Mg/ha for every chip of ``arrays`` (whole chips, eval mode)."""
    net.eval().to(device)
    outs = []
    with torch.no_grad(), _autocast(device):
        for i in range(0, len(arrays), batch_size):
            x = torch.from_numpy(np.array(arrays.images[i:i + batch_size], np.float32)).to(device)
            outs.append(net(_to_layout(x, device)).float().cpu().numpy())
    return np.concatenate(outs)


def _plots(label: np.ndarray, preds: dict[str, np.ndarray], out_dir: Path, split: str) -> dict[str, str]:
    """Scatter (predicted vs GEDI, hexbin when many pixels) and residual histogram, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = {"scatter": out_dir / f"scatter_{split}.png", "residuals": out_dir / f"residuals_{split}.png"}
    hi = float(max(np.percentile(label, 99.5) if label.size else 1.0, 1.0))
    fig, ax = plt.subplots(figsize=(5, 5))
    pred = preds["model"]
    if label.size > 5000:
        ax.hexbin(label, pred, gridsize=60, extent=(0, hi, 0, hi), mincnt=1, bins="log", cmap="viridis")
    else:
        ax.scatter(label, pred, s=4, alpha=0.5)
    ax.plot([0, hi], [0, hi], "k--", lw=1)
    ax.set(xlim=(0, hi), ylim=(0, hi), xlabel="GEDI L4A AGBD (Mg/ha)", ylabel="predicted AGB (Mg/ha)",
           title=f"{split}: {label.size} labelled pixels")
    _save_fig(fig, paths["scatter"])
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, p in preds.items():
        ax.hist(p - label, bins=80, histtype="step", label=name, density=True)
    ax.set(xlabel="prediction - GEDI (Mg/ha)", ylabel="density", title=f"residuals ({split})")
    ax.legend()
    _save_fig(fig, paths["residuals"])
    return {k: str(v) for k, v in paths.items()}


def _save_fig(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    tmp = temp_sibling(path, ext=".png")
    fig.tight_layout()
    fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    replace_into(tmp, path)


@dataclass(frozen=True)
class EvalResult(Contract):
    """Metrics of a checkpoint on one split against the baselines, written to ``metrics_path``.

    ``metrics``: ``{"model", "baseline_mean", "baseline_ridge"}`` -> ``{"n", "rmse", "mae", "bias", "r2",
    "binned_rmse", ...}`` in Mg/ha over the split's labelled pixels. ``norm``: the per-band mean/std the
    inputs were normalised with and their source (:mod:`training.norm`). ``per_season``: the metrics per
    season of a multi-season export (``{season: {"n_chips", "n_pixels", "model", "baseline_mean", ...}}``;
    empty for one season).
    """

    metrics_path: str
    checkpoint: str
    model: str
    export: str
    split: str
    n_chips: int
    n_pixels: int
    bands: list[str]
    train_label_mean: float | None
    metrics: dict[str, Any]
    model_beats: dict[str, bool]
    plots: dict[str, str]
    load_report: dict[str, Any]
    zero_shot: bool
    notes: list[str]
    norm: Norm | None = None
    per_season: dict[str, Any] = field(default_factory=dict)
    calibration: str | None = None
    interval: dict[str, Any] | None = None


def evaluate_model(*, checkpoint: str, model: str | None = None, export: str, split: str = "test",
                   output_dir: str, device: str = "auto", batch_size: int = 8, allow_partial: bool = False,
                   ridge_alpha: float = 1.0, cpu_threads: int | None = None, norm_mean: list[float] | None = None,
                   norm_std: list[float] | None = None,
                   intervals: IntervalOptions | None = DEFAULT_INTERVALS) -> EvalResult:
    """Evaluate ``checkpoint`` (project, or Lightning/TerraTorch with ``model`` preset) on ``split``.

    Normalisation: the rule of :mod:`training.norm`, as mapping applies it (a project checkpoint's own
    statistics; for a foreign one ``norm_mean``/``norm_std`` when given, else granite's published ones);
    recorded in ``metrics.json``. ``intervals``: calibrate prediction intervals on ``intervals.split`` and
    report their coverage on ``split`` (None: no intervals). Torch threads and RNG states are scoped to the call.
    """
    dev = resolve_device(device)
    with torch_run_scope(cpu_threads if dev.type == "cpu" else None):
        net, ck, report = load_model(checkpoint, model=model, allow_partial=allow_partial)
        bands = list(ck.get("bands") or DEFAULT_BANDS[: net.config.in_channels])
        norm = model_norm(ck, bands, norm_mean, norm_std, where=f"checkpoint {checkpoint}")
        return _evaluate(checkpoint, (net, ck, report), bands, norm, export, split, output_dir, dev, batch_size,
                         ridge_alpha, intervals)


def _evaluate(checkpoint: str, loaded: tuple[BiomassModel, dict[str, Any], Any], bands: list[str], norm: Norm,
              export: str, split: str, output_dir: str, dev: torch.device, batch_size: int,
              ridge_alpha: float, intervals: IntervalOptions | None = None) -> EvalResult:
    net, ck, report = loaded
    info = read_export(export)
    mean, std = norm.mean, norm.std
    cache = Path(output_dir) / "cache"
    data = load_split(info, split, bands, mean=mean, std=std, cache_dir=cache)
    pred_full = predict_chips(net, data, dev, batch_size)
    valid = np.asarray(data.labels) >= 0
    x, y, pft = labelled_pixels(data)
    p_model = pred_full[valid]
    preds = {"model": p_model}
    notes = []
    try:
        train = load_split(info, "train", bands, mean=mean, std=std, cache_dir=cache)
        tx, ty, _ = labelled_pixels(train)
        train_mean = label_mean(train)
    except ExportError as exc:
        tx = ty = None
        train_mean = ck.get("label_mean")
        notes.append(f"no train split for the ridge baseline: {exc}")
    if train_mean is not None:
        preds["baseline_mean"] = np.full_like(y, float(train_mean))
    if tx is not None and ty is not None and ty.size:
        w = fit_ridge(tx, ty, alpha=ridge_alpha)
        preds["baseline_ridge"] = x @ w[:-1] + w[-1]
    metrics = {name: full_metrics(y, p, pft) for name, p in preds.items()}
    per_season = per_season_metrics(chip_seasons(info.root, data.names), valid, y, preds, pft, full_metrics)
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = _plots(y, preds, out_dir, split) if y.size else {}
    if not y.size:
        notes.append(f"split {split!r} has no labelled pixel: metrics are empty")
    beats = {b: (metrics["model"]["rmse"] is not None and metrics[b]["rmse"] is not None
                 and metrics["model"]["rmse"] < metrics[b]["rmse"]) for b in preds if b != "model"}
    cal_path, interval = None, None
    if intervals is not None:
        cal = _calibrate(net, info, intervals, bands, (mean, std), cache, dev, batch_size, (checkpoint, export), notes)
        if cal is not None:
            cal_path = str(cal.write(out_dir / "calibration.json"))
            interval = coverage(cal, p_model, y, split=split)
    path = out_dir / ("metrics.json" if split == "test" else f"metrics_{split}.json")
    result = EvalResult(
        metrics_path=str(path), checkpoint=str(checkpoint), model=net.config.preset, export=str(export), split=split,
        n_chips=len(data), n_pixels=int(y.size), bands=bands, train_label_mean=train_mean, metrics=metrics,
        model_beats=beats, plots=plots, load_report=report.to_dict(), zero_shot=bool(ck.get("foreign")), notes=notes,
        norm=norm, per_season=per_season, calibration=cal_path, interval=interval)
    write_json_atomic(path, result.to_dict())
    return result


def _calibrate(net: BiomassModel, info: Any, options: IntervalOptions, bands: list[str],
               norm: tuple[list[float] | None, list[float] | None], cache: Path, dev: torch.device, batch_size: int,
               sources: tuple[str, str], notes: list[str]) -> Calibration | None:
    """Interval calibration on ``options.split`` (clusters = chips); None with a note when that is impossible."""
    try:
        data = load_split(info, options.split, bands, mean=norm[0], std=norm[1], cache_dir=cache)
        valid = np.asarray(data.labels) >= 0
        pred = predict_chips(net, data, dev, batch_size)[valid]
        chip = np.nonzero(valid)[0]
        return calibrate(pred, np.asarray(data.labels)[valid], chip, options=options, checkpoint=str(sources[0]),
                         export=str(sources[1]))
    except (ExportError, CalibrationError) as exc:
        notes.append(f"no prediction intervals: {exc}")
        return None
