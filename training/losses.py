"""Losses over labelled pixels only (label >= 0; -1 = unlabelled), averaged over the valid pixels.

A batch with no labelled pixel returns a zero that still carries the graph (so ``backward`` works and
nothing becomes NaN) and ``n_valid == 0``, which the training loop uses to skip the optimiser step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

LOSSES = ("rmse", "mse", "mae", "huber")


def masked_loss(pred: Tensor, target: Tensor, kind: str = "rmse", *, huber_delta: float = 10.0
                ) -> tuple[Tensor, int]:
    """(loss, number of labelled pixels). ``pred``/``target`` in Mg/ha, same shape; ``huber_delta`` Mg/ha."""
    if kind not in LOSSES:
        raise ValueError(f"unknown loss {kind!r}; choose one of {LOSSES}")
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} != label shape {tuple(target.shape)}")
    valid = target >= 0
    n = int(valid.sum())
    if n == 0:
        return pred.sum() * 0.0, 0
    p, t = pred[valid].float(), target[valid].float()
    if kind == "rmse":
        loss = torch.sqrt(F.mse_loss(p, t) + 1e-8)
    elif kind == "mse":
        loss = F.mse_loss(p, t)
    elif kind == "mae":
        loss = F.l1_loss(p, t)
    else:
        loss = F.huber_loss(p, t, delta=huber_delta)
    return loss, n


def squared_error_sum(pred: Tensor, target: Tensor) -> tuple[float, int]:
    """(sum of squared errors, count) over labelled pixels, for pixel-weighted RMSE over many batches."""
    valid = target >= 0
    if not bool(valid.any()):
        return 0.0, 0
    d = pred[valid].float() - target[valid].float()
    return float((d * d).sum()), int(valid.sum())
