"""Per-season evaluation of a multi-season export: which season each chip is from, metrics per season.

A chips export cut from several seasons records each chip's season in ``split.json`` (``chips[*].season``,
keyed by the chip's Esri file name and TerraTorch stem). Chips whose season is not recorded get ``None``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

STEM_SUFFIXES = ("_tile_img.tif", "_tile_label.tif", ".tif")


def chip_seasons(export_root: str | Path, names: Sequence[str]) -> list[str | None]:
    """The season label of each chip file name (Esri ``NNNNNNNNN.tif`` or ``<stem>_tile_img.tif``)."""
    path = Path(export_root) / "split.json"
    if not path.is_file():
        return [None] * len(names)
    rows = json.loads(path.read_text()).get("chips") or []
    by_name: dict[str, str] = {}
    for r in rows:
        for key in (r.get("esri"), r.get("terratorch_stem")):
            if key and r.get("season"):
                by_name[_stem(str(key))] = str(r["season"])
    return [by_name.get(_stem(n)) for n in names]


def _stem(name: str) -> str:
    for suffix in STEM_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def per_season_metrics(seasons: Sequence[str | None], valid: np.ndarray, label: np.ndarray,
                       preds: dict[str, np.ndarray], pft: np.ndarray | None,
                       metrics: Callable[[np.ndarray, np.ndarray, np.ndarray | None], dict[str, Any]]
                       ) -> dict[str, dict[str, Any]]:
    """``{season: {"n_chips", "n_pixels", <pred name>: metrics}}`` over the labelled pixels of each season.

    ``valid`` (N, H, W) marks labelled pixels; ``label`` and each prediction hold the values of those
    pixels in ``valid``'s order (as ``labelled_pixels`` returns them). Empty when fewer than two seasons.
    """
    known = sorted({s for s in seasons if s is not None})
    if len(known) < 2:
        return {}
    chip_season = np.array([s if s is not None else "" for s in seasons], dtype=object)
    px = np.broadcast_to(chip_season[:, None, None], valid.shape)[valid]
    out: dict[str, dict[str, Any]] = {}
    for s in known:
        sel = px == s
        out[s] = {"n_chips": int(sum(1 for x in seasons if x == s)), "n_pixels": int(sel.sum()),
                  **{name: metrics(label[sel], p[sel], pft[sel] if pft is not None else None)
                     for name, p in preds.items()}}
    return out
