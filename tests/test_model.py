"""The model: granite architecture names/shapes, loading foreign state dicts, small presets, losses."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from training.checkpoint import CheckpointError, extract_state_dict, load_model, load_state_dict_into
from training.losses import masked_loss
from training.model import PatchMerging, build_model, count_parameters, freeze_backbone

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / \
    "granite_swin_b_upernet_state_dict.tsv"
GRANITE_PARAMETERS = 87_382_105


def _reference() -> dict[str, tuple[list[int], str]]:
    if not REFERENCE.is_file():
        pytest.skip(f"{REFERENCE} absent")
    ref = {}
    for line in REFERENCE.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, shape, dtype = line.split("\t")
        ref[name] = ([int(v) for v in shape.strip("[]").split(",") if v.strip()], dtype)
    return ref


def test_swin_b_equals_granite_reference_names_shapes_and_count():
    ref = _reference()
    net = build_model("swin_b")
    sd = net.state_dict()
    assert count_parameters(net) == GRANITE_PARAMETERS
    assert set(sd) == set(ref)
    assert {n: list(t.shape) for n, t in sd.items()} == {n: s for n, (s, _) in ref.items()}
    assert {n: str(t.dtype) for n, t in sd.items()} == {n: d for n, (_, d) in ref.items()}


def test_lightning_state_dict_from_reference_loads_with_no_missing_or_unexpected_key(tmp_path):
    ref = _reference()
    gen = torch.Generator().manual_seed(0)
    state = {}
    for name, (shape, dtype) in ref.items():
        if dtype == "torch.int64":
            state["model." + name] = torch.randint(0, 169, shape, generator=gen, dtype=torch.int64)
        else:
            state["model." + name] = torch.randn(shape, generator=gen)
    path = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": state, "epoch": 3, "hyper_parameters": {"lr": 1e-4}}, path)
    net, info, report = load_model(path, model="swin_b")
    assert report.missing == [] and report.unexpected == [] and report.mismatched == []
    assert report.loaded == len(ref)
    assert info["foreign"] is True
    w = net.state_dict()["encoder.stages_2.blocks.17.attn.w_msa.qkv.weight"]
    assert torch.equal(w, state["model.encoder.stages_2.blocks.17.attn.w_msa.qkv.weight"])


def test_partial_load_is_refused_unless_asked():
    net = build_model("tiny")
    state = {k: v.clone() for k, v in net.state_dict().items() if not k.startswith("head.")}
    state["aux_heads.x.weight"] = torch.zeros(2)
    with pytest.raises(CheckpointError, match="missing.*unexpected"):
        load_state_dict_into(build_model("tiny"), state)
    report = load_state_dict_into(build_model("tiny"), state, allow_partial=True)
    assert report.unexpected == ["aux_heads.x.weight"]
    assert report.missing and all(k.startswith("head.") for k in report.missing)


def test_prefixes_are_stripped_and_unflattened_stage_names_mapped():
    state = {"model.encoder.stages.0.norm.weight": torch.ones(3), "module.decoder.x": torch.ones(1),
             "not_a_tensor": 5}
    assert set(extract_state_dict({"state_dict": state})) == {"encoder.stages_0.norm.weight", "decoder.x"}


def test_unreadable_and_missing_checkpoints_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "none.ckpt", model="tiny")
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.ckpt"):
        load_model(bad, model="tiny")


@pytest.mark.parametrize("shape", [(2, 6, 64, 64), (1, 6, 100, 60), (1, 4, 37, 45)])
def test_tiny_forward_keeps_input_size_and_is_non_negative(shape):
    torch.manual_seed(0)
    net = build_model("tiny", in_channels=shape[1]).eval()
    with torch.no_grad():
        out = net(torch.randn(shape))
    assert out.shape == (shape[0], shape[2], shape[3])
    assert torch.isfinite(out).all() and (out >= 0).all()


def test_patch_merging_uses_unfold_channel_order():
    torch.manual_seed(0)
    pm = PatchMerging(8, 16)
    x = torch.randn(2, 6 * 4, 8)  # B, H*W, C with H=6, W=4
    out, hw = pm(x, (6, 4))
    grid = x.view(2, 6, 4, 8).permute(0, 3, 1, 2)
    ref = pm.reduction(pm.norm(F.unfold(grid, kernel_size=2, stride=2).transpose(1, 2)))
    assert hw == (3, 2)
    assert torch.allclose(out, ref, atol=1e-6)


def test_freeze_backbone_stops_encoder_gradients():
    net = build_model("tiny")
    frozen = freeze_backbone(net)
    assert frozen == sum(p.numel() for p in net.encoder.parameters())
    net(torch.randn(2, 6, 64, 64)).mean().backward()
    assert all(p.grad is None for p in net.encoder.parameters())
    assert any(p.grad is not None for p in net.decoder.parameters())


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("mse", 13.0 / 3), ("rmse", (13.0 / 3) ** 0.5), ("mae", 5.0 / 3), ("huber", (0.5 * 9 + 0.5 * 4) / 3)],
)
def test_losses_average_over_labelled_pixels_only(kind, expected):
    pred = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    label = torch.tensor([[4.0, 2.0, 1.0, -1.0]])  # last pixel unlabelled
    loss, n = masked_loss(pred, label, kind, huber_delta=10.0)
    assert n == 3
    assert float(loss) == pytest.approx(expected, rel=1e-4)


def test_batch_without_labels_gives_zero_loss_and_finite_gradients():
    pred = torch.randn(2, 4, 4, requires_grad=True)
    loss, n = masked_loss(pred, torch.full((2, 4, 4), -1.0), "rmse")
    loss.backward()
    assert n == 0 and loss.item() == 0.0
    assert torch.isfinite(pred.grad).all() and float(pred.grad.abs().sum()) == 0.0
