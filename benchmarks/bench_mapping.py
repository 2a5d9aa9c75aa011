"""Inference throughput of the tiled mapping (Mpx/s) on a synthetic composite.

    .venv/bin/python benchmarks/bench_mapping.py [--size 1344] [--model tiny] [--device cpu|cuda]

Times ``training.mapping.tiled_predict`` (224 px crops every 192 px, overlaps averaged, as granite) and,
as the in-process baseline, the same model on non-overlapping crops (stride 224): the ratio shows the cost
of the overlap ((224/192)^2 = 1.36 x more crops in theory). Also times ``predict_map`` end to end (read
COG, normalise, infer, write COG). Writes ``benchmarks/results/bench_mapping_<device>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.constants import GRANITE_LABEL_NODATA, IMAGE_NODATA  # noqa: E402
from training.checkpoint import save_checkpoint  # noqa: E402
from training.mapping import predict_map, tiled_predict  # noqa: E402
from training.model import build_model  # noqa: E402


def write_composite(path: Path, size: int) -> None:
    import rasterio
    from affine import Affine

    rng = np.random.default_rng(0)
    data = (1000 + 300 * rng.standard_normal((7, size, size))).astype(np.float32)
    data[:, :50, :50] = IMAGE_NODATA
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=7, dtype="float32",
                       crs="EPSG:32610", transform=Affine(30, 0, 500000, 0, -30, 4000000), nodata=IMAGE_NODATA,
                       tiled=True) as dst:
        dst.write(data)
        for i, name in enumerate(["B02", "B03", "B04", "B05", "B06", "B07", "count"], 1):
            dst.set_band_description(i, name)
        dst.update_tags(MGRS_TILE="10TEK")


def main() -> int:
    ap = argparse.ArgumentParser(description="tiled mapping throughput")
    ap.add_argument("--size", type=int, default=1344, help="composite edge in px (demo world: 1344)")
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    net = build_model(args.model).eval()
    image = np.random.default_rng(1).standard_normal((6, args.size, args.size)).astype(np.float32)
    mpx = args.size**2 / 1e6
    res = {"model": args.model, "device": str(device), "size": args.size, "threads": torch.get_num_threads()}
    for name, stride in (("stride192_overlap_avg", 192), ("stride224_no_overlap", 224)):
        tiled_predict(net, image[:, :224, :224], crop=224, stride=stride, device=device)  # warm-up
        t = time.perf_counter()
        tiled_predict(net, image, crop=224, stride=stride, batch_size=args.batch_size, device=device)
        dt = time.perf_counter() - t
        res[name] = {"seconds": dt, "mpx_per_s": mpx / dt}
    with tempfile.TemporaryDirectory() as tmp:
        comp = Path(tmp) / "composite.tif"
        write_composite(comp, args.size)
        ck = save_checkpoint(Path(tmp) / "m.ckpt", model=net, bands=["B02", "B03", "B04", "B05", "B06", "B07"],
                             norm_mean=[1000.0] * 6, norm_std=[300.0] * 6, image_nodata=IMAGE_NODATA, label_nodata=GRANITE_LABEL_NODATA,
                             label_mean=100.0)
        t = time.perf_counter()
        out = predict_map(checkpoint=str(ck), composite=str(comp), output_dir=tmp, device=str(device),
                          batch_size=args.batch_size, cpu_threads=torch.get_num_threads())
        res["predict_map_end_to_end"] = {"seconds": time.perf_counter() - t, "inference_mpx_per_s": out.mpx_per_s}
    res["ratio_overlap_vs_no_overlap_time"] = (res["stride192_overlap_avg"]["seconds"]
                                               / res["stride224_no_overlap"]["seconds"])
    out_path = ROOT / "benchmarks" / "results" / f"bench_mapping_{device.type}.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(res, indent=2))
    print(f"{args.model} on {device}, {args.size} x {args.size} px ({mpx:.2f} Mpx), {res['threads']} threads")
    print(f"  tiled 224/192 + averaging : {res['stride192_overlap_avg']['mpx_per_s']:.3f} Mpx/s")
    print(f"  baseline 224/224 no overlap: {res['stride224_no_overlap']['mpx_per_s']:.3f} Mpx/s")
    print(f"  ratio time overlap/no-overlap {res['ratio_overlap_vs_no_overlap_time']:.2f} (theory 1.36 + edges)")
    print(f"  predict_map end to end {res['predict_map_end_to_end']['seconds']:.1f} s -> {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
