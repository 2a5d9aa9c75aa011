"""Training-chip exporter (issue 5): composites + AGBD label rasters -> Esri and TerraTorch chip layouts.

Entry point :func:`export_chips`. Inputs are the pipeline's float32 COGs on one grid per tile:
composites ``composites/<TILE>/<SEASON>.tif`` (bands B02..B07 in HLS units x10000, then ``count``;
nodata -9999) and labels ``labels/<TILE>/<SEASON>.tif`` (``agbd`` Mg/ha, ``shot_count``; nodata -9999 or
-1). Output ``<output_dir>/<export_name>/`` (see docs/chips.md and the "Chips export contract" in
docs/DESIGN.md): ``esri/`` (real files), ``terratorch/`` (hard links to them), ``split.json``,
``chips_export.json`` (written last; a re-run with the same inputs and parameters returns it unchanged).

Each composite/label pair is read once, in bands of rows (up to ``JOB_ROWS`` pixel rows, whole chip rows),
by a small thread pool; each worker cuts its chips from memory, filters them and writes them with
``chips.geotiff`` (one buffered write per file) under temporary names, renamed to their export number
in row-major order. Image chips keep every pixel of their window (NaN becomes -9999);
label chips are the ``agbd`` band with every invalid pixel (nodata tag, NaN or negative, e.g. granite-style -1
fills under a -9999 tag) set to ``label_nodata``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

from chips import esri
from chips.cutting import ESRI_NAME_DIGITS, Chip, Out, cut_source
from chips.lattice import (
    SPLITS,
    chip_positions,
)
from chips.manifest import EXPORT_VERSION, ExportError, ExportManifest, ExportResult, SourcePair
from chips.params import ChipParams
from chips.sources import BANDS, ChipExportError, Source, band_lists, discover_sources, label_nodata_of
from chips.splits import assign_splits
from chips.stats import StatsAccumulator
from chips.terratorch import (
    HLS_BANDS,
    chip_stem,
    place,
    terratorch_config,
    write_config,
)
from core.constants import AGB_UNITS, IMAGE_NODATA
from core.files import UnsafePathError, atomic_path, contained

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- inputs


def _fingerprint(sources: Sequence[Source], params: ChipParams, label_nodata: float) -> dict[str, Any]:
    files = []
    for s in sources:
        for p in (s.composite, s.label):
            st = os.stat(p)
            files.append([p, st.st_size, st.st_mtime_ns])
    fp = {"version": EXPORT_VERSION, "params": asdict(params), "label_nodata": label_nodata, "files": files}
    return json.loads(json.dumps(fp))  # as it reads back from chips_export.json (tuples -> lists)


# ---------------------------------------------------------------- cutting and writing


# ---------------------------------------------------------------- metadata


def _write_esri(root: Path, kept: list[Chip], sources: Sequence[Source], params: ChipParams,
                all_stats: StatsAccumulator, lab_stats: StatsAccumulator, meta: dict[str, Any],
                next_index: int) -> None:
    ids, names, esri_names, wl = band_lists(sources)
    g = sources[0].grid
    info = esri.EsriExportInfo(
        n_tiles=len(kept), next_tile_index=next_index, chip_size=params.chip_size, res=g.resolution,
        epsg=g.epsg, image_sensor="HLS_L30", image_band_names=esri_names, n_image_rasters=len(sources),
        image_stats=all_stats.band_stats(esri_names), label_sensor="GEDI_L4A_AGBD",
        label_band_names=["AGBD"], n_label_rasters=len(sources), label_stats=lab_stats.band_stats(["AGBD"]))
    names_sorted = [f"{c.index:0{ESRI_NAME_DIGITS}d}.tif" for c in sorted(kept, key=lambda c: c.index)]
    esri.write_map_txt(root / "map.txt", names_sorted)
    esri.write_stats_txt(root / "stats.txt", len(kept), len(ids), params.chip_size, params.chip_size)
    esri.dump_esri_json(root / "esri_accumulated_stats.json", esri.accumulated_stats(info))
    project = {
        "AGB_ExportVersion": EXPORT_VERSION,
        "AGB_BandIds": ids,
        "AGB_BandNames": names,
        "AGB_WavelengthsMicrons": wl,
        "AGB_ImageUnits": "HLS surface reflectance x 10000 (scale 0.0001)",
        "AGB_ImageNodata": IMAGE_NODATA,
        "AGB_LabelQuantity": "above-ground biomass density (GEDI L4A agbd, mean of shots per pixel)",
        "AGB_LabelUnits": "Mg/ha",
        "AGB_LabelNodata": meta["label_nodata"],
        "AGB_Split": meta["split_summary"],
        "AGB_TrainStats": meta["stats"]["train"],
        "AGB_SpatialReferences": sorted({s.grid.epsg for s in sources}),
        "AGB_SourceComposites": [s.composite for s in sources],
        "AGB_SourceLabels": [s.label for s in sources],
    }
    esri.dump_esri_json(root / "esri_model_definition.emd", esri.model_definition(info, project))


def _write_terratorch(tt: Path, final_tt: Path, store: Out, kept: list[Chip], sources: Sequence[Source],
                      params: ChipParams, train_stats: dict[str, Any], move: bool) -> dict[str, str]:
    """Split folders of image/label files paired by stem; returns {chip index: stem}."""
    width = max(5, len(str(max((c.index for c in kept), default=0))))
    stems: dict[int, str] = {}
    for split in SPLITS:
        (tt / f"{split}_images").mkdir(parents=True)
        (tt / f"{split}_labels").mkdir(parents=True)
    for c in kept:
        stem = chip_stem(sources[c.source].tile, c.index, width)
        stems[c.index] = stem
        name = f"{c.index:0{ESRI_NAME_DIGITS}d}.tif"
        for kind, folder, suffix in (("images", store.images, "img"), ("labels", store.labels, "label")):
            dst = tt / f"{c.split}_{kind}" / f"{stem}_tile_{suffix}.tif"
            if move:
                os.replace(folder / name, dst)
            else:
                place(folder / name, dst, params.terratorch_links)
    ids, *_ = band_lists(sources)
    dataset_bands = [HLS_BANDS.get(b, b) for b in ids]
    out_bands = [HLS_BANDS[b] for b in BANDS]
    cfg = terratorch_config(root=final_tt, dataset_bands=dataset_bands, output_bands=out_bands,
                            means=train_stats["mean"][:6], stds=[sd or 1.0 for sd in train_stats["std"][:6]],
                            chip_size=params.chip_size)
    write_config(tt / "terratorch_config.yaml", cfg)
    return {str(k): v for k, v in stems.items()}


# ---------------------------------------------------------------- entry point


def _contract(params: ChipParams, sources: Sequence[Source], label_nodata: float, counts: dict[str, int],
              stats: dict[str, Any], label_stats: dict[str, Any]) -> ExportManifest:
    ids, names, _, wl = band_lists(sources)
    return ExportManifest(
        bands=ids, band_names=names, wavelengths_um=wl, chip_size=params.chip_size, stride=params.layout.stride,
        image_nodata=IMAGE_NODATA, image_units="HLS reflectance x 10000", label_nodata=label_nodata,
        label_bands=["agbd"], label_units=AGB_UNITS, splits=counts, stats=stats, label_stats=label_stats,
        layouts={k: k for k in params.layouts}, split_file="split.json",
        terratorch_config="terratorch/terratorch_config.yaml" if "terratorch" in params.layouts else None,
        sources=[SourcePair(s.tile, s.season, s.composite, s.label, s.grid.crs) for s in sources])


def _cut_all(out: Out, sources: list[Source], params: ChipParams, label_nodata: float
             ) -> tuple[list[Chip], dict[str, int]]:
    """Cut every source's chips into ``out`` (numbered export-wide); returns the chips and the counters."""
    chips: list[Chip] = []
    counters = {"next": 0, "candidates": 0, "image_nodata": 0, "unlabeled": 0, "duplicate_overlap": 0}
    taken: set[tuple[Any, ...]] = set()
    with ThreadPoolExecutor(max_workers=params.workers) as pool:
        for si, src in enumerate(sources):
            pos = chip_positions(src.grid, params.layout)
            counters["candidates"] += len(pos)
            if len(pos) == 0:
                log.warning("%s: grid %dx%d holds no %d px chip", src.composite, src.grid.height,
                            src.grid.width, params.chip_size)
                continue
            o = Out(out.images, out.labels, src.grid.epsg, out.image_descriptions, label_nodata, out.tfw,
                    params.chip_writer)
            cut_source(si, src, pos, params, o, pool, chips, counters, taken)
    if not chips:
        raise ChipExportError(f"no chip passed the filters (candidates {counters['candidates']}, "
                              f"too much image nodata {counters['image_nodata']}, too few labelled pixels "
                              f"{counters['unlabeled']}); sources: {[s.composite for s in sources]}")
    return chips, counters


