"""Training-chip exporter (issue 5): composites + AGBD label rasters -> Esri and TerraTorch chip layouts.

Entry point :func:`export_chips`. Inputs are the pipeline's float32 COGs on one grid per tile:
composites ``composites/<TILE>/<SEASON>.tif`` (bands B02..B07 in HLS units x10000, then ``count``;
nodata -9999) and labels ``labels/<TILE>/<SEASON>.tif`` (``agbd`` Mg/ha, ``shot_count``; nodata -9999 or
-1). Output ``<output_dir>/<export_name>/`` (see docs/chips.md and the "Chips export contract" in
docs/DESIGN.md): ``esri/`` (real files), ``terratorch/`` (hard links to them), ``split.json``,
``chips_export.json`` (written last; a re-run with the same inputs and parameters returns it unchanged).

Each composite/label pair is read once, in bands of rows (up to ``JOB_ROWS`` pixel rows, whole chip rows):
a ``split-plan`` thread reads the label rasters (each position's labelled pixels) and plans the split on
the chips they alone would keep, while the calling thread reads the composites and filters the chips and
a small pool writes their images with ``chips.geotiff`` (one buffered write per file, in a folder per
thread) under temporary names. The split (``chips.splits``; planned again when the image-nodata filter
dropped a chip) assigns metre-sized blocks of labelled pixels to train/val/test, masks the buffer between splits and gives each chip one copy per split keeping labels: the same image (renamed,
then hard-linked) and a label chip with only that split's labels, numbered export-wide. Image chips keep
every pixel of their window (NaN becomes -9999); label chips are the ``agbd`` band with every invalid pixel
(nodata tag, NaN or negative, e.g. granite-style -1 fills under a -9999 tag), every label of another split
and every label inside the buffer set to ``label_nodata``.
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
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import rasterio

from chips.bandlayout import BandLayout
from chips.cutting import (
    ESRI_NAME_DIGITS,
    Candidate,
    Chip,
    LabelPass,
    Out,
    candidate,
    cut_source,
    fresh_positions,
    take,
    write_copies,
)
from chips.esri import LABEL_DIR
from chips.esri_layout import ESRI_DIR, EsriSpec, write_metadata, write_split_folders
from chips.lattice import SPLITS, chip_positions
from chips.manifest import EXPORT_VERSION, ExportError, ExportManifest, ExportResult, SourcePair
from chips.params import ChipParams
from chips.sources import BANDS, ChipExportError, Source, discover_sources, label_nodata_of
from chips.splits import SplitPlan, check_plan, plan_splits
from chips.stats import StatsAccumulator
from chips.terratorch import (
    HLS_BANDS,
    MIN_TRAIN_CHIPS,
    chip_stem,
    config_batch_size,
    place,
    terratorch_config,
    write_config,
)
from core.constants import AGB_UNITS, HLS_L30, IMAGE_NODATA
from core.files import UnsafePathError, atomic_path, contained

log = logging.getLogger(__name__)
STAGE_DIR = "_stage"  # per-thread folders where chip files are created before their rename (removed)

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


def _sensor(sources: Sequence[Source]) -> str:
    """ArcGIS ``SensorName`` from the composites' ``COLLECTION`` tags: HLS_L30, HLS_S30 or HLS_L30_S30."""
    colls: set[str] = set()
    for s in sources:
        with rasterio.open(s.composite) as ds:
            colls.update(c for c in (ds.tags().get("COLLECTION") or HLS_L30).split(",") if c)
    kinds = sorted({c[3:6] for c in colls if c.startswith("HLS")}) or ["L30"]
    return "HLS_" + "_".join(kinds)


