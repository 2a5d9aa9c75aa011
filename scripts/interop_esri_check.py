"""Load an Esri "Export Tiles" chip export with arcgis.learn and check it (run in .esri-venv).

Usage: python scripts/interop_esri_check.py EXPORT_ESRI_DIR [--batch-size 2] [--keep-workdir]
       [--val-split-pct P]   (default 0.1; below 10 chips the smallest share giving one validation chip,
       as arcgis.learn raises IndexError when int(N * val_split_pct) is 0)

arcgis.learn 2.4.4 ``prepare_data`` decides the dataset type from ``esri_accumulated_stats.json``
``MetaDataMode``; ``Export_Tiles`` with an ``images2/`` folder is an image-to-image (Pix2Pix) dataset with
``images/`` as input and ``images2/`` as target. A ``labels/`` folder instead makes it a *thematic* Pix2Pix
dataset with ``labels/`` as the INPUT (values turned into classes). Multispectral chips are min-max scaled
with the ``.emd`` ``AllTilesStats`` (input) / ``AllTilesStats2`` (target) ``Min``/``Max``, clamped to
[0, 1] (so nodata -9999 becomes the band minimum) and mapped to [-1, 1]; the one-band target is repeated to
the input's band count. prepare_data writes ``esri_normalization_stats_{a,b}.json`` and ``models/`` into
the folder it loads, so this check loads a scratch folder (symlinks to the chip folders, copies of the
metadata files) and never writes into the export.

Checks, each printed with its figures; exits 1 on the first failure:
1. the export holds the files arcgis.learn requires (.emd, map.txt, esri_accumulated_stats.json),
   MetaDataMode Export_Tiles, an images2/ folder and no labels/ folder, and map.txt lists
   ``images\\N.tif images2\\N.tif`` pairs of existing files (the real ArcGIS Export Tiles form);
2. prepare_data detects Pix2Pix, not thematic, with images/ as input and images2/ as target, input and
   target files paired by name;
3. it is multispectral with the export's band count (chip files = .emd AllTilesStats);
4. one validation batch: input (B, bands, H, W) float32 in [-1, 1], and the target, scaled back with
   AllTilesStats2 Min/Max, equals the label chips' AGBD in Mg/ha on labelled pixels (not class indices);
   one training batch loads too.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

REQUIRED = ("esri_model_definition.emd", "map.txt", "esri_accumulated_stats.json")


FAILED: list[str] = []


def _fail(msg: str) -> None:
    """Fatal: report every failure so far and exit 1."""
    FAILED.append(msg)
    print(f"[esri] FAIL: {msg}")
    _summary_exit()


def _summary_exit() -> None:
    print(f"[esri] FAILED ({len(FAILED)}):")
    for m in FAILED:
        print(f"[esri]   - {m}")
    sys.exit(1)


def _check(cond: bool, msg: str, why: str = "", fatal: bool = False) -> bool:
    """Print ok/FAIL; a failed check is recorded (the run goes on unless ``fatal``)."""
    if cond:
        print(f"[esri] ok: {msg}")
        return True
    text = msg + (f" -- {why}" if why else "")
    if fatal:
        _fail(text)
    FAILED.append(text)
    print(f"[esri] FAIL: {text}")
    return False


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError) as exc:
        _fail(f"{path} is not readable JSON: {exc}")
        raise


def check_layout(export: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Static checks of the folder; returns (.emd, esri_accumulated_stats.json)."""
    missing = [n for n in REQUIRED if not (export / n).is_file()]
    _check(not missing, f"{export} holds {', '.join(REQUIRED)}",
           f"missing {missing}: prepare_data cannot infer the dataset type without them", fatal=True)
    emd = _read_json(export / "esri_model_definition.emd")
    stats = _read_json(export / "esri_accumulated_stats.json")
    mode = stats.get("MetaDataMode")
    print(f"[esri] esri_accumulated_stats.json MetaDataMode = {mode!r} (the key prepare_data reads), "
          f"NumBands = {stats.get('NumBands')}; .emd MetaDataMode = {emd.get('MetaDataMode')!r}")
    _check(mode == "Export_Tiles", "MetaDataMode is Export_Tiles")
    folders = sorted(p.name for p in export.iterdir() if p.is_dir())
    print(f"[esri] folders: {folders}")
    _check("labels" not in folders, "no labels/ folder",
           "arcgis.learn reads Export_Tiles + labels/ as a THEMATIC Pix2Pix dataset: labels/ becomes the "
           "INPUT and its values classes; a real two-raster Export Tiles export names the second "
           "raster's folder images2/")
    _check("images" in folders, "images/ (first raster) exists", fatal=True)
    _check("images2" in folders, "images2/ (second raster) exists")
    _check_map_txt(export)
    return emd, stats


