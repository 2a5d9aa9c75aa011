"""One normalisation rule for training, fine-tuning, evaluation and mapping.

Model inputs are HLS surface reflectance x 10000 with image nodata set to 0, then ``(x - mean) / std`` per
band. Which ``mean``/``std`` (raw units, one per model band):

1. a project checkpoint: the statistics it carries (those it was trained with; giving others is an error);
2. a foreign checkpoint (granite-geospatial-biomass, TerraTorch, Lightning): the user's ``norm_mean`` /
   ``norm_std`` when given, else granite's published training statistics (its ``config.yaml``: bands
   B02..B07 = BLUE, GREEN, RED, NIR_NARROW, SWIR_1, SWIR_2);
3. training from scratch: the user's when given, else the export's training-split statistics.

Fine-tuning a foreign checkpoint therefore trains with (and saves in its checkpoint) the statistics the
foreign weights expect, and evaluating or mapping that checkpoint uses the same ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.bands import MODEL_BANDS
from core.contracts import Contract

# granite-geospatial-biomass training statistics of its six output bands (config.yaml ``means``/``stds``),
# in the order of GRANITE_BANDS; ../shared/reference/granite_config.yaml (checked by tests/test_norm.py).
GRANITE_BANDS = tuple(MODEL_BANDS)
GRANITE_MEAN = (547.36707, 898.5121, 1020.9082, 2665.5352, 2340.584, 1610.1407)
GRANITE_STD = (411.4701, 558.54065, 815.94025, 812.4403, 1113.7145, 1067.641)
SOURCES = ("checkpoint", "granite", "user", "export")


class NormError(ValueError):
    """Normalisation statistics that are missing, malformed or contradict a checkpoint's own."""


@dataclass(frozen=True)
class Norm(Contract):
    """Per-band ``mean``/``std`` (raw HLS units x 10000) and where they come from (one of ``SOURCES``)."""

    mean: list[float]
    std: list[float]
    source: str


def user_norm(mean: Sequence[float] | None, std: Sequence[float] | None, bands: Sequence[str]) -> Norm | None:
    """The user's statistics (both or neither; one finite value per band, positive stds), or None."""
    if mean is None and std is None:
        return None
    if mean is None or std is None:
        raise NormError("give both norm_mean and norm_std (one value per band), or neither")
    m, s = [float(v) for v in mean], [float(v) for v in std]
    if len(m) != len(bands) or len(s) != len(bands):
        raise NormError(f"norm_mean/norm_std need one value per band {list(bands)}, got {len(m)}/{len(s)}")
    if not all(np.isfinite(m)) or not all(np.isfinite(v) and v > 0 for v in s):
        raise NormError(f"norm_mean must be finite and norm_std positive, got {m} / {s}")
    return Norm(m, s, "user")


def model_norm(ck: dict[str, Any], bands: Sequence[str], mean: Sequence[float] | None = None,
               std: Sequence[float] | None = None, where: str = "checkpoint") -> Norm:
    """Statistics for a loaded checkpoint (``ck`` as returned by :func:`training.checkpoint.load_model`)."""
    user = user_norm(mean, std, bands)
    if "norm" in ck:
        own = Norm([float(v) for v in ck["norm"]["mean"]], [float(v) for v in ck["norm"]["std"]], "checkpoint")
        if user is not None and not (np.allclose(user.mean, own.mean) and np.allclose(user.std, own.std)):
            raise NormError(f"{where} carries its own normalisation (mean {own.mean}, std {own.std}), the one its "
                            "weights were trained with; norm_mean/norm_std apply to foreign checkpoints and to "
                            "training from scratch")
        return own
    if user is not None:
        return user
    if tuple(bands) == GRANITE_BANDS:
        return Norm(list(GRANITE_MEAN), list(GRANITE_STD), "granite")
    raise NormError(f"{where} is a foreign checkpoint with bands {list(bands)}: granite's published statistics "
                    f"cover {list(GRANITE_BANDS)} only; give norm_mean/norm_std")


def scratch_norm(export_mean: Sequence[float], export_std: Sequence[float], bands: Sequence[str],
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> Norm:
    """Statistics for training from scratch: the user's, else the export's training split."""
    user = user_norm(mean, std, bands)
    if user is not None:
        return user
    return Norm([float(v) for v in export_mean], [float(v) for v in export_std], "export")