def _write_esri(tmp: Path, kept: list[Chip], sources: Sequence[Source], params: ChipParams, layout: BandLayout,
                acc: dict[str, StatsAccumulator], lacc: dict[str, StatsAccumulator], meta: dict[str, Any],
                next_index: int) -> dict[str, str]:
    """``esri/`` metadata (its chips are already there) and, with ``params.esri_splits``, ``esri_splits/``."""
    g = sources[0].grid
    project = {
        "AGB_ExportVersion": EXPORT_VERSION,
        "AGB_Description": "Training chips of HLS composites (images/) and GEDI L4A AGBD rasters (images2/) "
                           "for pixel-wise biomass regression (see docs/chips.md).",
        "AGB_BandLayout": layout.name,
        "AGB_BandIds": list(layout.ids),
        "AGB_BandNames": layout.names(),
        "AGB_WavelengthsMicrons": layout.wavelengths(),
        "AGB_ImageUnits": "HLS surface reflectance x 10000 (scale 0.0001)",
        "AGB_ImageNodata": IMAGE_NODATA,
        "AGB_LabelQuantity": "above-ground biomass density (GEDI L4A agbd, mean of shots per pixel)",
        "AGB_LabelUnits": AGB_UNITS,
        "AGB_LabelNodata": meta["label_nodata"],
        "AGB_Split": meta["split_summary"],
        "AGB_TrainStats": meta["stats"]["train"],
        "AGB_SpatialReferences": sorted({s.grid.epsg for s in sources}),
        "AGB_SourceComposites": [s.composite for s in sources],
        "AGB_SourceLabels": [s.label for s in sources],
    }
    spec = EsriSpec(params.chip_size, g.resolution, g.epsg, _sensor(sources), layout.esri_names(), project,
                    next_index)
    write_metadata(tmp / ESRI_DIR, kept, spec, acc["all"], lacc["all"])
    if not params.esri_splits:
        return {}
    return write_split_folders(tmp, kept, spec, acc, lacc, params.terratorch_links)


def _write_terratorch(tt: Path, final_tt: Path, store: Out, kept: list[Chip], sources: Sequence[Source],
                      params: ChipParams, layout: BandLayout, train_stats: dict[str, Any], move: bool
                      ) -> dict[str, str]:
    """Split folders of image/label files paired by stem + the config; returns {chip index: stem}.

    The config's batch size is min(64, training chips), so TerraTorch (drop_last) trains at least one full
    batch, never a batch of one chip. Granite layout: granite's positional ``dataset_bands`` (-1 for B01,
    B09, B10, B11)."""
    width = max(5, len(str(max((c.index for c in kept), default=0))))
    stems: dict[int, str] = {}
    for split in SPLITS:
        (tt / f"{split}_images").mkdir(parents=True)
        (tt / f"{split}_labels").mkdir(parents=True)
    folders = (("images", os.fspath(store.images), "img"), ("labels", os.fspath(store.labels), "label"))
    for c in kept:  # os.path strings: thousands of files
        stem = chip_stem(sources[c.source].tile, c.index, width)
        stems[c.index] = stem
        name = f"{c.index:0{ESRI_NAME_DIGITS}d}.tif"
        for kind, folder, suffix in folders:
            src, dst = os.path.join(folder, name), os.path.join(tt, f"{c.split}_{kind}", f"{stem}_tile_{suffix}.tif")
            if move:
                os.replace(src, dst)
            else:
                place(src, dst, params.terratorch_links)
    dataset_bands: list[str | int] = [-1 if src is None else common
                                      for src, common in zip(layout.source, layout.common_names(), strict=True)]
    pos = layout.positions(BANDS)
    n_train = sum(1 for c in kept if c.split == "train")
    cfg = terratorch_config(root=final_tt, dataset_bands=dataset_bands, output_bands=[HLS_BANDS[b] for b in BANDS],
                            means=[train_stats["mean"][i] for i in pos],
                            stds=[train_stats["std"][i] or 1.0 for i in pos], chip_size=params.chip_size,
                            batch_size=config_batch_size(n_train))
    write_config(tt / "terratorch_config.yaml", cfg)
    return {str(k): v for k, v in stems.items()}


# ---------------------------------------------------------------- entry point


def _band_layout(sources: Sequence[Source], params: ChipParams) -> BandLayout:
    """The image chips' band layout; every source must give the same extra bands."""
    extra = list(sources[0].extra_names)
    for s in sources:
        if list(s.extra_names) != extra:
            raise ChipExportError(f"{s.composite}: extra bands {s.extra_names} differ from {extra}")
    return BandLayout.build(params.band_layout, extra)


