"""Tiled inference over a whole composite: ``predict_map`` is the engine behind the ``predict-map`` flow.

Crops of 224 px every 192 px (granite's tiled inference), the last row/column of crops flush with the
raster edge, overlapping predictions averaged. Output: a float32 COG of above-ground biomass (Mg/ha) on
the composite's exact grid (CRS, transform, size), nodata -9999 wherever any input band is nodata
(-9999 / the composite's nodata tag / NaN). Written to ``<output_dir>/<TILE>_agb.tif``; without
``output_dir``, ``<out>/maps/<TILE>_agb.tif`` when the composite is ``<out>/composites/<TILE>/<SEASON>.tif``,
else beside the composite. A re-run with the same checkpoint, composite and
parameters finds the map's tags matching and skips the work.

With ``calibration`` (a ``calibration.json`` written by the evaluation, :mod:`training.uncertainty`), the COG
gets two more bands beside ``agb``: ``agb_lower`` and ``agb_upper``, the per-pixel prediction interval at the
calibration's level (Mg/ha, same nodata). It covers a GEDI L4A-like label of the pixel, not its true AGB.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
import torch

from core.bands import find_bands
from core.constants import AGB_UNITS, IMAGE_NODATA
from core.contracts import Contract
from core.files import UnsafePathError, atomic_path, contained, safe_component
from core.grid import GridError, normalise_tile
from training.checkpoint import load_model
from training.config import torch_run_scope
from training.model import DEFAULT_BANDS, BiomassModel
from training.norm import Norm, model_norm
from training.train import _autocast, _to_layout, resolve_device
from training.uncertainty import Calibration

log = logging.getLogger(__name__)
MAP_NODATA = IMAGE_NODATA
DEFAULT_CROP = 224  # px, granite's tiled inference: 224 crops every 192 px
DEFAULT_STRIDE = 192


class MappingError(ValueError):
    """A composite or checkpoint that cannot be mapped."""


def tile_starts(size: int, crop: int, stride: int) -> list[int]:
    """Crop offsets along one axis covering ``size`` px (last crop flush with the edge; [0] if size <= crop)."""
    if size <= crop:
        return [0]
    starts = list(range(0, size - crop + 1, stride))
    if starts[-1] != size - crop:
        starts.append(size - crop)
    return starts


def tiled_predict(net: BiomassModel, image: np.ndarray, *, crop: int = DEFAULT_CROP, stride: int = DEFAULT_STRIDE,
                  batch_size: int = 8, device: torch.device | None = None) -> np.ndarray:
    """Average of overlapping crop predictions over ``image`` (C, H, W) normalised -> (H, W) Mg/ha.

    Images smaller than ``crop`` are padded with 0 (the normalised mean) bottom/right and cropped back.
    """
    if stride < 1 or stride > crop:
        raise MappingError(f"stride must be in 1..crop ({crop}), got {stride}")
    device = device or torch.device("cpu")
    c, h, w = image.shape
    ph, pw = max(h, crop), max(w, crop)
    if (ph, pw) != (h, w):
        padded = np.zeros((c, ph, pw), np.float32)
        padded[:, :h, :w] = image
        image = padded
    acc = np.zeros((ph, pw), np.float32)
    cnt = np.zeros((ph, pw), np.float32)
    offsets = [(y, x) for y in tile_starts(ph, crop, stride) for x in tile_starts(pw, crop, stride)]
    net.eval().to(device)
    with torch.no_grad(), _autocast(device):
        for i in range(0, len(offsets), batch_size):
            part = offsets[i:i + batch_size]
            batch = np.stack([image[:, y:y + crop, x:x + crop] for y, x in part])
            pred = net(_to_layout(torch.from_numpy(batch).to(device), device)).float().cpu().numpy()
            for (y, x), p in zip(part, pred, strict=True):
                acc[y:y + crop, x:x + crop] += p
                cnt[y:y + crop, x:x + crop] += 1.0
    return (acc / np.maximum(cnt, 1.0))[:h, :w]


def _select_bands(src: Any, bands: list[str], path: Path) -> tuple[list[int], str]:
    """Positions of the model's bands in the composite, by band description (never by position)."""
    idx, missing = find_bands(src.descriptions, bands)
    if missing:
        raise MappingError(
            f"{path}: the model needs bands {bands}, found by band description; the composite's bands are "
            f"{list(src.descriptions)} (missing {missing}). Composites of this project describe their bands "
            f"B02..B07 (+ count); set the band descriptions of another raster to the model's band ids")
    return idx, "by description"


def _tile_of(path: Path, tags: dict[str, str]) -> str:
    """The map's name: the MGRS_TILE tag or the ``composites/<TILE>/`` folder (both must be a tile id),
    else the composite's file stem (a plain file name); :class:`MappingError` otherwise."""
    try:
        if tags.get("MGRS_TILE"):
            return normalise_tile(tags["MGRS_TILE"])
        if path.parent.parent.name == "composites":
            return normalise_tile(path.parent.name)
        return safe_component(path.stem, "composite file name")
    except (GridError, UnsafePathError) as exc:
        raise MappingError(f"composite {path}: {exc}; refused (the tile names the map file)") from None


