"""Markdown artifacts summarising each stage's typed result in the Prefect UI (tables and quicklooks)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from chips.manifest import ExportResult
from core import quicklooks as ql
from flows import artifacts as art
from flows.results import HlsStageResult, MappingResult, RunPlan
from labels.contracts import LabelsResult
from training.change import ChangeResult
from training.evaluate import EvalResult
from training.mapping import MapResult
from training.train import TrainResult

if TYPE_CHECKING:  # flows.mrv imports this module
    from flows.mrv import MrvResult

METRIC_HEADERS = ["model", "RMSE", "MAE", "bias", "R²", "RMSE 0-100", "100-200", "200-300", "0-300"]


def _skip_note(cached: bool) -> str:
    return "\n\n_Skipped: a finished result for the same inputs was found (force=true re-runs)._\n" if cached else ""


def world(manifest: dict[str, Any], size: str, seed: int) -> None:
    art.markdown("sample-world", f"# Sample world `{size}` (seed {seed})\n\n"
                 + art.table_md(["key", "value"], [(k, manifest.get(k)) for k in ("aoi", "tiles", "year", "years", "gedi_years")]))


def composites(res: HlsStageResult, cached: bool) -> None:
    rows, skipped, images = [], [], []
    for tile, t in res.composites.tiles.items():
        stats = t.valid_obs or {}
        rows.append((tile, len(t.scenes_used), len(t.scenes_skipped), stats.get("mean", ""),
                     stats.get("nodata_fraction", ""), t.path))
        skipped += [(tile, s.get("id", ""), s.get("asset", ""), s.get("reason", "")) for s in t.scenes_skipped]
        png = art.safe_quicklook(ql.true_colour, t.path, str(Path(t.path).with_suffix(".quicklook.png")))
        if png:
            images.append(art.image_markdown(f"{tile} true colour", png))
    s = res.search
    text = (f"# HLS composites {res.composites.season}\n\nScenes found: {s.n_items}"
            f" (dropped by cloud filter: {s.dropped_cloud}, duplicate ids: {s.duplicates})" + _skip_note(cached)
            + "\n\n" + art.table_md(["tile", "scenes used", "skipped", "mean valid obs", "nodata fraction", "path"], rows)
            + ("\n\n## Skipped scenes\n\n" + art.table_md(["tile", "scene", "asset", "reason"], skipped) if skipped else "")
            + "\n\n" + "\n".join(images))
    art.markdown("hls-composite-summary", text, "Composites per MGRS tile")


def labels(res: LabelsResult, cached: bool) -> None:
    total = res.filter_counts.get("total", {})
    per = res.filter_counts.get("per_granule", {})
    prow = [(g, *[c.get(k, "") for k in total]) for g, c in per.items()]
    images = []
    for tile, path in res.labels.items():
        png = art.safe_quicklook(ql.band, path, str(Path(path).with_suffix(".coverage.png")),
                                 title=f"{tile} GEDI AGBD labels", cmap="YlGn", kind="labels")
        if png:
            images.append(art.image_markdown(f"{tile} label coverage", png))
        png = art.safe_quicklook(ql.label_density, path, str(Path(path).with_suffix(".density.png")))
        if png:
            images.append(art.image_markdown(f"{tile} GEDI shot density", png))
    text = ("# GEDI L4A labels" + _skip_note(cached) + "\n\n## Shots removed by each filter (total)\n\n"
            + art.table_md(["filter", "shots"], list(total.items()))
            + ("\n\n## Per granule\n\n" + art.table_md(["granule", *list(total)], prow) if prow else "")
            + f"\n\nGeoParquet: `{res.shots}`\n\n"
            + ("\n\n## Skipped granules\n\n" + art.table_md(["granule", "reason"],
               [(s.get("granule", ""), s.get("reason", "")) for s in res.granules_skipped])
               if res.granules_skipped else "")
            + "\n\n" + "\n".join(images))
    art.markdown("gedi-labels-summary", text, "GEDI filter table and label coverage")


def chips(res: ExportResult, cached: bool) -> None:
    train = res.stats["train"]  # per-band lists, training split
    srows = [(b, *(train[k][i] for k in ("min", "max", "mean", "std"))) for i, b in enumerate(train["bands"])]
    rows = [(s, n, res.labelled_pixels.get(s, 0)) for s, n in res.splits.items()]
    text = ("# Training chips" + _skip_note(cached) + "\n\n" + art.table_md(["split", "chips", "labelled pixels"], rows)
            + f"\n\n{res.masked_buffer} labelled pixels masked in every split by the buffer between splits."
            + "\n\n## Train statistics (HLS units x 10000)\n\n"
            + art.table_md(["band", "min", "max", "mean", "std"], srows) + f"\n\nExport: `{res.export_dir}`\n")
    art.markdown("export-chips-summary", text, "Chips per split")


def training(res: TrainResult, cached: bool) -> None:
    rows = [(h.get("epoch"), h.get("train_loss"), h.get("val_loss"), h.get("lr"), h.get("img_per_s"))
            for h in res.history]
    text = ("# Training" + _skip_note(cached) + "\n\n"
            + art.table_md(["epoch", "train loss", "val loss", "lr", "img/s"], rows)
            + f"\n\nBest checkpoint: `{res.best_checkpoint}`\n")
    art.markdown("train-model-summary", text, "Training history")


def metrics_rows(res: EvalResult) -> list[tuple[Any, ...]]:
    rows = []
    for name in ("model", "baseline_mean", "baseline_ridge"):
        m = res.metrics.get(name)
        if isinstance(m, dict):
            binned = m.get("binned_rmse", {})
            rows.append((name, m.get("rmse"), m.get("mae"), m.get("bias"), m.get("r2"),
                         *((binned.get(b) or {}).get("rmse") for b in ("0-100", "100-200", "200-300", "0-300"))))
    return rows


def interval_text(res: EvalResult) -> str:
    """One paragraph on the prediction intervals' empirical coverage (empty without intervals)."""
    iv = res.interval
    if not iv or iv.get("coverage") is None:
        return ""
    where = "the calibration split itself (in-sample)" if iv["in_sample"] else f"the {iv['split']} split"
    return (f"**Prediction intervals** ({iv['level']:.0%}, {iv['method']}; calibrated on {iv['calibration_pixels']} "
            f"{iv['calibration_split']} pixels): coverage **{iv['coverage']:.1%}** of {iv['n']} labelled pixels of "
            f"{where}, mean width {iv['mean_width']:.1f} Mg/ha. An interval covers {iv['covers']}.\n\n")


