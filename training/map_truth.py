"""Compare a biomass map with a truth raster on the same UTM lattice (the sample world's truth AGB)."""

from __future__ import annotations

from typing import Any

import numpy as np
import rasterio
from rasterio.windows import from_bounds


def compare_to_truth(map_path: str, truth_path: str) -> dict[str, Any]:
    """R², RMSE, bias (Mg/ha) and pixel count over pixels valid in both rasters (same CRS and 30 m lattice)."""
    with rasterio.open(map_path) as m, rasterio.open(truth_path) as t:
        if m.crs != t.crs or abs(m.res[0] - t.res[0]) > 1e-6:
            raise ValueError(f"{map_path} and {truth_path} are not on the same CRS/resolution")
        left, bottom, right, top = (max(m.bounds.left, t.bounds.left), max(m.bounds.bottom, t.bounds.bottom),
                                    min(m.bounds.right, t.bounds.right), min(m.bounds.top, t.bounds.top))
        if right <= left or top <= bottom:
            raise ValueError(f"{map_path} does not overlap {truth_path}")
        wm = from_bounds(left, bottom, right, top, m.transform).round_offsets().round_lengths()
        wt = from_bounds(left, bottom, right, top, t.transform).round_offsets().round_lengths()
        pred = m.read(1, window=wm).astype(np.float64)
        true = t.read(1, window=wt).astype(np.float64)
        ok = np.ones(pred.shape, bool)
        if m.nodata is not None:
            ok &= pred != m.nodata
        if t.nodata is not None:
            ok &= true != t.nodata
    p, y = pred[ok], true[ok]
    if p.size < 2:
        return {"r2": float("nan"), "rmse": float("nan"), "bias": float("nan"), "n": int(p.size)}
    resid = p - y
    ss_tot = float(((y - y.mean()) ** 2).sum())
    return {"r2": 1.0 - float((resid**2).sum()) / ss_tot if ss_tot > 0 else float("nan"),
            "rmse": float(np.sqrt((resid**2).mean())), "bias": float(resid.mean()),
            "pearson_r": float(np.corrcoef(p, y)[0, 1]), "n": int(p.size)}
