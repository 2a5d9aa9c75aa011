"""Parity of ``training.model`` with TerraTorch's own granite model (run with the interop venv).

    .interop-venv/bin/python scripts/terratorch_parity.py [--out benchmarks/results/terratorch_parity.json]

Builds TerraTorch's model (EncoderDecoderFactory: prithvi_swin_B + UperNetDecoder(32) + regression head
with 2 learned upscales, ReLU; as granite-geospatial-biomass configures it), randomises every float
parameter and buffer (BatchNorm statistics included), saves its state dict Lightning-style (``model.``
prefix), loads that file into this project's model through ``training.checkpoint``-equivalent strict
loading, and compares outputs on random inputs in eval mode (float32, CPU). Also for a small Swin
(the ``tiny`` preset) and odd input sizes (padding paths). Needs only the interop venv (torch + terratorch).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from terratorch.models import EncoderDecoderFactory  # noqa: E402

from training.model import PRESETS, build_model, count_parameters  # noqa: E402

BANDS = ["BLUE", "GREEN", "RED", "NIR_NARROW", "SWIR_1", "SWIR_2"]


def terratorch_model(preset: str) -> torch.nn.Module:
    cfg = PRESETS[preset]
    extra = {}
    if preset != "swin_b":  # same backbone code with the preset's sizes
        extra = {"backbone_embed_dim": cfg.embed_dim, "backbone_depths": cfg.depths,
                 "backbone_num_heads": cfg.num_heads}
    model = EncoderDecoderFactory().build_model(
        task="regression", backbone="prithvi_swin_B", backbone_pretrained=False, backbone_bands=BANDS,
        decoder="UperNetDecoder", decoder_channels=cfg.decoder_channels,
        head_final_act="torch.nn.ReLU", head_learned_upscale_layers=2, head_dropout=0.16, **extra,
    )
    return model


def randomise(model: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in list(model.state_dict().items()):
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
            elif name.endswith(("norm.weight", "bn.weight", "norm1.weight", "norm2.weight")):
                t.copy_(1.0 + 0.1 * torch.randn(t.shape, generator=gen))
            else:
                t.copy_(0.05 * torch.randn(t.shape, generator=gen))
        head = model.head.head[-1]  # final 1x1 conv: keep most outputs above the ReLU so they are compared
        head.weight.mul_(20.0)
        head.bias.fill_(2.0)


def compare(preset: str, sizes: list[tuple[int, int]], tmp: Path, seed: int = 0) -> dict:
    tt = terratorch_model(preset).eval()
    randomise(tt, seed)
    path = tmp / f"terratorch_{preset}.ckpt"
    torch.save({"state_dict": {"model." + k: v for k, v in tt.state_dict().items()}}, path)
    ours = build_model(preset).eval()
    state = torch.load(path, weights_only=True)["state_dict"]
    state = {k.removeprefix("model."): v for k, v in state.items()}
    missing = sorted(set(ours.state_dict()) - set(state))
    unexpected = sorted(set(state) - set(ours.state_dict()))
    ours.load_state_dict(state, strict=True)
    res = {"preset": preset, "terratorch_parameters": sum(p.numel() for p in tt.parameters()),
           "our_parameters": count_parameters(ours), "missing": missing, "unexpected": unexpected, "sizes": []}
    gen = torch.Generator().manual_seed(seed + 1)
    for h, w in sizes:
        x = torch.randn(2, 6, h, w, generator=gen)
        with torch.no_grad():
            a = tt(x).output
            b = ours(x)
        diff = (a - b).abs()
        res["sizes"].append({"input": [2, 6, h, w], "output_shape": list(b.shape),
                             "max_abs_diff": float(diff.max()),
                             "rel_l2": float((a - b).norm() / a.norm().clamp_min(1e-12)),
                             "output_mean": float(a.mean()), "output_max": float(a.max()),
                             "positive_fraction": float((a > 0).float().mean())})
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "terratorch_parity.json"))
    ap.add_argument("--tmp", default=None, help="folder for the saved checkpoints (default: a temp folder)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    import importlib.metadata as md

    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(args.tmp or tmp_dir)
        results = {"terratorch": md.version("terratorch"), "torch": torch.__version__, "runs": [
            compare("swin_b", [(224, 224)], tmp),
            compare("tiny", [(224, 224), (100, 60), (37, 45)], tmp),
        ]}
    results["seconds"] = time.perf_counter() - t0
    results["ok"] = all(not r["missing"] and not r["unexpected"] and r["terratorch_parameters"] == r["our_parameters"]
                        and all(s["rel_l2"] < 1e-4 for s in r["sizes"]) for r in results["runs"])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    for r in results["runs"]:
        for s in r["sizes"]:
            print(f"{r['preset']:7s} input {s['input']}: max |diff| {s['max_abs_diff']:.3e} Mg/ha, rel L2 "
                  f"{s['rel_l2']:.2e} (output mean {s['output_mean']:.3f}, {100 * s['positive_fraction']:.0f}% > 0); params {r['our_parameters']} vs "
                  f"TerraTorch {r['terratorch_parameters']}; missing {len(r['missing'])}, unexpected "
                  f"{len(r['unexpected'])}")
    print(json.dumps({"ok": results["ok"], "out": args.out}))
    return 0 if results["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
