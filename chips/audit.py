"""Audit a written chips export for label leakage between splits, from the chip files alone.

Reads every label chip listed in ``split.json`` (TerraTorch or Esri layout), takes the centres of its
labelled pixels (finite, >= 0, not the nodata tag) from the file's georeferencing, moves them into one CRS
(the first UTM zone of the export) and measures, for every pair of splits, how many labelled positions
they share and how close their labelled pixels come. ``python -m chips.audit EXPORT [--buffer-m M]`` prints
the report as JSON and exits 1 when it finds leakage.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio

from chips.esri import LABEL_DIR
from chips.esri_layout import ESRI_DIR
from chips.lattice import SPLITS
from core.contracts import Contract


@dataclass(frozen=True)
class LeakageReport(Contract):
    """Per pair of splits (``"train/val"``, ...): labelled positions both hold (``shared``), labelled pixels
    of the first closer than ``buffer_m`` to one of the second (``closer_than_buffer``) and the smallest
    centre distance in metres (``min_distance_m``, None when a split is empty). ``ok``: no shared position
    and nothing closer than the buffer."""

    export: str
    crs: str
    buffer_m: float
    labelled_points: dict[str, int]
    shared: dict[str, int]
    closer_than_buffer: dict[str, int]
    min_distance_m: dict[str, float | None]
    ok: bool


def _label_file(root: Path, row: dict[str, Any]) -> Path:
    if row.get("terratorch_stem") and (root / "terratorch").is_dir():
        return root / "terratorch" / f"{row['split']}_labels" / f"{row['terratorch_stem']}_tile_label.tif"
    return root / ESRI_DIR / LABEL_DIR / row["esri"]


def labelled_points(export: str | Path, crs: str | None = None) -> tuple[dict[str, np.ndarray], str]:
    """Distinct labelled pixel centres (n, 2) per split in ``crs`` (default: the export's first zone)."""
    from pyproj import Transformer

    root = Path(export)
    rows = json.loads((root / "split.json").read_text())["chips"]
    if crs is None:
        crs = f"EPSG:{min(int(r['epsg']) for r in rows)}" if rows else "EPSG:4326"
    parts: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for row in rows:
        with rasterio.open(_label_file(root, row)) as ds:
            a = ds.read(1)
            ok = np.isfinite(a) & (a >= 0)
            if ds.nodata is not None:
                ok &= a != ds.nodata
            r, c = np.nonzero(ok)
            t = ds.transform
            x, y = t.a * (c + 0.5) + t.b * (r + 0.5) + t.c, t.d * (c + 0.5) + t.e * (r + 0.5) + t.f
            if f"EPSG:{ds.crs.to_epsg()}" != crs and len(x):
                x, y = Transformer.from_crs(ds.crs, crs, always_xy=True).transform(x, y)
        parts[row["split"]].append(np.stack([x, y], axis=1))
    pts = {s: np.unique(np.concatenate(p), axis=0) if p else np.zeros((0, 2)) for s, p in parts.items()}
    return pts, crs


def audit_export(export: str | Path, buffer_m: float | None = None) -> LeakageReport:
    """Leakage between the splits of ``export`` (``buffer_m`` default: the export's own ``buffer_m``)."""
    import shapely

    root = Path(export)
    if buffer_m is None:
        buffer_m = float(json.loads((root / "split.json").read_text())["buffer_m"])
    pts, crs = labelled_points(root)
    shared, close, mind = {}, {}, {}
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1:]:
            key = f"{a}/{b}"
            if len(pts[a]) == 0 or len(pts[b]) == 0:
                shared[key], close[key], mind[key] = 0, 0, None
                continue
            tree = shapely.STRtree(shapely.points(pts[b]))
            _, d = tree.query_nearest(shapely.points(pts[a]), return_distance=True, all_matches=False)
            shared[key] = int((d < 1e-6).sum())
            close[key] = int((d < buffer_m).sum())
            mind[key] = float(d.min())
    return LeakageReport(str(root), crs, float(buffer_m), {s: len(v) for s, v in pts.items()}, shared, close, mind,
                         ok=not any(shared.values()) and not any(close.values()))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m chips.audit", description=__doc__)
    ap.add_argument("export")
    ap.add_argument("--buffer-m", type=float, default=None)
    a = ap.parse_args(argv)
    report = audit_export(a.export, a.buffer_m)
    print(json.dumps(report.to_dict()))
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