def _default_output(path: Path) -> Path:
    if path.parent.parent.name == "composites":
        return path.parent.parent.parent / "maps"
    return path.parent


def _write_cog(dst: Path, data: np.ndarray, profile: dict[str, Any], tags: dict[str, str],
               names: tuple[str, ...] = ("agb",)) -> None:
    """Float32 COG of ``data`` (bands, H, W) Mg/ha, band descriptions ``names``, unit type Mg/ha."""
    data = data if data.ndim == 3 else data[None]
    with atomic_path(dst) as tmp:
        gtiff = tmp.with_name(tmp.name + ".gtiff")
        try:
            with rasterio.open(gtiff, "w", driver="GTiff", count=data.shape[0], dtype="float32", nodata=MAP_NODATA,
                               width=profile["width"], height=profile["height"], crs=profile["crs"],
                               transform=profile["transform"], tiled=True, blockxsize=256,
                               blockysize=256) as out:
                out.write(data)
                out.update_tags(**tags)
                for i, name in enumerate(names, start=1):
                    out.set_band_description(i, name)
                    out.set_band_unit(i, AGB_UNITS)  # GDAL band unit type
                    out.update_tags(i, UNITS=AGB_UNITS)
            rasterio.shutil.copy(str(gtiff), str(tmp), driver="COG", COMPRESS="DEFLATE", PREDICTOR="YES",
                                 BLOCKSIZE=256, OVERVIEW_RESAMPLING="AVERAGE")
        finally:
            gtiff.unlink(missing_ok=True)


def _inputs_key(checkpoint: Path, composite: Path, crop: int, stride: int, user_norm: Any = None,
                calibration: Path | None = None) -> str:
    def stamp(p: Path) -> list[Any]:
        st = p.stat()
        return [str(p.resolve()), st.st_size, st.st_mtime_ns]

    key: dict[str, Any] = {"checkpoint": stamp(checkpoint), "composite": stamp(composite), "crop": crop,
                           "stride": stride, "norm": user_norm}
    if calibration is not None:
        key["calibration"] = stamp(calibration)
    return json.dumps(key, sort_keys=True)


@dataclass(frozen=True)
class MapResult(Contract):
    """A biomass map COG (Mg/ha, nodata -9999) on the composite's grid; the timing fields are None when an
    up-to-date map was found and skipped."""

    map: str
    tile: str
    skipped: bool
    width: int
    height: int
    megapixels: float | None = None
    seconds: float | None = None
    mpx_per_s: float | None = None
    valid_fraction: float | None = None
    band_match: str | None = None
    model: str | None = None
    device: str | None = None
    load_report: dict[str, Any] | None = None
    norm: Norm | None = None
    bands: list[str] | None = None
    calibration: str | None = None


def predict_map(*, checkpoint: str, composite: str, output_dir: str | None = None, model: str | None = None,
                device: str = "auto", batch_size: int = 8, crop: int | None = None, stride: int | None = None,
                allow_partial: bool = False, cpu_threads: int | None = None,
                norm_mean: list[float] | None = None, norm_std: list[float] | None = None,
                calibration: str | None = None) -> MapResult:
    """Biomass map (Mg/ha COG) of ``composite`` with ``checkpoint``.

    Bands: the checkpoint's (a foreign checkpoint needs ``model`` and takes B02..B07). Normalisation: the
    rule of :mod:`training.norm` (a project checkpoint's own statistics; for a foreign one ``norm_mean`` /
    ``norm_std`` when given, else granite's published ones). ``calibration``: a calibration.json
    (:mod:`training.uncertainty`); adds the ``agb_lower``/``agb_upper`` interval bands (Mg/ha, nodata as
    ``agb``). Torch threads and RNG states are scoped to the call. ``crop`` (px): unset, the chip size the
    checkpoint was trained and evaluated on (224 for a foreign checkpoint), so the map predicts what the
    evaluation measured; ``stride``: unset, 6/7 of the crop (granite's 192 for 224).
    """
    comp = Path(composite)
    if not comp.is_file():
        raise MappingError(f"composite {comp} does not exist")
    if not Path(checkpoint).is_file():
        raise MappingError(f"checkpoint {checkpoint} does not exist")
    cal_path = Path(calibration) if calibration else None
    cal = Calibration.read(cal_path) if cal_path is not None else None
    dev = resolve_device(device)
    user = None if norm_mean is None and norm_std is None else {"mean": norm_mean, "std": norm_std}
    with torch_run_scope(cpu_threads if dev.type == "cpu" else None):
        return _predict(Path(checkpoint), comp, output_dir, model, dev, batch_size, crop, stride, allow_partial, user,
                        (cal_path, cal))