def _check_map_txt(export: Path) -> None:
    raw = (export / "map.txt").read_bytes()
    lines = raw.split(b"\r\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if not _check(bool(lines) and all(b"\n" not in ln for ln in lines), f"map.txt: {len(lines)} CRLF lines"):
        return
    bad = [ln for ln in lines
           if not (ln.endswith(b" ") and len(ln.split()) == 2 and ln.split()[0].startswith(b"images\\")
                   and ln.split()[1].startswith(b"images2\\"))]
    _check(not bad, "map.txt lines are 'images\\N.tif images2\\N.tif ' (backslashes, trailing space)",
           f"first bad line {bad[0]!r}" if bad else "")
    first = lines[0].split()
    paths = [export / p.decode().replace("\\", os.sep) for p in first]
    _check(all(p.is_file() for p in paths), f"map.txt's first line names existing files: {[str(p) for p in paths]}")


def scratch_copy(export: Path) -> Path:
    """A folder prepare_data may write into: symlinked chip folders, copied metadata files."""
    work = Path(tempfile.mkdtemp(prefix="esri-check-")) / export.name
    work.mkdir()
    for item in export.iterdir():
        if item.is_dir():
            (work / item.name).symlink_to(item.resolve(), target_is_directory=True)
        elif not item.name.startswith("esri_normalization_stats"):
            shutil.copy2(item, work / item.name)
    return work


def _gdal_read(path: Path) -> tuple[np.ndarray, float | None]:
    from osgeo import gdal

    ds = gdal.Open(str(path))
    arr = ds.ReadAsArray().astype(np.float64)
    return (arr if arr.ndim == 3 else arr[None]), ds.GetRasterBand(1).GetNoDataValue()


def val_split_pct(n_chips: int) -> float:
    """arcgis.learn's default 0.1, or the smallest share giving it one validation chip (it fails with an
    IndexError when int(n * val_split_pct) is 0, i.e. below 10 chips)."""
    return 0.1 if n_chips >= 10 else min(0.5, (1.0 + 1e-6) / max(n_chips, 1))


def load(work: Path, batch_size: int, pct: float) -> Any:
    os.cpu_count = lambda: 4  # arcgis.learn's Pix2Pix loader uses os.cpu_count() - 4 workers
    warnings.filterwarnings("ignore")
    from arcgis.learn import prepare_data

    print(f"[esri] prepare_data({work.name}, batch_size={batch_size}, val_split_pct={pct:.3g})")
    try:
        return prepare_data(str(work), batch_size=batch_size, val_split_pct=pct)
    except Exception as exc:  # report arcgis.learn's own error
        _fail(f"arcgis.learn.prepare_data({work}) raised {type(exc).__name__}: {exc}")


def check_detection(data: Any, emd: dict[str, Any], export: Path) -> int:
    """Dataset type, input/target folders, pairing, multispectral band count; returns the band count."""
    tds, vds = data.train_ds, data.valid_ds
    a_dir, b_dir = Path(tds.image_list_A[0]).parent.name, Path(tds.image_list_B[0]).parent.name
    label_nc = getattr(data, "label_nc", None)
    print(f"[esri] arcgis.learn: dataset type {data._dataset_type!r}, input folder {a_dir}/, target folder "
          f"{b_dir}/, thematic label_nc={label_nc}, multispectral={data._is_multispectral}, imagery types "
          f"{data._imagery_type_a!r}/{data._imagery_type_b!r}, {len(tds)} train + {len(vds)} val chips "
          f"(random {data.val_split_pct:.0%} validation split)")
    _check(data._dataset_type == "Pix2Pix", "image-to-image (Pix2Pix) dataset detected")
    _check(not label_nc, "not thematic (no class mapping of the labels)",
           f"arcgis.learn made {label_nc} classes of the label values")
    _check((a_dir, b_dir) == ("images", "images2"), "input = images/, target = images2/",
           f"got input {a_dir}/, target {b_dir}/", fatal=True)
    for ds in (tds, vds):
        names_a = [Path(p).name for p in ds.image_list_A]
        names_b = [Path(p).name for p in ds.image_list_B]
        if names_a != names_b:
            _fail("input and target chips are not paired by file name")
    _check(True, "input and target chips pair by file name in both splits")
    n_files = _gdal_read(export / "images" / Path(tds.image_list_A[0]).name)[0].shape[0]
    n_emd = len(emd.get("AllTilesStats") or [])
    print(f"[esri] band stats arcgis.learn uses (from .emd AllTilesStats / AllTilesStats2): "
          f"input min {_r(data._band_min_values)} max {_r(data._band_max_values)} mean "
          f"{_r(data._band_mean_values)} std {_r(data._band_std_values)}; target min "
          f"{_r(data._band_min_values_b)} max {_r(data._band_max_values_b)}")
    _check(data._is_multispectral, "multispectral input", fatal=True)
    _check(n_files == n_emd == data.train_ds.n_channel,
           f"band count {n_files} = .emd AllTilesStats ({n_emd}) = arcgis.learn's n_channel "
           f"({data.train_ds.n_channel})")
    return n_files


def _r(t: Any) -> list[float]:
    return [round(float(v), 2) for v in (t if t is not None else [])]


def _first_batch(loader: Any, split: str) -> Any:
    try:
        return next(iter(loader))
    except Exception as exc:  # arcgis.learn's own loading error
        _fail(f"loading one {split} batch raised {type(exc).__name__}: {exc}")


def _check_input_values(data: Any, x: Any, export: Path) -> None:
    """Input channel k scaled back with AllTilesStats[k] equals chip band k on valid pixels."""
    hi = np.asarray([float(v) for v in data._band_max_values], dtype=np.float64)[:, None, None]
    lo = np.asarray([float(v) for v in data._band_min_values], dtype=np.float64)[:, None, None]
    worst = 0.0
    for i in range(x.shape[0]):
        img, nodata = _gdal_read(export / "images" / Path(data.valid_ds.image_list_A[i]).name)
        back = (x[i].double().numpy() + 1) / 2 * (hi - lo + 1e-5) + lo
        valid = (img >= lo) & (img <= hi) & ((img != nodata) if nodata is not None else True)
        err = np.abs(back - img)[valid]
        worst = max(worst, float(err.max()) if err.size else 0.0)
    tol = 1e-4 * float((hi - lo).max()) + 1e-3
    _check(worst <= tol, f"val input scaled back with AllTilesStats Min/Max = the image chips, band by band "
                         f"(max error {worst:.2g} HLS units)")


def check_batches(data: Any, n_bands: int, export: Path) -> None:
    xb, _ = _first_batch(data.valid_dl, "validation")
    x, y = xb[0].cpu(), xb[1].cpu()
    print(f"[esri] val batch: input {tuple(x.shape)} {x.dtype} [{x.min():.3f}, {x.max():.3f}], target "
          f"{tuple(y.shape)} {y.dtype} [{y.min():.3f}, {y.max():.3f}]")
    _check(x.ndim == 4 and x.shape[1] == n_bands and str(x.dtype) == "torch.float32",
           f"input batch (B, {n_bands}, H, W) float32")
    _check(float(x.min()) >= -1.0 and float(x.max()) <= 1.0, "input scaled to [-1, 1]")
    _check_input_values(data, x, export)
    lo, hi = float(data._band_min_values_b[0]), float(data._band_max_values_b[0])
    # arcgis.learn: t = 2 * (v - Min) / (Max - Min + 1e-5) - 1 (clamped); its resampling of the chip
    # (fastai affine grid at identity) blends neighbours with weights ~1e-5, hence the tolerance.
    tol = 1e-4 * (hi - lo) + 1e-3
    n_lab = n_nod = 0
    worst = 0.0
    for i in range(x.shape[0]):
        name = Path(data.valid_ds.image_list_B[i]).name
        lab, nodata = _gdal_read(export / "images2" / name)
        valid = (lab[0] >= 0) if nodata is None else (lab[0] != nodata) & (lab[0] >= 0)
        mgha = (y[i, 0].double().numpy() + 1) / 2 * (hi - lo + 1e-5) + lo
        err = np.abs(mgha[valid] - lab[0][valid])
        worst = max(worst, float(err.max()) if err.size else 0.0)
        if err.size and err.max() > tol:
            _fail(f"val target of {name} scaled back with AllTilesStats2 [{lo}, {hi}] differs from the "
                  f"label chip by up to {err.max():.4g} Mg/ha")
        n_lab, n_nod = n_lab + int(valid.sum()), n_nod + int((~valid).sum())
        if i == 0:
            unl = np.unique(y[i, 0].numpy()[~valid])
            print(f"[esri] {name}: target channels identical (one AGBD band repeated to {y.shape[1]}): "
                  f"{bool((y[i] == y[i, :1]).all())}; unlabelled pixels arrive as {unl[:3].tolist()} "
                  f"(= the AGBD minimum {lo} Mg/ha after scaling: arcgis.learn cannot ignore them)")
    _check(n_lab > 0, f"val target scaled back = label chips' AGBD in Mg/ha on {n_lab} labelled pixels "
                      f"(max error {worst:.2g} Mg/ha; {n_nod} unlabelled), range [{lo}, {hi}] Mg/ha")
    xt, _ = _first_batch(data.train_dl, "training")
    _check(tuple(xt[0].shape[1:]) == tuple(x.shape[1:]), f"train batch input {tuple(xt[0].shape)}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("export", type=Path, help="the export's Esri folder (holds esri_model_definition.emd)")
    ap.add_argument("--batch-size", type=int, default=2, help="prepare_data batch_size (> 1)")
    ap.add_argument("--keep-workdir", action="store_true", help="keep the scratch folder prepare_data loads")
    ap.add_argument("--val-split-pct", type=float, help="prepare_data val_split_pct (default 0.1, or the smallest "
                                                        "share that gives one validation chip below 10 chips)")
    a = ap.parse_args()
    export = a.export.resolve()
    if (export / "esri" / REQUIRED[0]).is_file():
        export = export / "esri"
    emd, _ = check_layout(export)
    work = scratch_copy(export)
    try:
        n_chips = len(list((export / "images").glob("*.tif")))
        if n_chips < 2:
            _fail(f"{export} holds {n_chips} chip: arcgis.learn needs at least one training and one validation "
                  "chip in a folder")
        data = load(work, a.batch_size, a.val_split_pct or val_split_pct(n_chips))
        n_bands = check_detection(data, emd, export)
        check_batches(data, n_bands, export)
    finally:
        if not a.keep_workdir:
            shutil.rmtree(work.parent, ignore_errors=True)
    if FAILED:
        _summary_exit()
    print("[esri] PASS")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