def _check_train(kept: Sequence[Chip], params: ChipParams) -> None:
    """No training chip is an error; fewer than ``MIN_TRAIN_CHIPS`` too when a TerraTorch config is written
    (no batch size makes TerraTorch train on one chip: a batch of one fails in UPerNet's BatchNorm)."""
    n = sum(1 for c in kept if c.split == "train")
    if n == 0:
        raise ChipExportError(f"no training chip left after the split ({len(kept)} chips kept)")
    if n < MIN_TRAIN_CHIPS and "terratorch" in params.layouts:
        raise ChipExportError(
            f"only {n} training chip after the split ({len(kept)} chips kept): the TerraTorch layout needs at "
            f"least {MIN_TRAIN_CHIPS} (TerraTorch cannot train on a batch of one chip: UPerNet's BatchNorm "
            "fails); export a larger area, use a smaller split_block_m or chip_size, lower "
            "min_labeled_pixels, or export layouts=['esri'] only (the project's trainer repeats chips)")


def _contract(params: ChipParams, sources: Sequence[Source], label_nodata: float, counts: dict[str, int],
              stats: dict[str, Any], label_stats: dict[str, Any], labelled: dict[str, int], layout: BandLayout,
              extra_layouts: dict[str, str]) -> ExportManifest:
    return ExportManifest(
        bands=list(layout.ids), band_names=layout.names(), wavelengths_um=layout.wavelengths(),
        chip_size=params.chip_size, stride=params.layout.stride,
        image_nodata=IMAGE_NODATA, image_units="HLS reflectance x 10000", label_nodata=label_nodata,
        label_bands=["agbd"], label_units=AGB_UNITS, splits=counts, stats=stats, label_stats=label_stats,
        layouts={**{k: k for k in params.layouts}, **extra_layouts}, split_file="split.json",
        terratorch_config="terratorch/terratorch_config.yaml" if "terratorch" in params.layouts else None,
        sources=[SourcePair(s.tile, s.season, s.composite, s.label, s.grid.crs) for s in sources],
        labelled_pixels=labelled)


def _expected_candidates(sources: Sequence[Source], labelled: Sequence[LabelPass], params: ChipParams
                         ) -> list[Candidate]:
    """The candidates :func:`_cut_all` gives when no chip fails the image-nodata filter, from the label
    rasters alone (same order, same overlap rule): the split is planned on them while the composites are
    read, and used when the cut gives exactly these positions."""
    taken: set[tuple[Any, ...]] = set()
    cands: list[Candidate] = []
    for si, (src, lab) in enumerate(zip(sources, labelled, strict=True)):
        pos = lab.positions
        if len(pos) == 0:
            continue
        lab.wait()
        ok = [i for i in np.flatnonzero(fresh_positions(src, pos, taken)) if lab.n[i] >= params.min_labeled_pixels]
        rows_cols = [(int(pos[i, 0]), int(pos[i, 1])) for i in ok]  # positions are row-major, as the cut's order
        take(src, rows_cols, taken)
        cands += [candidate(si, src, r, c, params.chip_size, lab.pixels[(r, c)]) for r, c in rows_cols]
    return cands


def _plan_expected(sources: Sequence[Source], labelled: Sequence[LabelPass],
                   params: ChipParams) -> tuple[list[tuple[int, int, int]], SplitPlan]:
    """(positions, split plan) of :func:`_expected_candidates`."""
    cands = _expected_candidates(sources, labelled, params)
    return [(c.source, c.row, c.col) for c in cands], plan_splits(cands, sources, params)


