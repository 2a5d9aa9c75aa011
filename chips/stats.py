"""Per-band statistics over valid pixels, computed per chip and merged exactly (Chan et al.).

A stats row per band is ``[n, mean, m2, min, max]`` (float64 accumulators; ``m2`` = sum of squared
deviations from the mean). Pixels equal to ``nodata`` or not finite are excluded.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from chips.esri import BandStats


def chip_band_stats(arr: np.ndarray, nodata: float, has_nodata: bool | None = None) -> np.ndarray:
    """Stats rows (bands x 5) of a (bands, h, w) float32 chip, excluding ``nodata``/non-finite pixels.

    ``has_nodata=False`` says the caller knows no pixel of any band is ``nodata`` (skips that test)."""
    x = arr.reshape(arr.shape[0], -1)
    out = np.zeros((x.shape[0], 5), dtype=np.float64)
    if has_nodata is False or (has_nodata is None and not (x == nodata).any()):
        s = np.add.reduce(x, axis=1, dtype=np.float64)
        if np.isfinite(s).all():  # fast path: every pixel valid (float64 sums, no masks)
            n = float(x.shape[1])
            out[:, 0] = n
            out[:, 1] = s / n
            out[:, 2] = np.maximum(np.einsum("ij,ij->i", x, x, dtype=np.float64) - s * (s / n), 0.0)
            out[:, 3] = x.min(axis=1)
            out[:, 4] = x.max(axis=1)
            return out
    valid = (x != nodata) & np.isfinite(x)
    n = valid.sum(axis=1).astype(np.float64)
    s = np.where(valid, x, 0).sum(axis=1, dtype=np.float64)
    mean = np.divide(s, n, out=np.zeros_like(s), where=n > 0)
    d = np.where(valid, x - mean[:, None].astype(np.float32), 0)
    out[:, 0] = n
    out[:, 1] = mean
    out[:, 2] = np.einsum("ij,ij->i", d, d, dtype=np.float64)
    out[:, 3] = np.where(valid, x, np.inf).min(axis=1)
    out[:, 4] = np.where(valid, x, -np.inf).max(axis=1)
    out[n == 0, 3:] = 0.0
    return out


def values_stats(values: np.ndarray) -> np.ndarray:
    """Stats row (1 x 5) of a 1-D array of valid values (e.g. the labelled pixels of a chip)."""
    out = np.zeros((1, 5), dtype=np.float64)
    if values.size:
        v = values.astype(np.float64)
        mean = v.mean()
        out[0] = (v.size, mean, float(((v - mean) ** 2).sum()), v.min(), v.max())
    return out


def merge_stats(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Merge two stats tables (bands x 5) as if computed over the union of their pixels."""
    na, nb = a[:, 0], b[:, 0]
    n = na + nb
    out = np.empty_like(a)
    out[:, 0] = n
    safe = np.where(n > 0, n, 1.0)
    delta = b[:, 1] - a[:, 1]
    out[:, 1] = np.where(n > 0, a[:, 1] + delta * nb / safe, 0.0)
    out[:, 2] = a[:, 2] + b[:, 2] + delta * delta * na * nb / safe
    out[:, 3] = np.where(na == 0, b[:, 3], np.where(nb == 0, a[:, 3], np.minimum(a[:, 3], b[:, 3])))
    out[:, 4] = np.where(na == 0, b[:, 4], np.where(nb == 0, a[:, 4], np.maximum(a[:, 4], b[:, 4])))
    return out


def merge_many(tables: np.ndarray) -> np.ndarray:
    """Merge ``k`` stats tables (k, bands, 5) at once: the pooled n, mean, m2 (sum of the tables' m2 plus
    each table's n x squared distance of its mean to the pooled mean), min and max of the non-empty ones."""
    t = np.asarray(tables, dtype=np.float64)
    if t.ndim != 3 or t.shape[2] != 5:
        raise ValueError(f"need (k, bands, 5) stats tables, got shape {t.shape}")
    ni = t[:, :, 0]
    n = ni.sum(axis=0)
    safe = np.where(n > 0, n, 1.0)
    mean = np.where(n > 0, (ni * t[:, :, 1]).sum(axis=0) / safe, 0.0)
    m2 = t[:, :, 2].sum(axis=0) + (ni * (t[:, :, 1] - mean) ** 2).sum(axis=0)
    lo = np.where(ni > 0, t[:, :, 3], np.inf).min(axis=0, initial=np.inf)
    hi = np.where(ni > 0, t[:, :, 4], -np.inf).max(axis=0, initial=-np.inf)
    return np.stack([n, mean, m2, np.where(n > 0, lo, 0.0), np.where(n > 0, hi, 0.0)], axis=1)


class StatsAccumulator:
    """Running per-band stats of many chips."""

    def __init__(self, n_bands: int) -> None:
        self.table = np.zeros((n_bands, 5), dtype=np.float64)

    def add(self, stats: np.ndarray) -> None:
        self.table = merge_stats(self.table, stats)

    def add_many(self, tables: Sequence[np.ndarray]) -> None:
        """Add many stats tables (each bands x 5) at once (:func:`merge_many`)."""
        if len(tables):
            self.table = merge_stats(self.table, merge_many(np.stack(tables)))

    def band_stats(self, names: Sequence[str]) -> list[BandStats]:
        """One :class:`BandStats` per band (min/max 0 where a band had no valid pixel)."""
        out = []
        for name, (n, mean, m2, lo, hi) in zip(names, self.table, strict=True):
            ok = n > 0
            out.append(BandStats(name, int(n), float(lo) if ok else 0.0, float(hi) if ok else 0.0,
                                 float(mean), float(m2)))
        return out

    def summary(self, names: Sequence[str]) -> dict[str, list[float] | list[int] | list[str]]:
        """JSON-able ``{"bands", "count", "min", "max", "mean", "std"}`` (population std)."""
        bs = self.band_stats(names)
        return {"bands": list(names), "count": [b.num for b in bs], "min": [b.min for b in bs],
                "max": [b.max for b in bs], "mean": [b.mean for b in bs], "std": [b.std for b in bs]}