def evaluation(res: EvalResult, cached: bool) -> None:
    images = [art.image_markdown(Path(p).stem, Path(p)) for p in res.plots.values() if Path(p).is_file()]
    text = ("# Evaluation" + _skip_note(cached) + "\n\nMg/ha over labelled pixels of the split.\n\n"
            + art.table_md(METRIC_HEADERS, metrics_rows(res))
            + ("\n\n## Per season\n\n" + art.table_md(PER_SEASON_HEADERS, per_season_rows(res))
               if res.per_season else "") + "\n\n" + interval_text(res) + "\n".join(images))
    art.markdown("evaluate-model-summary", text, "Metrics against baselines")


def map_quicklooks(map_path: str) -> list[tuple[str, Path]]:
    """(title, PNG) of a map: biomass, and the interval width when the map has interval bands."""
    out = []
    png = art.safe_quicklook(ql.band, map_path, str(Path(map_path).with_suffix(".preview.png")),
                             title=f"{Path(map_path).stem}: AGB", cmap="YlGn")
    if png:
        out.append(("biomass map", png))
    import rasterio

    with rasterio.open(map_path) as ds:
        has_interval = "agb_upper" in ds.descriptions
    if has_interval:
        png = art.safe_quicklook(ql.interval_width, map_path, str(Path(map_path).with_suffix(".interval.png")))
        if png:
            out.append(("prediction interval width", png))
    return out


def biomass_map(res: MapResult, cached: bool) -> None:
    images = "".join(art.image_markdown(t, p) for t, p in map_quicklooks(res.map))
    art.markdown("predict-map-summary", "# Biomass map" + _skip_note(cached) + f"\n\n`{res.map}`\n\n" + images,
                 "Biomass map preview")


def plan(res: RunPlan) -> None:
    yp = res.years
    rows = [(y, c.start, c.end, c.rule, "" if c.mean_cloud_cover is None else c.mean_cloud_cover,
             "" if c.gedi_days is None else c.gedi_days,
             ", ".join(r for r, ys in (("train", yp.training_years), ("map", yp.map_years)) if int(y) in ys))
            for y, c in sorted(res.seasons.items())]
    text = (f"# Run plan (requested year {yp.requested_year})\n\nTraining seasons: {yp.training_years} "
            f"({yp.training_rule}); map years: {yp.map_years}\n\n"
            + art.table_md(["year", "start", "end", "window rule", "mean cloud %", "GEDI days", "use"], rows)
            + "".join(f"\n\n- {n}" for n in yp.notes))
    art.markdown("run-plan", text, "Years, windows and why")


