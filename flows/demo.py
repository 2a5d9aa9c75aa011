"""``make demo``: biomass-pipeline end to end on the embedded sample world (loopback STAC, no network)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from core.constants import GRANITE_LABEL_NODATA
from flows import _env  # noqa: F401

DEMO_TRAINING = {"model": "tiny", "epochs": 20, "batch_size": 32, "lr": 3e-3, "seed": 0, "device": "auto"}


def demo_params(output_dir: str, size: str = "demo") -> dict:
    return {"output_dir": output_dir, "sample_world": {"size": size, "seed": 0},
            "gedi": {"nodata": GRANITE_LABEL_NODATA}, "training": DEMO_TRAINING}


def run_demo(output_dir: str, size: str = "demo") -> int:
    from flows.params import BiomassPipelineParams
    from flows.pipeline import biomass_pipeline
    from flows.summaries import METRIC_HEADERS, metrics_rows, totals_text

    t0 = time.perf_counter()
    params = BiomassPipelineParams.model_validate(demo_params(str(Path(output_dir).resolve()), size))
    try:
        res = biomass_pipeline(params)
    except Exception as exc:
        print(f"error: demo failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    wall = time.perf_counter() - t0
    print(f"\n=== biomass-pipeline demo finished in {wall:.0f} s ===")
    print(f"output folder      {res.output_dir}")
    for tile, c in res.composites.tiles.items():
        print(f"composite {tile}    {c.path}")
    for tile, p in res.labels.labels.items():
        print(f"labels {tile}       {p}")
    print(f"GEDI shots         {res.labels.shots}")
    print(f"chips export       {res.chips.export_dir}  {res.chips.splits}")
    print(f"checkpoint         {res.checkpoint}")
    print(f"metrics            {res.evaluation.metrics_path}")
    for tile, p in res.maps.items():
        print(f"biomass map {tile}  {p}")
    print("\nEvaluation on the test split (Mg/ha, labelled pixels):")
    print("  ".join(f"{h:>10s}" for h in METRIC_HEADERS))
    for row in metrics_rows(res.evaluation):
        print("  ".join(f"{v:>10.2f}" if isinstance(v, float) else f"{v!s:>10s}" for v in row))
    iv = res.evaluation.interval
    if iv and iv.get("coverage") is not None:
        print(f"\n{iv['level']:.0%} prediction intervals (calibrated on {iv['calibration_split']}): coverage "
              f"{iv['coverage']:.1%} of {iv['n']} {iv['split']} pixels, mean width {iv['mean_width']:.1f} Mg/ha "
              f"(they cover a GEDI-like label of a pixel, not its true AGB)")
    mrv = getattr(res, "mrv", None)  # the MRV outputs, once the pipeline returns them (flows.mrv)
    if mrv is not None and totals_text(mrv):
        print("\n" + totals_text(mrv))
    for tile, t in (res.map_vs_truth or {}).items():
        print(f"\nMap vs the sample world's truth AGB ({tile}): R² {t['r2']:.3f}, RMSE {t['rmse']:.1f} Mg/ha, "
              f"n={t['n']}")
    print(json.dumps({"wall_s": round(wall, 1), "output_dir": res.output_dir, "checkpoint": res.checkpoint,
                      "maps": res.maps}))
    return 0
