"""``make demo``: biomass-pipeline end to end on the embedded sample world (loopback STAC API and Earthdata
emulator: every COG and granule is read through Earthdata Login with a demo token; no network).

The demo world has scenes for 2022, 2023 and 2024 and GEDI shots for 2022 and 2024 only (2023: the
instrument was stored on the ISS): the demo trains one model on the 2022 and 2024 seasons, maps all three
years and prints the change between them."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.constants import GRANITE_LABEL_NODATA
from flows import _env  # noqa: F401

if TYPE_CHECKING:
    from flows.mrv import MrvResult

# 48-px crops: the same test metrics as 64 px on the demo world (RMSE 70.5 vs 70.9 Mg/ha, R² 0.77 both,
# measured 2026-12-01) for ~16 % less training time; fewer epochs or smaller batches cost accuracy (12 cosine
# epochs: R² 0.57; batch 16: 0.74).
DEMO_TRAINING = {"model": "tiny", "epochs": 20, "batch_size": 32, "lr": 3e-3, "crop_size": 48, "seed": 0,
                 "device": "auto"}


DEMO_MAP_YEARS = {"demo": [2022, 2023, 2024], "small": [2024, 2025]}  # the years each world has scenes for


def demo_params(output_dir: str, size: str = "demo") -> dict:
    return {"output_dir": output_dir, "sample_world": {"size": size, "seed": 0},
            "map_years": DEMO_MAP_YEARS.get(size),
            "gedi": {"nodata": GRANITE_LABEL_NODATA}, "training": DEMO_TRAINING}


def _check_through_emulator(world_dir: Path, size: str) -> None:
    """Write the world (the pipeline re-uses it) and run ``check-earthdata`` against it through the
    emulator: the demo reads every COG and granule the way users read NASA's, with a demo token."""
    from flows.earthdata_check import run_check
    from sampleworld import generate_world

    generate_world(str(world_dir), size=size, seed=0)
    print("=== python -m flows check-earthdata --sample-world", world_dir, "===")
    if run_check(None, str(world_dir)) != 0:
        raise RuntimeError("the Earthdata check failed against the sample world's emulator")