def _split_doc(kept: list[Chip], dropped: list[Chip], sources: Sequence[Source], params: ChipParams,
               stems: dict[str, str], split_summary: dict[str, Any], blocks: dict[str, Any]) -> dict[str, Any]:
    """The content of ``split.json``: the chips of each split and one row per chip."""
    chip_rows = [{"index": c.index, "split": c.split, "tile": sources[c.source].tile,
                  "season": sources[c.source].season, "row": c.row, "col": c.col, "epsg": c.block[0],
                  "block": [c.block[1], c.block[2]], "bounds": list(c.bounds), "n_labeled": c.n_labeled,
                  "nodata_fraction": round(c.nodata_fraction, 6),
                  "esri": f"{c.index:0{ESRI_NAME_DIGITS}d}.tif" if "esri" in params.layouts else None,
                  "terratorch_stem": stems.get(str(c.index))} for c in kept]
    by_split = {s: [r["esri"] or r["terratorch_stem"] for r in chip_rows if r["split"] == s] for s in SPLITS}
    return {**split_summary, **by_split, "chip_size": params.chip_size, "stride": params.layout.stride,
            "dropped_cross_zone": [c.index for c in dropped], **blocks, "chips": chip_rows}


def _run_export(tmp: Path, final: Path, sources: list[Source], params: ChipParams,
                label_nodata: float) -> dict[str, Any]:
    """Write the whole export into ``tmp`` (renamed to ``final`` by the caller)."""
    store_root = tmp / "esri" if "esri" in params.layouts else tmp / "_store"
    ids, *_ = band_lists(sources)
    out = Out(store_root / "images", store_root / "labels", sources[0].grid.epsg,
              tuple(ids), label_nodata, tfw="esri" in params.layouts, writer=params.chip_writer)
    out.images.mkdir(parents=True)
    out.labels.mkdir(parents=True)
    chips, counters = _cut_all(out, sources, params, label_nodata)
    kept, dropped, blocks = assign_splits(chips, params, sources[0].grid.resolution)
    if not any(c.split == "train" for c in kept):
        raise ChipExportError(f"no training chip left after the split ({len(kept)} chips kept)")
    for c in dropped:
        for folder in (out.images, out.labels):
            for ext in (".tif", ".tfw"):
                (folder / f"{c.index:0{ESRI_NAME_DIGITS}d}{ext}").unlink(missing_ok=True)
    acc = {s: StatsAccumulator(len(ids)) for s in (*SPLITS, "all")}
    lacc = {s: StatsAccumulator(1) for s in (*SPLITS, "all")}
    for c in kept:
        for key in (c.split, "all"):
            acc[key].add(c.stats)
            lacc[key].add(c.label_stats)
    counts = {s: sum(1 for c in kept if c.split == s) for s in SPLITS}
    stats = {s: acc[s].summary(ids) for s in (*SPLITS, "all")}
    label_stats = {s: lacc[s].summary(["agbd"]) for s in (*SPLITS, "all")}
    split_summary = {"fractions": list(params.split_fractions), "block_chips": params.split_block_chips,
                     "gap_px": params.split_gap_px, "seed": params.seed, "counts": counts, "file": "split.json"}
    if "esri" in params.layouts:
        meta = {"label_nodata": label_nodata, "split_summary": split_summary, "stats": stats}
        _write_esri(tmp / "esri", kept, sources, params, acc["all"], lacc["all"], meta, counters["next"])
    stems: dict[str, str] = {}
    if "terratorch" in params.layouts:
        stems = _write_terratorch(tmp / "terratorch", final / "terratorch", out, kept, sources, params,
                                  stats["train"], move="esri" not in params.layouts)
    if "esri" not in params.layouts:
        shutil.rmtree(store_root)
    split_doc = _split_doc(kept, dropped, sources, params, stems, split_summary, blocks)
    (tmp / "split.json").write_text(json.dumps(split_doc, indent=1))
    dropped_counts = {k: counters[k] for k in ("image_nodata", "unlabeled", "duplicate_overlap")}
    dropped_counts["cross_zone"] = len(dropped)
    return {"contract": _contract(params, sources, label_nodata, counts, stats, label_stats),
            "n_chips": len(kept), "candidates": counters["candidates"], "dropped": dropped_counts}


