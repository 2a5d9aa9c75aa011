"""Per-pixel prediction intervals: split-conformal, calibrated on the validation split, Mondrian by
predicted-value bins.

What an interval covers: at a level of 0.9, ``[lower, upper]`` holds **a GEDI L4A-like AGBD label** of that
pixel (a footprint estimate, with its own error) with probability >= 0.9, given that the calibration pixels
and the pixel are exchangeable within its bin of predicted biomass. It is NOT an interval for the true AGB of
the pixel: GEDI's own model error (L4A's ``agbd_se``) is inside the residuals, and any bias GEDI L4A itself has
against the truth is invisible to them.

Method (Mondrian split-conformal, two one-sided tails): residuals ``r = label - prediction`` (Mg/ha) of the
calibration split's labelled pixels are grouped by bins of the *prediction* (quantile edges of the calibration
predictions, bins with fewer than ``min_bin_pixels`` merged into a neighbour). In a bin of ``n`` residuals
sorted ascending, the lower offset is the ``floor((n + 1) * alpha / 2)``-th and the upper offset the
``ceil((n + 1) * (1 - alpha / 2))``-th (1-based), ``alpha = 1 - level``; the interval of a pixel predicted
``p`` in that bin is ``[max(0, p + lower), p + upper]``. The end bins extend to -inf / +inf. Per bin the
residual mean, SD and a cluster-robust standard error of the mean (clusters = chips) are kept for area totals
(:mod:`training.totals`).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.contracts import Contract
from core.files import write_json_atomic

COVERS = ("a GEDI L4A-like AGBD label (Mg/ha) of the pixel, not its true AGB: GEDI's own estimation error is "
          "part of the residuals and a bias of GEDI L4A against the truth is not seen by them")
_EPS = 1e-9
METHOD = "split-conformal, Mondrian bins of the predicted value, two one-sided conformal quantiles"


class CalibrationError(ValueError):
    """A calibration that cannot be built or read."""


@dataclass(frozen=True)
class IntervalOptions(Contract):
    """Prediction-interval options. ``level``: nominal coverage (0-1); ``n_bins``: bins of the predicted value
    (quantile edges); ``min_bin_pixels``: calibration pixels a bin needs (smaller bins merge); ``split``: the
    calibration split (never the split the coverage is reported on)."""

    level: float = 0.9
    n_bins: int = 4
    min_bin_pixels: int = 200
    split: str = "val"

    def __post_init__(self) -> None:
        if not 0.5 <= self.level < 1.0:
            raise CalibrationError(f"interval level must be in [0.5, 1), got {self.level}")
        if self.n_bins < 1:
            raise CalibrationError(f"n_bins must be >= 1, got {self.n_bins}")
        need = math.ceil(2.0 / (1.0 - self.level) - _EPS) - 1
        if self.min_bin_pixels < need:
            raise CalibrationError(f"min_bin_pixels must be >= {need} for level {self.level} (else the conformal "
                                   f"quantile of a bin is infinite), got {self.min_bin_pixels}")


DEFAULT_INTERVALS = IntervalOptions()


@dataclass(frozen=True)
class BinCalibration(Contract):
    """One bin of predicted AGB ``[lo, hi)`` Mg/ha (``None``: unbounded) and its residual statistics (Mg/ha)."""

    lo: float | None
    hi: float | None
    n: int
    n_clusters: int
    lower_offset: float
    upper_offset: float
    residual_mean: float
    residual_sd: float
    mean_se: float


@dataclass(frozen=True)
class Calibration(Contract):
    """A fitted interval model; ``bins`` are ordered by ``lo``. Written as ``calibration.json``."""

    level: float
    split: str
    n_pixels: int
    n_clusters: int
    bins: list[BinCalibration]
    method: str = METHOD
    covers: str = COVERS
    checkpoint: str = ""
    export: str = ""

    @property
    def edges(self) -> np.ndarray:
        """Inner bin edges (ascending), len(bins) - 1 values."""
        return np.asarray([b.lo for b in self.bins[1:]], np.float64)

    def bin_index(self, pred: np.ndarray) -> np.ndarray:
        """Bin of each prediction (int array of ``pred``'s shape)."""
        return np.searchsorted(self.edges, np.asarray(pred, np.float64), side="right")

    def interval(self, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) float32 Mg/ha for predictions ``pred``; lower is clipped at 0 (AGB is never negative)."""
        idx = self.bin_index(pred)
        lo = np.asarray([b.lower_offset for b in self.bins], np.float32)[idx]
        hi = np.asarray([b.upper_offset for b in self.bins], np.float32)[idx]
        p = np.asarray(pred, np.float32)
        return np.maximum(p + lo, 0.0).astype(np.float32), (p + hi).astype(np.float32)

    def write(self, path: str | Path) -> Path:
        return write_json_atomic(path, self.to_dict())

    @classmethod
    def read(cls, path: str | Path) -> Calibration:
        p = Path(path)
        try:
            doc = json.loads(p.read_text())
            cal = cls.from_dict(doc)
        except (OSError, ValueError) as exc:
            raise CalibrationError(f"{p}: not a readable calibration file ({exc})") from exc
        if not cal.bins:
            raise CalibrationError(f"{p}: calibration has no bins")
        return cal

    def digest(self) -> str:
        """SHA-256 of the calibration's content (identifies it in totals and change)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()


def conformal_offsets(residuals: np.ndarray, level: float) -> tuple[float, float]:
    """(lower, upper) split-conformal offsets of sorted ranks floor((n+1)a/2) and ceil((n+1)(1-a/2))."""
    r = np.sort(np.asarray(residuals, np.float64))
    n = r.size
    alpha = 1.0 - level
    k_lo = math.floor((n + 1) * alpha / 2.0 + _EPS)  # _EPS: 1 - 0.9 is 0.0999..., not 0.1
    k_hi = math.ceil((n + 1) * (1.0 - alpha / 2.0) - _EPS)
    if k_lo < 1 or k_hi > n:
        raise CalibrationError(f"{n} calibration residuals are too few for a {level:.0%} interval")
    return float(r[k_lo - 1]), float(r[k_hi - 1])


def cluster_mean_se(residuals: np.ndarray, clusters: np.ndarray) -> tuple[float, int]:
    """Cluster-robust (CR1) standard error of the mean residual, and the number of clusters.

    ``se^2 = k / (k - 1) * sum_c (sum_{j in c} (r_j - mean))^2 / n^2`` over ``k`` clusters; with one cluster
    the SE falls back to ``sd`` (no information on between-cluster variation: the most cautious choice).
    """
    r = np.asarray(residuals, np.float64)
    n = r.size
    ids, inv = np.unique(np.asarray(clusters), return_inverse=True)
    k = ids.size
    if k < 2:
        return float(r.std(ddof=1)) if n > 1 else 0.0, int(k)
    sums = np.bincount(inv, weights=r - r.mean(), minlength=k)
    return float(math.sqrt(k / (k - 1) * float(np.sum(sums * sums)) / (n * n))), int(k)


def bin_edges(pred: np.ndarray, options: IntervalOptions) -> list[float]:
    """Inner edges: quantiles of ``pred``, deduplicated, then merged until each bin has ``min_bin_pixels``."""
    qs = np.quantile(np.asarray(pred, np.float64), np.linspace(0, 1, options.n_bins + 1)[1:-1])
    edges = sorted({float(q) for q in qs})
    while edges:
        counts = np.bincount(np.searchsorted(edges, pred, side="right"), minlength=len(edges) + 1)
        small = int(np.argmin(counts))
        if counts[small] >= options.min_bin_pixels:
            break
        # merge the smallest bin into its smaller neighbour: drop the edge between them
        if small == 0:
            drop = 0
        elif small == len(counts) - 1:
            drop = small - 1
        else:
            drop = small - 1 if counts[small - 1] <= counts[small + 1] else small
        edges.pop(drop)
    return edges


def calibrate(pred: np.ndarray, label: np.ndarray, clusters: np.ndarray, *,
              options: IntervalOptions | None = None, checkpoint: str = "", export: str = "") -> Calibration:
    """Fit a :class:`Calibration` from paired 1-D arrays of predictions and labels (Mg/ha) of the calibration
    split and the cluster (chip) of each pixel."""
    options = options or IntervalOptions()
    pred = np.asarray(pred, np.float64)
    resid = np.asarray(label, np.float64) - pred
    clusters = np.asarray(clusters)
    if pred.size < options.min_bin_pixels:
        raise CalibrationError(f"{pred.size} labelled calibration pixels on split {options.split!r}; at least "
                               f"min_bin_pixels={options.min_bin_pixels} are needed")
    edges = bin_edges(pred, options)
    idx = np.searchsorted(edges, pred, side="right")
    bounds = [None, *edges, None]
    bins = []
    for b in range(len(edges) + 1):
        sel = idx == b
        r = resid[sel]
        lo_off, hi_off = conformal_offsets(r, options.level)
        se, k = cluster_mean_se(r, clusters[sel])
        bins.append(BinCalibration(lo=bounds[b], hi=bounds[b + 1], n=int(r.size), n_clusters=k,
                                   lower_offset=lo_off, upper_offset=hi_off, residual_mean=float(r.mean()),
                                   residual_sd=float(r.std(ddof=1)), mean_se=se))
    return Calibration(level=options.level, split=options.split, n_pixels=int(pred.size),
                       n_clusters=int(np.unique(clusters).size), bins=bins, checkpoint=checkpoint, export=export)


def coverage(calibration: Calibration, pred: np.ndarray, label: np.ndarray, *, split: str) -> dict[str, Any]:
    """Empirical coverage of the intervals on labelled pixels (fraction of labels inside ``[lower, upper]``),
    overall and per bin, with the mean interval width (Mg/ha). ``in_sample`` when scored on the calibration split."""
    pred = np.asarray(pred, np.float32)
    label = np.asarray(label, np.float32)
    lower, upper = calibration.interval(pred)
    inside = (label >= lower) & (label <= upper)
    idx = calibration.bin_index(pred)
    per_bin = []
    for b, cal in enumerate(calibration.bins):
        sel = idx == b
        per_bin.append({"lo": cal.lo, "hi": cal.hi, "n": int(sel.sum()),
                        "coverage": float(inside[sel].mean()) if sel.any() else None})
    return {"level": calibration.level, "split": split, "in_sample": split == calibration.split,
            "n": int(label.size), "coverage": float(inside.mean()) if label.size else None,
            "mean_width": float(np.mean(upper - lower)) if label.size else None,
            "below": float(np.mean(label < lower)) if label.size else None,
            "above": float(np.mean(label > upper)) if label.size else None,
            "per_bin": per_bin, "calibration_split": calibration.split, "calibration_pixels": calibration.n_pixels,
            "method": calibration.method, "covers": calibration.covers}
