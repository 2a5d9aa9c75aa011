"""A realistic small area (30 km x 30 km) exports, trains and evaluates with default split parameters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chips.audit import audit_export
from chips.export import export_chips
from chips.params import ChipParams
from core.grid import mgrs_tile_grid
from sampleworld.synthetic.pairs import write_pair
from training.config import TrainConfig
from training.evaluate import evaluate_model
from training.train import train_model

SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def area_export(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    root = tmp_path_factory.mktemp("area30km")
    g = mgrs_tile_grid("10TEK").clip((520020, 4450020, 520020 + 30_000, 4450020 + 30_000))
    assert (g.width, g.height) == (1000, 1000)
    comp, lab = write_pair(root / "in", g, compress=None)
    return root, export_chips(composites=[comp], labels=[lab], output_dir=root / "out", params=ChipParams())


def test_30km_area_gets_every_split_without_leakage(area_export) -> None:  # noqa: ANN001
    _, res = area_export
    assert all(res.splits[s] > 0 and res.labelled_pixels[s] > 0 for s in SPLITS), (res.splits, res.labelled_pixels)
    total = sum(res.labelled_pixels.values())
    shares = {s: res.labelled_pixels[s] / total for s in SPLITS}
    assert shares["train"] == pytest.approx(0.7, abs=0.1)  # roughly in proportion
    assert shares["val"] == pytest.approx(0.15, abs=0.08) and shares["test"] == pytest.approx(0.15, abs=0.08)
    doc = json.loads(Path(res.split_file).read_text())
    assert doc["labelled_pixels"] == res.labelled_pixels and doc["block_m"] == 5000 and doc["buffer_m"] == 500
    rep = audit_export(res.export_dir)
    assert rep.ok, rep
    assert min(rep.min_distance_m.values()) >= 500


def test_30km_area_trains_and_evaluates_on_val_and_test(area_export) -> None:  # noqa: ANN001
    root, res = area_export
    cfg = TrainConfig(model="tiny", epochs=2, batch_size=4, steps_per_epoch=3, device="cpu", cpu_threads=1)
    tr = train_model(export=res.export_dir, output_dir=str(root / "model"), config=cfg)
    assert tr.epochs_run == 2 and all(h["val_rmse"] is not None for h in tr.history)
    assert tr.data["train_labelled_pixels"] == res.labelled_pixels["train"]
    for split in ("val", "test"):
        ev = evaluate_model(checkpoint=tr.best_checkpoint, export=res.export_dir, split=split,
                            output_dir=str(root / "eval"), device="cpu", cpu_threads=1)
        assert ev.n_pixels == res.labelled_pixels[split] > 0
        assert ev.metrics["model"]["rmse"] is not None and ev.metrics["baseline_ridge"]["n"] == ev.n_pixels