def export_chips(*, composites: Any, labels: Any, output_dir: str | os.PathLike[str],
                 params: ChipParams = ChipParams(), export_name: str = "chips",
                 overwrite: bool = False) -> ExportResult:
    """Export training chips of composite/label pairs to ``<output_dir>/<export_name>/``.

    ``composites``/``labels``: lists of COG paths, their ``composites/``/``labels/`` folders, or the flow
    output_dir holding both; paired by (MGRS tile, season). Image chips: the six bands B02..B07 (+
    ``params.extra_bands`` by description or 1-based index, e.g. ``"count"``), float32 HLS units, nodata
    -9999. Label chips: AGBD Mg/ha float32 with nodata ``params.label_nodata`` (None: as the label rasters
    say). A re-run with the same inputs (paths, sizes, mtimes) and parameters returns the recorded result
    with ``skipped=True``.
    """
    t0 = time.perf_counter()
    sources = discover_sources(composites, labels, params.extra_bands)
    lnd = label_nodata_of(sources, params.label_nodata)
    try:
        final = contained(output_dir, export_name, what="export_name")
    except UnsafePathError as exc:
        raise ChipExportError(str(exc)) from None
    manifest = final / "chips_export.json"
    fp = _fingerprint(sources, params, lnd)
    if manifest.exists() and not overwrite:
        try:
            old = ExportManifest.read(final)
        except ExportError as exc:
            log.info("re-exporting: %s", exc)
        else:
            if old.fingerprint == fp and old.result:
                return ExportResult.from_dict({**old.result, "skipped": True})
    with atomic_path(final) as tmp:
        tmp.mkdir(parents=True)
        run = _run_export(tmp, final, sources, params, lnd)
        seconds = time.perf_counter() - t0
        tt = final / "terratorch" if "terratorch" in params.layouts else None
        result = ExportResult(
            export_dir=str(final), chips_export=str(manifest), split_file=str(final / "split.json"),
            esri_dir=str(final / "esri") if "esri" in params.layouts else None,
            terratorch_dir=str(tt) if tt else None,
            terratorch_config=str(tt / "terratorch_config.yaml") if tt else None,
            n_chips=run["n_chips"], splits=run["contract"].splits, candidates=run["candidates"],
            dropped=run["dropped"], label_nodata=lnd, stats={"train": run["contract"].stats["train"]},
            label_stats={"train": run["contract"].label_stats["train"]}, seconds=round(seconds, 3),
            chips_per_second=round(run["n_chips"] / max(seconds, 1e-9), 1), skipped=False)
        dataclasses.replace(run["contract"], fingerprint=fp, result=result.to_dict()).write(tmp)
    log.info("exported %d chips to %s in %.1f s", run["n_chips"], final, seconds)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``python -m chips.export --composites X --labels Y --output-dir OUT [--params p.json]``,
    or ``--demo DIR`` to generate a small synthetic world in DIR first. Last stdout line = JSON result."""
    ap = argparse.ArgumentParser(prog="python -m chips.export", description=main.__doc__)
    ap.add_argument("--composites", nargs="*")
    ap.add_argument("--labels", nargs="*")
    ap.add_argument("--output-dir", required=True)
    ap.add_argument("--params", help="JSON file of further export_chips keyword arguments")
    ap.add_argument("--demo", help="write a small synthetic world (2 tiles) here and export it")
    a = ap.parse_args(argv)
    kwargs: dict[str, Any] = json.loads(Path(a.params).read_text()) if a.params else {}
    if a.demo:
        from sampleworld.synthetic.pairs import write_demo_world

        world = write_demo_world(Path(a.demo))
        comps, labs = world["composites"], world["labels"]
    else:
        if not a.composites or not a.labels:
            ap.error("--composites and --labels are required without --demo")
        comps = a.composites[0] if len(a.composites) == 1 and Path(a.composites[0]).is_dir() else a.composites
        labs = a.labels[0] if len(a.labels) == 1 and Path(a.labels[0]).is_dir() else a.labels
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    where = {k: kwargs.pop(k) for k in ("export_name", "overwrite") if k in kwargs}
    result = export_chips(composites=comps, labels=labs, output_dir=a.output_dir, params=ChipParams(**kwargs), **where)
    print(json.dumps(result.to_dict()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