def _cut_all(out: Out, sources: list[Source], params: ChipParams, pool: ThreadPoolExecutor,
             planner: ThreadPoolExecutor) -> tuple[list[Candidate], dict[str, int], list[Future[None]],
                                                   Future[tuple[list[tuple[int, int, int]], SplitPlan]]]:
    """Cut every source's candidate chips; returns them, counters, the pool jobs still writing their
    images under temporary names, and the split planned on ``planner`` from the label rasters meanwhile
    (:func:`_plan_expected`)."""
    cands: list[Candidate] = []
    jobs: list[Future[None]] = []
    counters = {"candidates": 0, "image_nodata": 0, "unlabeled": 0, "duplicate_overlap": 0}
    taken: set[tuple[Any, ...]] = set()
    labelled = [LabelPass(src, chip_positions(src.grid, params.layout), params) for src in sources]
    for lab in labelled:
        planner.submit(lab.run)
    expected = planner.submit(_plan_expected, sources, labelled, params)
    for si, (src, lab) in enumerate(zip(sources, labelled, strict=True)):
        pos = lab.positions
        counters["candidates"] += len(pos)
        if len(pos) == 0:
            log.warning("%s: grid %dx%d holds no %d px chip", src.composite, src.grid.height,
                        src.grid.width, params.chip_size)
            continue
        o = dataclasses.replace(out, epsg=src.grid.epsg)
        jobs += cut_source(si, src, pos, lab, params, o, pool, cands, counters, taken)
    if not cands:
        raise ChipExportError(f"no chip passed the filters (candidates {counters['candidates']}, "
                              f"too much image nodata {counters['image_nodata']}, too few labelled pixels "
                              f"{counters['unlabeled']}); sources: {[s.composite for s in sources]}")
    return cands, counters, jobs, expected


def _plan(cands: list[Candidate], sources: Sequence[Source], params: ChipParams,
          expected: Future[tuple[list[tuple[int, int, int]], SplitPlan]]) -> SplitPlan:
    """The split plan of ``cands``: the one planned ahead when the cut gave the expected positions (the
    plan depends only on the candidates' positions and labelled pixels), else planned now."""
    positions, plan = expected.result()
    if positions == [(c.source, c.row, c.col) for c in cands]:
        return plan
    log.info("re-planning the split: %d of %d expected chips failed the image-nodata filter",
             len(positions) - len(cands), len(positions))
    return plan_splits(cands, sources, params)


def _split_doc(kept: list[Chip], sources: Sequence[Source], params: ChipParams, stems: dict[str, str],
               split_summary: dict[str, Any], plan: SplitPlan) -> dict[str, Any]:
    """The content of ``split.json``: the chips of each split, one row per chip file pair, the blocks."""
    chip_rows = [{"index": c.index, "split": c.split, "tile": sources[c.source].tile,
                  "season": sources[c.source].season, "row": c.row, "col": c.col,
                  "epsg": sources[c.source].grid.epsg, "bounds": list(c.bounds), "n_labeled": c.n_labeled,
                  "nodata_fraction": round(c.nodata_fraction, 6),
                  "esri": f"{c.index:0{ESRI_NAME_DIGITS}d}.tif" if "esri" in params.layouts else None,
                  "terratorch_stem": stems.get(str(c.index))} for c in kept]
    by_split = {s: [r["esri"] or r["terratorch_stem"] for r in chip_rows if r["split"] == s] for s in SPLITS}
    return {**split_summary, **by_split, "chip_size": params.chip_size, "stride": params.layout.stride,
            "unique_labelled_pixels": plan.unique_labelled, "block_crs": f"EPSG:{plan.ref_epsg}",
            "blocks": plan.blocks, "chips": chip_rows}


