"""Composites in granite-geospatial-biomass's 10-band chip layout, for its ``inference_on_dir``.

granite's published config selects bands by position from 10-band files (L30 B01, B02..B07, B09, B10,
B11; its ``dataset_bands`` use positions 2-7 as BLUE..SWIR_2) and reads every file of a folder, then
concatenates the predictions (so the files must all have the same size). The project's composite is
``composites/<TILE>/<SEASON>.tif`` (B02..B07 + count) with a JSON sidecar beside it; this module writes a
copy at ``composites_granite/<TILE>/<SEASON>.tif``: float32 COG, nodata -9999, band descriptions B01, B02,
.., B11, the six composite means in bands 2-7 (pixel for pixel), B01, B09, B10, B11 nodata everywhere
(not composited), no count band and no sidecar. One folder per tile holds only that tile's seasons, all on
the tile's grid, so ``LightningInferenceModel.inference_on_dir(composites_granite/<TILE>)`` runs as is.

CLI (e.g. for composites made without the option): ``python -m compositing.granite --output-dir OUT
composites/10TEK/2021-06-01_2021-09-30.tif ...`` writes ``OUT/composites_granite/<TILE>/<SEASON>.tif``
(tile and season from the composite's ``MGRS_TILE``/``SEASON`` tags, else its folder and file name);
the last stdout line is the JSON list of files written.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.bands import GRANITE_BANDS, L30_BY_ID, MODEL_BANDS, find_bands
from core.constants import HLS_REFLECTANCE_SCALE, HLS_THERMAL_SCALE, IMAGE_NODATA
from core.files import atomic_path

GRANITE_DIR = "composites_granite"
ROWS = 512  # rows copied per window (bounded memory: 10 x 512 x width float32)


class GraniteLayoutError(ValueError):
    """A composite that cannot be written in granite's layout (names the file and its bands)."""


def granite_path(output_dir: str | os.PathLike[str], tile: str, season: Any) -> Path:
    """``<output_dir>/composites_granite/<TILE>/<SEASON>.tif`` (``season``: a Season or its label)."""
    label = getattr(season, "label", season)
    return Path(output_dir) / GRANITE_DIR / tile / f"{label}.tif"


def model_band_indexes(path: str | os.PathLike[str], descriptions: Sequence[str | None]) -> list[int]:
    """1-based positions of B02..B07 in a raster, found by band description (id or name, any case)."""
    idx, missing = find_bands(descriptions, MODEL_BANDS)
    if missing:
        raise GraniteLayoutError(f"{path}: no band described as {', '.join(missing)} (bands: "
                                 f"{list(descriptions)}); a composite names its bands {', '.join(MODEL_BANDS)}")
    return idx


def _tag(dst: Any, src: Any, src_idx: list[int], path: Path) -> None:
    dst.update_tags(**{**src.tags(), "LAYOUT": "granite-geospatial-biomass 10-band (B01,B02..B07,B09,B10,B11)",
                       "SOURCE_COMPOSITE": str(path)})
    scales = []
    for i, band in enumerate(GRANITE_BANDS, start=1):
        b = L30_BY_ID[band]
        dst.set_band_description(i, band)
        if band in MODEL_BANDS:
            dst.update_tags(i, **src.tags(src_idx[MODEL_BANDS.index(band)]))
        else:
            dst.update_tags(i, HLS_BAND=band, BAND_NAME=b.name, COMMON_NAME=b.common,
                            WAVELENGTH_UM=str(b.wavelength_um), STATISTIC="not composited: nodata everywhere")
        scales.append(HLS_THERMAL_SCALE if band in ("B10", "B11") else HLS_REFLECTANCE_SCALE)
    dst.scales = scales
    dst.offsets = [0.0] * len(GRANITE_BANDS)


def write_granite_composite(src_path: Path, dst: Path) -> Path:
    """Write ``src_path`` (a project composite) in granite's 10-band layout at ``dst`` (atomic)."""
    import rasterio
    from rasterio.windows import Window

    from .output import to_cog

    dst.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(src_path) as src, atomic_path(dst) as tmp:
        idx = model_band_indexes(src_path, src.descriptions)
        slots = [GRANITE_BANDS.index(b) for b in MODEL_BANDS]
        scratch = tmp.with_name(tmp.name + ".scratch.tif")
        try:
            with rasterio.open(scratch, "w", driver="GTiff", width=src.width, height=src.height,
                               count=len(GRANITE_BANDS), dtype="float32", crs=src.crs, transform=src.transform,
                               nodata=IMAGE_NODATA, tiled=True, blockxsize=256, blockysize=256,
                               BIGTIFF="IF_SAFER") as out:
                for r0 in range(0, src.height, ROWS):
                    win = Window(0, r0, src.width, min(ROWS, src.height - r0))
                    block = np.full((len(GRANITE_BANDS), win.height, win.width), IMAGE_NODATA, np.float32)
                    data = src.read(idx, window=win, out_dtype="float32")
                    if src.nodata is not None and src.nodata != IMAGE_NODATA:
                        data[data == src.nodata] = IMAGE_NODATA
                    data[~np.isfinite(data)] = IMAGE_NODATA
                    block[slots] = data
                    out.write(block, window=win)
                _tag(out, src, idx, src_path)
            to_cog(scratch, tmp)
        finally:
            scratch.unlink(missing_ok=True)
    return dst


def _tile_season(path: Path) -> tuple[str, str]:
    import rasterio

    with rasterio.open(path) as ds:
        tags = ds.tags()
    return tags.get("MGRS_TILE") or path.parent.name, tags.get("SEASON") or path.stem


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: write granite-layout copies of composites (see the module docstring)."""
    ap = argparse.ArgumentParser(prog="python -m compositing.granite", description=main.__doc__)
    ap.add_argument("composites", nargs="+", type=Path, help="composite COGs (composites/<TILE>/<SEASON>.tif)")
    ap.add_argument("--output-dir", required=True, type=Path, help="writes <output-dir>/composites_granite/...")
    a = ap.parse_args(argv)
    written = []
    for comp in a.composites:
        tile, season = _tile_season(comp)
        written.append(str(write_granite_composite(comp, granite_path(a.output_dir, tile, season))))
    print(json.dumps(written))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