def _predict(ckpt_path: Path, comp: Path, output_dir: str | None, model: str | None, dev: torch.device,
             batch_size: int, crop: int | None, stride: int | None, allow_partial: bool, user: dict[str, Any] | None,
             calibration: tuple[Path | None, Calibration | None] = (None, None)) -> MapResult:
    cal_path, cal = calibration
    with rasterio.open(comp) as src:
        tags = src.tags()
        tile = _tile_of(comp, tags)
        out_root = Path(output_dir) if output_dir else _default_output(comp)
        try:
            dst = contained(out_root, f"{tile}_agb.tif", what="map path")
        except UnsafePathError as exc:
            raise MappingError(f"composite {comp}: {exc}") from None
        key = _inputs_key(ckpt_path, comp, crop, stride, user, cal_path)
        if dst.is_file():
            with rasterio.open(dst) as old:
                if old.tags().get("INPUTS_KEY") == key:
                    log.info("map %s is up to date; skipping", dst)
                    return MapResult(map=str(dst), tile=tile, skipped=True, width=old.width, height=old.height,
                                     bands=[d or "" for d in old.descriptions],
                                     calibration=str(cal_path) if cal_path else None)
        net, ck, report = load_model(ckpt_path, model=model, allow_partial=allow_partial)
        bands = list(ck.get("bands") or DEFAULT_BANDS[: net.config.in_channels])
        crop, stride = map_crop(ck, crop, stride)
        norm = model_norm(ck, bands, (user or {}).get("mean"), (user or {}).get("std"), where=f"checkpoint {ckpt_path}")
        idx, match = _select_bands(src, bands, comp)
        raw = src.read(idx).astype(np.float32, copy=False)
        nodata = src.nodata
        profile = {"width": src.width, "height": src.height, "crs": src.crs, "transform": src.transform}
    invalid = ~np.isfinite(raw) | (raw == MAP_NODATA)
    if nodata is not None:
        invalid |= raw == nodata
    invalid = invalid.any(axis=0)
    if invalid.all():
        raise MappingError(f"composite {comp}: no pixel has a value in every band the model needs ({bands}); "
                           "the map would be all nodata, so none was written")
    raw[:, invalid] = 0.0  # granite: nodata -> 0 before normalising
    image = (raw - np.asarray(norm.mean, np.float32)[:, None, None]) / np.asarray(norm.std, np.float32)[:, None, None]
    t0 = time.perf_counter()
    agb = tiled_predict(net, image, crop=crop, stride=stride, batch_size=batch_size, device=dev)
    seconds = time.perf_counter() - t0
    out_tags = {"QUANTITY": "aboveground biomass density", "UNITS": "Mg/ha", "MODEL": net.config.preset,
                "CHECKPOINT": str(ckpt_path), "COMPOSITE": str(comp), "MGRS_TILE": tile,
                "SEASON": tags.get("SEASON", ""), "CROP": str(crop), "STRIDE": str(stride), "INPUTS_KEY": key,
                "NORM": json.dumps(norm.to_dict())}
    stack, names = _with_intervals(agb, invalid, cal, cal_path, out_tags)
    _write_cog(dst, stack, profile, out_tags, names)
    mpx = profile["width"] * profile["height"] / 1e6
    return MapResult(map=str(dst), tile=tile, skipped=False, width=profile["width"], height=profile["height"],
                     megapixels=mpx, seconds=seconds, mpx_per_s=mpx / max(seconds, 1e-9),
                     valid_fraction=float(1.0 - invalid.mean()), band_match=match, model=net.config.preset,
                     device=str(dev), load_report=report.to_dict(), norm=norm, bands=list(names),
                     calibration=str(cal_path) if cal_path else None)


def map_crop(ck: dict[str, Any], crop: int | None, stride: int | None) -> tuple[int, int]:
    """(crop, stride) px of tiled inference: the given ones, else the checkpoint's training chip size (224 when
    it has none: a foreign or older checkpoint) and 6/7 of it."""
    run = (ck.get("meta") or {}).get("run_config") or {}
    crop = crop or int(run.get("chip_size") or DEFAULT_CROP)
    return crop, stride or max(1, round(crop * DEFAULT_STRIDE / DEFAULT_CROP))


def _with_intervals(agb: np.ndarray, invalid: np.ndarray, cal: Calibration | None, cal_path: Path | None,
                    tags: dict[str, str]) -> tuple[np.ndarray, tuple[str, ...]]:
    """(bands, names): ``agb`` alone, or with the interval bands of ``cal``; nodata where ``invalid``."""
    if cal is None:
        agb[invalid] = MAP_NODATA
        return agb[None], ("agb",)
    lower, upper = cal.interval(agb)
    stack = np.stack([agb, lower, upper])
    stack[:, invalid] = MAP_NODATA
    tags.update(INTERVAL_LEVEL=f"{cal.level:g}", INTERVAL_METHOD=cal.method, INTERVAL_COVERS=cal.covers,
                CALIBRATION=str(cal_path))
    return stack, ("agb", "agb_lower", "agb_upper")