def run_demo(output_dir: str, size: str = "demo") -> int:
    from flows.params import BiomassPipelineParams
    from flows.pipeline import biomass_pipeline

    t0 = time.perf_counter()
    params = BiomassPipelineParams.model_validate(demo_params(str(Path(output_dir).resolve()), size))
    try:
        _check_through_emulator(Path(output_dir).resolve() / "world", size)
        res = biomass_pipeline(params)
    except Exception as exc:
        print(f"error: demo failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    wall = time.perf_counter() - t0
    _print_result(res, wall)
    print(json.dumps({"wall_s": round(wall, 1), "output_dir": res.output_dir, "checkpoint": res.checkpoint,
                      "maps": {y: m.maps for y, m in res.mapping.years.items()},
                      "change": [c.table_csv for c in res.mapping.change],
                      "totals": res.mrv.table if res.mrv else None,
                      "catalog": res.mrv.catalog.catalog if res.mrv and res.mrv.catalog else None}))
    return 0


def _fmt(v: object, width: int = 10) -> str:
    return f"{v:>{width}.2f}" if isinstance(v, float) else f"{'' if v is None else v!s:>{width}s}"


def _print_result(res: Any, wall: float) -> None:
    from flows.summaries import CHANGE_HEADERS, METRIC_HEADERS, change_rows, metrics_rows, per_season_rows

    yp = res.plan.years
    print(f"\n=== biomass-pipeline demo finished in {wall:.0f} s ===")
    print(f"output folder      {res.output_dir}")
    print(f"trained on         {yp.training_years} ({yp.training_rule}); mapped {yp.map_years}")
    for note in yp.notes:
        print(f"  note: {note}")
    for y, c in sorted(res.plan.seasons.items()):
        print(f"season {y}        {c.start}..{c.end} ({c.rule}; GEDI days: {c.gedi_days})")
    for y, comp in sorted(res.composites.items()):
        for tile, c in comp.tiles.items():
            print(f"composite {y} {tile}  {c.path}")
    for y, lab in sorted(res.labels.items()):
        for tile, p in lab.labels.items():
            print(f"labels {y} {tile}     {p}  ({lab.n_shots} shots kept)")
    print(f"chips export       {res.chips.export_dir}  chips {res.chips.splits}  labelled pixels "
          f"{res.chips.labelled_pixels}")
    print(f"checkpoint         {res.checkpoint}  (area model: {res.output_dir}/model/current.json)")
    print(f"metrics            {res.evaluation.metrics_path}")
    print(f"\nEvaluation on the {res.evaluation.split} split (Mg/ha, labelled pixels):")
    print("  ".join(f"{h:>10s}" for h in METRIC_HEADERS))
    for row in metrics_rows(res.evaluation):
        print("  ".join(_fmt(v) for v in row))
    _print_interval(res.evaluation)
    if res.evaluation.per_season:
        print("\nPer training season (model and baselines, Mg/ha):")
        for row in per_season_rows(res.evaluation):
            print("  ".join(_fmt(v, 24 if i == 0 else 14) for i, v in enumerate(row)))
    print("\nBiomass maps:")
    for y, m in sorted(res.mapping.years.items()):
        for tile, p in m.maps.items():
            t = (m.map_vs_truth or {}).get(tile)
            vs = f"  vs truth: R² {t['r2']:.3f}, RMSE {t['rmse']:.1f} Mg/ha, n={t['n']}" if t else ""
            print(f"  {y} {tile}  {p}{vs}")
    if res.mapping.change:
        print("\nChange between consecutive map years (means Mg/ha over pixels valid in both; totals Mg):")
        print("  ".join(f"{h:>12s}" for h in CHANGE_HEADERS))
        for row in change_rows(res.mapping.change):
            print("  ".join(_fmt(v, 12) for v in row))
        for c in res.mapping.change:
            print(f"  {c.year_from}->{c.year_to}: {c.table_csv}  rasters: {', '.join(c.rasters.values())}")
    if res.mapping.truth_change:
        print("\nThe same on the sample world's true AGB (what the maps' change should show):")
        for row in change_rows(res.mapping.truth_change, area_only=True):
            print("  ".join(_fmt(v, 12) for v in row))
    if res.mrv is not None:
        _print_mrv(res.mrv)


def _print_mrv(mrv: MrvResult) -> None:
    """The totals table, the change with its interval, and the run catalog."""
    from flows.summaries import TOTAL_CHANGE_HEADERS, TOTALS_HEADERS, totals_rows

    rows, changes = totals_rows(mrv)
    if rows:
        t0 = mrv.totals[0]
        print(f"\nArea totals per map year ({t0.agb_mg.level:.0%} intervals; carbon = {t0.carbon_fraction:g} x AGB; "
              f"errors correlated within {t0.block_m:g} m blocks; see docs/mrv.md):")
        print("  ".join(f"{h:>13s}" for h in TOTALS_HEADERS))
        for r in rows:
            print("  ".join(f"{v:>13,.0f}" if isinstance(v, float) and i < 8 else _fmt(v, 13)
                            for i, v in enumerate(r)))
    if changes:
        print("\nChange of the totals between consecutive map years (Mg, same intervals):")
        print("  ".join(f"{h:>13s}" for h in TOTAL_CHANGE_HEADERS))
        for c in changes:
            print("  ".join(f"{v:>+13,.0f}" if isinstance(v, float) else f"{v!s:>13s}" for v in c))
    for note in mrv.notes:
        print(f"  note: {note}")
    if mrv.catalog is not None:
        ok = mrv.validation is not None and mrv.validation.ok
        print(f"\nSTAC catalog       {mrv.catalog.catalog}  ({sum(len(v) for v in mrv.catalog.items.values())} "
              f"items; {'validates offline' if ok else 'DOES NOT validate'})")


def _print_interval(ev: Any) -> None:
    iv = ev.interval
    if iv and iv.get("coverage") is not None:
        print(f"\n{iv['level']:.0%} prediction intervals (calibrated on {iv['calibration_split']}): coverage "
              f"{iv['coverage']:.1%} of {iv['n']} {iv['split']} pixels, mean width {iv['mean_width']:.1f} Mg/ha "
              f"(they cover a GEDI-like label of a pixel, not its true AGB)")