CHANGE_HEADERS = ["from", "to", "tile", "pixels in area", "valid both", "mean from", "mean to",
                  "mean change (Mg/ha)", "total change (Mg)", "loss px", "gain px"]


def change_rows(changes: list[ChangeResult], area_only: bool = False) -> list[tuple[Any, ...]]:
    rows = []
    for c in changes:
        for name, st in [*([] if area_only else c.tiles.items()), ("area", c.area)]:
            rows.append((c.year_from, c.year_to, name, st.n_area, st.n_valid, st.mean_from, st.mean_to,
                         st.mean_change, st.total_change_mg, st.n_loss, st.n_gain))
    return rows


def change_quicklook(raster: str, title: str) -> Path | None:
    """``<raster>.change.png`` (diverging colours, Mg/ha), rendered when missing or older than the raster."""
    png = Path(raster).with_suffix(".change.png")
    if png.is_file() and png.stat().st_mtime_ns >= Path(raster).stat().st_mtime_ns:
        return png
    return art.safe_quicklook(ql.change, raster, str(png), title=title)


def mapping(res: MappingResult) -> None:
    rows = [(y, tile, p, *(((m.map_vs_truth or {}).get(tile) or {}).get(k, "") for k in ("r2", "rmse")))
            for y, m in sorted(res.years.items()) for tile, p in m.maps.items()]
    images = []
    for c in res.change:
        for tile, path in c.rasters.items():
            png = change_quicklook(path, f"{tile}: AGB change {c.year_from}-{c.year_to}")
            if png:
                images.append(art.image_markdown(f"{tile} change {c.year_from} to {c.year_to}", png))
    text = (f"# Biomass maps and change\n\nModel: `{res.checkpoint}`\n\n"
            + art.table_md(["year", "tile", "map", "R² vs truth", "RMSE vs truth"], rows)
            + ("\n\n## Change between consecutive map years (Mg/ha, Mg over the area's valid pixels)\n\n"
               + art.table_md(CHANGE_HEADERS, change_rows(res.change)) if res.change else "")
            + ("\n\n## The same on the sample world's true AGB\n\n"
               + art.table_md(CHANGE_HEADERS, change_rows(res.truth_change, area_only=True))
               if res.truth_change else "")
            + "".join(f"\n\n- {n}" for c in res.change for n in c.notes) + "\n\n" + "\n".join(images))
    art.markdown("biomass-change", text, "Maps of every year and the change between them")


def per_season_rows(res: EvalResult) -> list[tuple[Any, ...]]:
    rows = []
    for season, m in sorted(res.per_season.items()):
        for name in ("model", "baseline_mean", "baseline_ridge"):
            if isinstance(m.get(name), dict):
                x = m[name]
                rows.append((season, name, m.get("n_pixels"), x.get("rmse"), x.get("mae"), x.get("bias"), x.get("r2")))
    return rows


def pipeline(res: Any) -> None:
    rows = [("composites", ", ".join(p for c in res.composites.values() for p in c.paths)),
            ("labels", ", ".join(p for lab in res.labels.values() for p in lab.labels.values())),
            ("chips", res.chips.export_dir), ("checkpoint", res.checkpoint), ("model record", res.model.checkpoint),
            ("metrics", res.evaluation.metrics_path),
            ("maps", ", ".join(p for m in res.mapping.years.values() for p in m.maps.values()))]
    yp = res.plan.years
    text = ("# Biomass pipeline\n\n"
            f"Trained on {yp.training_years} ({yp.training_rule}); mapped {yp.map_years}.\n\n## Outputs\n\n"
            + art.table_md(["output", "path"], rows)
            + f"\n\n## Evaluation ({res.evaluation.split} split, Mg/ha)\n\n"
            + art.table_md(METRIC_HEADERS, metrics_rows(res.evaluation))
            + ("\n\n## Per training season\n\n" + art.table_md(PER_SEASON_HEADERS, per_season_rows(res.evaluation))
               if res.evaluation.per_season else "")
            + ("\n\n## Change\n\n" + art.table_md(CHANGE_HEADERS, change_rows(res.mapping.change))
               if res.mapping.change else "") + _totals_md(res.mrv))
    art.markdown("biomass-pipeline-summary", text, "Outputs and metrics of the whole run")


