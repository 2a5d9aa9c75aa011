"""One normalisation rule: a foreign (granite) checkpoint uses granite's published statistics (or the user's) in
evaluation, mapping and fine-tuning; the fine-tuned checkpoint carries them; metrics.json records them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import yaml

from sampleworld.synthetic.export import write_synthetic_export
from training.checkpoint import read_checkpoint, save_checkpoint
from training.config import TrainConfig
from training.evaluate import evaluate_model
from training.mapping import predict_map
from training.model import build_model
from training.norm import GRANITE_MEAN, GRANITE_STD, NormError, model_norm, scratch_norm
from training.train import train_model

BANDS = ["B02", "B03", "B04", "B05", "B06", "B07"]
FAST = {"model": "tiny", "batch_size": 2, "steps_per_epoch": 2, "device": "cpu", "cpu_threads": 1}
USER = ([500.0, 800.0, 900.0, 2500.0, 2000.0, 1500.0], [400.0, 500.0, 700.0, 800.0, 1000.0, 1000.0])


def test_granite_statistics_are_granites_published_ones() -> None:
    cfg = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "granite_config.yaml"
    if not cfg.is_file():
        pytest.skip(f"granite's config not found at {cfg}")
    data = yaml.safe_load(cfg.read_text())["data"]["init_args"]
    assert list(GRANITE_MEAN) == data["means"] and list(GRANITE_STD) == data["stds"]
    assert [b.upper() for b in data["output_bands"]] == ["BLUE", "GREEN", "RED", "NIR_NARROW", "SWIR_1", "SWIR_2"]


PROJECT = {"norm": {"mean": [1.0] * 6, "std": [2.0] * 6}, "bands": BANDS}
FOREIGN = {"foreign": True}


@pytest.mark.parametrize(
    ("ck", "bands", "user", "expected"),
    [
        (PROJECT, BANDS, None, ("checkpoint", [1.0] * 6)),
        (PROJECT, BANDS, ([1.0] * 6, [2.0] * 6), ("checkpoint", [1.0] * 6)),  # the same values: accepted
        (PROJECT, BANDS, USER, "carries its own normalisation"),
        (FOREIGN, BANDS, None, ("granite", list(GRANITE_MEAN))),
        (FOREIGN, BANDS, USER, ("user", USER[0])),
        (FOREIGN, [*BANDS, "count"], None, "give norm_mean/norm_std"),
        (FOREIGN, BANDS, (USER[0], None), "both norm_mean and norm_std"),
        (FOREIGN, BANDS, (USER[0][:5], USER[1][:5]), "one value per band"),
        (FOREIGN, BANDS, (USER[0], [0.0] * 6), "positive"),
    ],
)
def test_model_norm_rule(ck, bands, user, expected) -> None:  # noqa: ANN001
    mean, std = user or (None, None)
    if isinstance(expected, str):
        with pytest.raises(NormError, match=expected):
            model_norm(ck, bands, mean, std)
        return
    norm = model_norm(ck, bands, mean, std)
    assert (norm.source, norm.mean) == expected


def test_scratch_norm_rule() -> None:
    assert scratch_norm([1.0] * 6, [2.0] * 6, BANDS).source == "export"
    assert scratch_norm([1.0] * 6, [2.0] * 6, BANDS, *USER).to_dict() == {"mean": USER[0], "std": USER[1], "source": "user"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):  # noqa: ANN001, ANN201
    """A synthetic export and a foreign (Lightning-style) checkpoint of a tiny model, as a granite file would be."""
    root = tmp_path_factory.mktemp("norm")
    exp = write_synthetic_export(root / "export", chip=64, grid=(3, 2), seed=5)
    torch.manual_seed(0)
    net = build_model("tiny", in_channels=6)
    net.set_output_bias(120.0)
    foreign = root / "granite_like.ckpt"
    torch.save({"state_dict": {"model." + k: v for k, v in net.state_dict().items()}}, foreign)
    return exp, foreign, root


def _map_rmse_on(split: str, exp: dict, map_path: str) -> float:
    """RMSE of the map against the label chips of ``split``, at their labelled pixels, by georeferencing."""
    tt = Path(exp["export"]) / "terratorch" / f"{split}_labels"
    se, n = 0.0, 0
    with rasterio.open(map_path) as m:
        agb = m.read(1)
        for f in sorted(tt.glob("*.tif")):
            with rasterio.open(f) as ds:
                lab = ds.read(1)
                r0, c0 = m.index(ds.transform.c + 1.0, ds.transform.f - 1.0)  # the chip's upper-left pixel
            pred = agb[r0:r0 + lab.shape[0], c0:c0 + lab.shape[1]]
            ok = lab >= 0
            se += float(((pred[ok] - lab[ok]).astype(np.float64) ** 2).sum())
            n += int(ok.sum())
    return (se / n) ** 0.5


def test_zero_shot_metrics_describe_the_map(setup) -> None:  # noqa: ANN001
    """Evaluation and mapping of a foreign checkpoint normalise alike (granite's statistics): the RMSE that
    metrics.json reports equals the map's RMSE at the same labelled pixels."""
    exp, foreign, root = setup
    ev = evaluate_model(checkpoint=str(foreign), model="tiny", export=exp["export"], output_dir=str(root / "ev"),
                        device="cpu", cpu_threads=1)
    saved = json.loads(Path(ev.metrics_path).read_text())
    assert saved["norm"] == {"mean": list(GRANITE_MEAN), "std": list(GRANITE_STD), "source": "granite"}
    mp = predict_map(checkpoint=str(foreign), model="tiny", composite=exp["composite"], output_dir=str(root / "map"),
                     crop=64, stride=64, device="cpu", cpu_threads=1)
    assert mp.norm.source == "granite"
    with rasterio.open(mp.map) as m:
        assert json.loads(m.tags()["NORM"])["source"] == "granite"
    assert _map_rmse_on("test", exp, mp.map) == pytest.approx(saved["metrics"]["model"]["rmse"], rel=1e-4)


def test_user_statistics_for_a_foreign_checkpoint(setup) -> None:  # noqa: ANN001
    exp, foreign, root = setup
    ev = evaluate_model(checkpoint=str(foreign), model="tiny", export=exp["export"], output_dir=str(root / "evu"),
                        split="val", device="cpu", cpu_threads=1, norm_mean=USER[0], norm_std=USER[1])
    assert ev.norm.to_dict() == {"mean": USER[0], "std": USER[1], "source": "user"}
    mp = predict_map(checkpoint=str(foreign), model="tiny", composite=exp["composite"], output_dir=str(root / "mapu"),
                     crop=64, stride=64, device="cpu", cpu_threads=1, norm_mean=USER[0], norm_std=USER[1])
    assert mp.norm.source == "user"
    assert _map_rmse_on("val", exp, mp.map) == pytest.approx(ev.metrics["model"]["rmse"], rel=1e-4)


def test_fine_tuning_a_foreign_checkpoint_carries_granites_statistics(setup) -> None:  # noqa: ANN001
    exp, foreign, root = setup
    tr = train_model(export=exp["export"], output_dir=str(root / "ft"),
                     config=TrainConfig(**FAST, epochs=1, init_checkpoint=str(foreign), freeze_backbone=True))
    assert tr.norm.source == "granite" and tr.norm.mean == list(GRANITE_MEAN)
    ck = read_checkpoint(tr.best_checkpoint)
    assert ck["norm"] == {"mean": list(GRANITE_MEAN), "std": list(GRANITE_STD)}
    assert ck["meta"]["norm_source"] == "granite"
    ev = evaluate_model(checkpoint=tr.best_checkpoint, export=exp["export"], output_dir=str(root / "ftev"),
                        device="cpu", cpu_threads=1)
    assert ev.norm.source == "checkpoint" and ev.norm.mean == list(GRANITE_MEAN)
    mp = predict_map(checkpoint=tr.best_checkpoint, composite=exp["composite"], output_dir=str(root / "ftmap"),
                     crop=64, stride=64, device="cpu", cpu_threads=1)
    assert mp.norm.mean == list(GRANITE_MEAN)
    assert _map_rmse_on("test", exp, mp.map) == pytest.approx(ev.metrics["model"]["rmse"], rel=1e-4)
    with pytest.raises(NormError, match="carries its own normalisation"):  # its statistics are not replaced
        evaluate_model(checkpoint=tr.best_checkpoint, export=exp["export"], output_dir=str(root / "x"),
                       device="cpu", norm_mean=USER[0], norm_std=USER[1])


def test_training_from_scratch_uses_the_export_or_the_users_statistics(setup) -> None:  # noqa: ANN001
    exp, _, root = setup
    a = train_model(export=exp["export"], output_dir=str(root / "s1"), config=TrainConfig(**FAST, epochs=1))
    assert a.norm.source == "export"
    b = train_model(export=exp["export"], output_dir=str(root / "s2"),
                    config=TrainConfig(**FAST, epochs=1, norm_mean=USER[0], norm_std=USER[1]))
    assert b.norm.to_dict() == {"mean": USER[0], "std": USER[1], "source": "user"}
    assert read_checkpoint(b.best_checkpoint)["norm"] == {"mean": USER[0], "std": USER[1]}


def test_a_project_checkpoint_with_granite_statistics_maps_like_the_foreign_one(setup) -> None:  # noqa: ANN001
    exp, foreign, root = setup
    net = build_model("tiny", in_channels=6)
    net.load_state_dict({k[len("model."):]: v for k, v in torch.load(foreign, weights_only=True)["state_dict"].items()})
    own = save_checkpoint(root / "own.ckpt", model=net, bands=BANDS, norm_mean=list(GRANITE_MEAN),
                          norm_std=list(GRANITE_STD), image_nodata=-9999.0, label_nodata=-1.0, label_mean=0.0)
    a = predict_map(checkpoint=str(foreign), model="tiny", composite=exp["composite"], output_dir=str(root / "m1"),
                    crop=64, stride=64, device="cpu", cpu_threads=1)
    b = predict_map(checkpoint=str(own), composite=exp["composite"], output_dir=str(root / "m2"), crop=64,
                    stride=64, device="cpu", cpu_threads=1)
    with rasterio.open(a.map) as x, rasterio.open(b.map) as y:
        np.testing.assert_array_equal(x.read(1), y.read(1))
