"""Training throughput (img/s) of the swin_b model at 224 x 224, and of the data path that feeds it.

    .venv/bin/python benchmarks/bench_train.py [--device cpu|cuda] [--batch-size N] [--steps N] [--compile]

Model img/s: forward + backward + AdamW step on synthetic in-memory batches (no data loading), float32
on CPU; bf16 autocast + channels-last (+ torch.compile with --compile) on CUDA. Data path img/s: batches
assembled from a packed in-memory cache with random crops, flips and rotations (``training.train.Batcher``),
plus the host-to-device copy from pinned memory on CUDA. Ratios are printed against the ``tiny`` preset
measured in the same process (contention on a shared machine moves ratios less than absolute figures).
Writes ``benchmarks/results/bench_train_<device>.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.constants import GRANITE_LABEL_NODATA  # noqa: E402
from training.data import SplitArrays  # noqa: E402
from training.losses import masked_loss  # noqa: E402
from training.model import build_model, count_parameters  # noqa: E402
from training.train import Batcher  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def model_img_per_s(preset: str, device: torch.device, batch: int, steps: int, size: int, compile_: bool
                    ) -> dict:
    torch.manual_seed(0)
    net = build_model(preset).to(device).train()
    if device.type == "cuda":
        net = net.to(memory_format=torch.channels_last)
    runner = torch.compile(net) if compile_ else net
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    x = torch.randn(batch, 6, size, size, device=device)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.rand(batch, size, size, device=device) * 200
    y[:, ::2] = GRANITE_LABEL_NODATA  # sparse labels, as GEDI

    def step() -> float:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            pred = runner(x)
        loss, _ = masked_loss(pred.float(), y, "rmse")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        return loss.item()

    t0 = time.perf_counter()
    for _ in range(2 if compile_ else 1):
        step()  # warm-up (and compilation)
    sync(device)
    warm = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - t)
    med = float(np.median(times))
    mem = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    return {"preset": preset, "parameters": count_parameters(net), "batch": batch, "size": size,
            "step_s_median": med, "img_per_s": batch / med, "warmup_s": warm, "steps": steps,
            "max_gpu_mem_gib": mem, "compile": compile_}


def loader_img_per_s(device: torch.device, batch: int, size: int, n_chips: int, seconds: float) -> dict:
    rng = np.random.default_rng(0)
    data = SplitArrays(rng.standard_normal((n_chips, 6, size, size), dtype=np.float32),
                       np.where(rng.random((n_chips, size, size)) < 0.02, 100.0, GRANITE_LABEL_NODATA).astype(np.float32),
                       None, [f"c{i}" for i in range(n_chips)], 0.0, True)
    b = Batcher(data, batch, size, augment=True)
    gen = torch.Generator().manual_seed(0)
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        x, y = b.make(b.epoch_batches(gen, 1)[0], gen)
        if device.type == "cuda":
            x = x.pin_memory().to(device, non_blocking=True)
            y = y.pin_memory().to(device, non_blocking=True)
            sync(device)
        n += x.shape[0]
    return {"img_per_s": n / (time.perf_counter() - t0), "batch": batch, "n_chips_cached": n_chips}


def main() -> int:
    ap = argparse.ArgumentParser(description="training throughput benchmark")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch-size", type=int, default=None, help="default 64 on CUDA, 4 on CPU (memory)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = device.type == "cuda"
    batch = args.batch_size or (64 if cuda else 4)
    steps = args.steps or (20 if cuda else 3)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    res = {"device": torch.cuda.get_device_name() if cuda else platform.processor() or "cpu",
           "torch": torch.__version__, "threads": torch.get_num_threads(),
           "precision": "bf16 autocast, channels_last" if cuda else "float32"}
    res["swin_b"] = model_img_per_s("swin_b", device, batch, steps, args.size, args.compile and cuda)
    res["tiny"] = model_img_per_s("tiny", device, batch, steps, args.size, args.compile and cuda)
    res["loader"] = loader_img_per_s(device, batch, args.size, 256 if cuda else 32, 5.0)
    res["ratios"] = {"swin_b_vs_tiny": res["swin_b"]["img_per_s"] / res["tiny"]["img_per_s"],
                     "loader_vs_swin_b": res["loader"]["img_per_s"] / res["swin_b"]["img_per_s"]}
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"bench_train_{device.type}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    for key in ("swin_b", "tiny"):
        r = res[key]
        print(f"{key:7s} train {r['img_per_s']:8.1f} img/s  (batch {r['batch']}, {r['size']} px, "
              f"step {r['step_s_median'] * 1000:.0f} ms, {r['parameters']:,} params)")
    print(f"loader  {res['loader']['img_per_s']:8.1f} img/s  (packed cache, crops/flips/rot90"
          f"{', pinned H2D copy' if cuda else ''})")
    print(f"ratios  swin_b/tiny {res['ratios']['swin_b_vs_tiny']:.3f}   loader/swin_b "
          f"{res['ratios']['loader_vs_swin_b']:.1f}  -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