def _totals_md(res: MrvResult | None) -> str:
    """The totals and change tables of an MRV result (empty without totals)."""
    rows, changes = totals_rows(res) if res is not None else ([], [])
    return ("\n\n## Area totals (Mg)\n\n" + art.table_md(TOTALS_HEADERS, rows)
            + ("\n\n" + art.table_md(TOTAL_CHANGE_HEADERS, changes) if changes else "")) if rows else ""


PER_SEASON_HEADERS = ["season", "model", "pixels", "RMSE", "MAE", "bias", "R²"]


TOTALS_HEADERS = ["year", "AGB (Mg)", "lower", "upper", "carbon (Mg C)", "lower", "upper", "area (ha)",
                  "mean (Mg/ha)"]
TOTAL_CHANGE_HEADERS = ["change", "AGB (Mg)", "lower", "upper", "carbon (Mg C)", "lower", "upper"]
TOTALS_METHOD = ("Totals: map sum plus the calibration's per-bin mean residual (bias correction), interval from "
                 "the calibration residuals: errors fully correlated within {block:g} m blocks and independent "
                 "between them, plus the uncertainty of the bias correction (cluster-robust, fully correlated). "
                 "Carbon = {cf:g} x AGB (IPCC default 0.47). The intervals describe GEDI L4A-like AGB; a bias of "
                 "GEDI L4A itself is not included. Change: random parts independent between years.")


def totals_rows(res: MrvResult) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """(totals rows, change rows) of an :class:`flows.mrv.MrvResult` for tables and the CLI."""
    rows = [(t.year, t.agb_mg.value, t.agb_mg.lower, t.agb_mg.upper, t.carbon_mg.value, t.carbon_mg.lower,
             t.carbon_mg.upper, t.area_ha, t.mean_agb_mg_ha) for t in res.totals]
    changes = [(f"{c.from_year} -> {c.to_year}", c.agb_mg.value, c.agb_mg.lower, c.agb_mg.upper, c.carbon_mg.value,
                c.carbon_mg.lower, c.carbon_mg.upper) for c in res.changes]
    return rows, changes


def totals_text(res: MrvResult) -> str:
    """Plain-text totals and changes (the CLI summary)."""
    rows, changes = totals_rows(res)
    if not rows:
        return ""
    level = res.totals[0].agb_mg.level
    lines = [f"Area totals ({level:.0%} intervals):"]
    lines += [f"  {r[0]}: AGB {r[1]:,.0f} Mg [{r[2]:,.0f}, {r[3]:,.0f}]; carbon {r[4]:,.0f} Mg C [{r[5]:,.0f}, "
              f"{r[6]:,.0f}] over {r[7]:,.0f} ha ({r[8]:.1f} Mg/ha)" for r in rows]
    lines += [f"  change {c[0]}: AGB {c[1]:+,.0f} Mg [{c[2]:+,.0f}, {c[3]:+,.0f}]; carbon {c[4]:+,.0f} Mg C "
              f"[{c[5]:+,.0f}, {c[6]:+,.0f}]" for c in changes]
    return "\n".join(lines)


def mrv(res: MrvResult) -> None:
    """Artifact: totals and change tables with the method, the catalog and its validation, change quicklooks."""
    rows, changes = totals_rows(res)
    text = "# Area totals and change\n\n"
    if rows:
        t0 = res.totals[0]
        text += (art.table_md(TOTALS_HEADERS, rows) + "\n\n"
                 + (art.table_md(TOTAL_CHANGE_HEADERS, changes) + "\n\n" if changes else "")
                 + TOTALS_METHOD.format(block=t0.block_m, cf=t0.carbon_fraction) + "\n\n")
    if res.catalog is not None:
        ok = res.validation is not None and res.validation.ok
        text += (f"STAC catalog: `{res.catalog.catalog}` ({sum(len(v) for v in res.catalog.items.values())} items; "
                 f"{'validates' if ok else 'DOES NOT validate'} against the STAC schemas)\n\n")
    text += "".join(f"- {n}\n" for n in res.notes)
    text += "\n".join(art.image_markdown(Path(p).stem, p) for p in res.quicklooks)
    art.markdown("mrv-summary", text, "Area totals, change and the run catalog")
