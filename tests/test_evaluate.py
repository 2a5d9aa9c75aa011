"""Evaluation: metric functions (table tests), baselines, plots, zero-shot on a foreign checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sampleworld.synthetic.export import write_synthetic_export
from training.config import TrainConfig
from training.evaluate import binned_rmse, evaluate_model, fit_ridge, regression_metrics
from training.train import train_model


@pytest.mark.parametrize(
    ("label", "pred", "expected"),
    [
        ([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], {"rmse": 0.0, "mae": 0.0, "bias": 0.0, "r2": 1.0}),
        ([1.0, 2.0, 3.0], [2.0, 3.0, 4.0], {"rmse": 1.0, "mae": 1.0, "bias": 1.0, "r2": -0.5}),
        ([0.0, 10.0], [5.0, 5.0], {"rmse": 5.0, "mae": 5.0, "bias": 0.0, "r2": 0.0}),
        ([4.0, 4.0], [3.0, 5.0], {"rmse": 1.0, "mae": 1.0, "bias": 0.0, "r2": None}),
    ],
)
def test_regression_metrics(label, pred, expected):
    m = regression_metrics(np.asarray(label, np.float32), np.asarray(pred, np.float32))
    for key, value in expected.items():
        assert m[key] == (None if value is None else pytest.approx(value, abs=1e-6))
    assert m["n"] == len(label)


def test_empty_metrics_are_none():
    assert regression_metrics(np.zeros(0, np.float32), np.zeros(0, np.float32))["rmse"] is None


def test_binned_rmse_uses_half_open_label_bins():
    label = np.asarray([0.0, 99.9, 100.0, 250.0, 300.0], np.float32)
    pred = label + np.asarray([1.0, 1.0, 2.0, 3.0, 50.0], np.float32)
    b = binned_rmse(label, pred)
    assert b["0-100"] == {"n": 2, "rmse": pytest.approx(1.0)}
    assert b["100-200"] == {"n": 1, "rmse": pytest.approx(2.0)}
    assert b["200-300"] == {"n": 1, "rmse": pytest.approx(3.0)}
    assert b["0-300"]["n"] == 4  # 300 is outside [0, 300)


def test_ridge_recovers_a_linear_relation():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5000, 3)).astype(np.float32)
    y = (x @ np.asarray([10.0, -5.0, 2.0], np.float32) + 50.0).astype(np.float32)
    w = fit_ridge(x, y, alpha=1e-3)
    assert np.allclose(w, [10.0, -5.0, 2.0, 50.0], atol=1e-2)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    exp = write_synthetic_export(root / "export", chip=64, grid=(4, 3), seed=2)
    res = train_model(export=exp["export"], output_dir=str(root / "run"), config=TrainConfig(model="tiny", epochs=2, batch_size=4, steps_per_epoch=3, device="cpu", cpu_threads=1))
    return exp, res, root


def test_evaluate_writes_metrics_baselines_and_plots(trained):
    exp, res, root = trained
    out = evaluate_model(checkpoint=res.best_checkpoint, export=exp["export"], output_dir=str(root / "eval"))
    saved = json.loads(open(out.metrics_path).read())
    assert out.metrics_path == str(root / "eval" / "metrics.json") and saved["split"] == "test"
    assert set(saved["metrics"]) == {"model", "baseline_mean", "baseline_ridge"}
    n = saved["n_pixels"]
    assert n > 0 and all(m["n"] == n for m in saved["metrics"].values())
    model = saved["metrics"]["model"]
    assert set(model["binned_rmse"]) == {"0-100", "100-200", "200-300", "0-300"}
    assert set(model["per_pft"]) <= {"1", "6"} and model["per_pft"]
    for path in out.plots.values():
        assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert saved["model_beats"].keys() == {"baseline_mean", "baseline_ridge"}


def test_zero_shot_on_a_lightning_checkpoint_needs_a_preset(trained, tmp_path):
    exp, res, _ = trained
    state = torch.load(res.best_checkpoint, weights_only=True)["state_dict"]
    foreign = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": {"model." + k: v for k, v in state.items()}}, foreign)
    with pytest.raises(ValueError, match="model=<preset>"):
        evaluate_model(checkpoint=str(foreign), export=exp["export"], output_dir=str(tmp_path))
    out = evaluate_model(checkpoint=str(foreign), model="tiny", export=exp["export"], split="val",
                         output_dir=str(tmp_path))
    assert out.zero_shot is True and out.metrics_path.endswith("metrics_val.json")
    assert out.metrics["model"]["rmse"] is not None