def dumps_rows(doc: dict[str, Any]) -> str:
    """JSON text of ``doc``: one line per key, and one line per element of a list of objects (the chips,
    the blocks). Readable, and written by json's C encoder (``indent`` would use the slow Python one)."""
    parts = []
    for k, v in doc.items():
        if isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            rows = ",\n  ".join(json.dumps(x) for x in v)
            parts.append(f" {json.dumps(k)}: [\n  {rows}\n ]")
        else:
            parts.append(f" {json.dumps(k)}: {json.dumps(v)}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


def _stats(kept: list[Chip], layout: BandLayout) -> tuple[dict[str, StatsAccumulator], dict[str, StatsAccumulator]]:
    """Image and label statistics accumulators per split and ``all`` (every exported chip file)."""
    acc = {s: StatsAccumulator(len(layout.ids)) for s in (*SPLITS, "all")}
    lacc = {s: StatsAccumulator(1) for s in (*SPLITS, "all")}
    for key in (*SPLITS, "all"):
        mine = [c for c in kept if key in (c.split, "all")]
        acc[key].add_many([layout.expand_stats(c.stats) for c in mine])
        lacc[key].add_many([c.label_stats for c in mine])
    return acc, lacc


def _run_export(tmp: Path, final: Path, sources: list[Source], params: ChipParams,
                label_nodata: float) -> dict[str, Any]:
    """Write the whole export into ``tmp`` (renamed to ``final`` by the caller)."""
    store_root = tmp / ESRI_DIR if "esri" in params.layouts else tmp / "_store"
    layout = _band_layout(sources, params)
    ids = list(layout.ids)
    out = Out(store_root / "images", store_root / LABEL_DIR, sources[0].grid.epsg, layout.ids, label_nodata,
              tfw="esri" in params.layouts, writer=params.chip_writer, layout=layout, stage=tmp / STAGE_DIR)
    out.images.mkdir(parents=True)
    out.labels.mkdir(parents=True)
    with ThreadPoolExecutor(max_workers=params.workers) as pool, \
            ThreadPoolExecutor(1, thread_name_prefix="split-plan") as planner:
        cands, counters, image_jobs, expected = _cut_all(out, sources, params, pool, planner)
        try:
            plan = _plan(cands, sources, params, expected)
        finally:
            for job in image_jobs:  # an image that failed to write is the error to report, if any
                job.result()
        check_plan(plan, params, sources)
        kept = write_copies(out, sources, cands, plan.copies, params.chip_size, 0, pool)
    shutil.rmtree(tmp / STAGE_DIR, ignore_errors=True)  # the per-thread folders, empty by now
    _check_train(kept, params)
    acc, lacc = _stats(kept, layout)
    counts = {s: sum(1 for c in kept if c.split == s) for s in SPLITS}
    stats = {s: acc[s].summary(ids) for s in (*SPLITS, "all")}
    label_stats = {s: lacc[s].summary(["agbd"]) for s in (*SPLITS, "all")}
    split_summary = {"fractions": list(params.split_fractions), "block_m": params.split_block_m,
                     "buffer_m": params.split_buffer_m, "seed": params.seed, "counts": counts,
                     "labelled_pixels": plan.labelled, "masked_buffer": plan.masked_buffer, "file": "split.json"}
    extra_layouts: dict[str, str] = {}
    if "esri" in params.layouts:
        meta = {"label_nodata": label_nodata, "split_summary": split_summary, "stats": stats}
        split_dirs = _write_esri(tmp, kept, sources, params, layout, acc, lacc, meta, len(kept))
        extra_layouts = {f"esri_{k}": v for k, v in split_dirs.items()}
    stems: dict[str, str] = {}
    if "terratorch" in params.layouts:
        stems = _write_terratorch(tmp / "terratorch", final / "terratorch", out, kept, sources, params, layout,
                                  stats["train"], move="esri" not in params.layouts)
    if "esri" not in params.layouts:
        shutil.rmtree(store_root)
    (tmp / "split.json").write_text(dumps_rows(_split_doc(kept, sources, params, stems, split_summary, plan)))
    dropped = {k: counters[k] for k in ("image_nodata", "unlabeled", "duplicate_overlap")}
    dropped["split_masked"] = len(cands) - len({cp[0] for cp in plan.copies})
    contract = _contract(params, sources, label_nodata, counts, stats, label_stats, plan.labelled, layout,
                         extra_layouts)
    return {"contract": contract, "n_chips": len(kept), "candidates": counters["candidates"], "dropped": dropped,
            "masked_buffer": plan.masked_buffer}


def export_chips(*, composites: Any, labels: Any, output_dir: str | os.PathLike[str],
                 params: ChipParams = ChipParams(), export_name: str = "chips",
                 overwrite: bool = False) -> ExportResult:
    """Export training chips of composite/label pairs to ``<output_dir>/<export_name>/``.

    ``composites``/``labels``: lists of COG paths, their ``composites/``/``labels/`` folders, or the flow
    output_dir holding both; paired by grid (CRS, transform, shape) and SEASON / MGRS_TILE tags, never by file name.
    Split: blocks of ``params.split_block_m`` metres, buffer ``params.split_buffer_m``; fails before writing
    when a split with a positive fraction gets no labelled pixel. Image chips: the six bands B02..B07 (+
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
            n_chips=run["n_chips"], splits=run["contract"].splits, labelled_pixels=run["contract"].labelled_pixels,
            masked_buffer=run["masked_buffer"], candidates=run["candidates"],
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
