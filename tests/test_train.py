"""Training: data reading, a short run, checkpoints, resume after an interruption, fine-tuning."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from sampleworld.synthetic.export import write_synthetic_export
from training.checkpoint import CheckpointError, read_checkpoint
from training.config import TrainConfig
from training.data import ExportError, load_split, read_export
from training.train import Batcher, lr_at, train_model

FAST = {"model": "tiny", "batch_size": 4, "steps_per_epoch": 3, "seed": 3, "device": "cpu", "cpu_threads": 1}


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    return write_synthetic_export(root, chip=64, grid=(4, 3), seed=1)


def test_read_export_and_nodata_replaced_before_normalising(export, tmp_path):
    info = read_export(export["export"])
    data = load_split(info, "train", info.bands, cache_dir=tmp_path)
    assert data.images.shape == (6, 6, 64, 64) and data.images.dtype == np.float32
    # the synthetic chips carry -9999 at rows/cols 5..7 of the first chip: raw 0 after replacement
    expected = -np.asarray(info.mean, np.float32) / np.asarray(info.std, np.float32)
    assert np.allclose(data.images[0, :, 6, 6], expected, rtol=1e-5)
    assert set(np.unique(data.labels[data.labels < 0])) == {-1.0}
    assert data.pft is not None and set(np.unique(data.pft)) <= {1, 6, 255}
    again = load_split(info, "train", info.bands, cache_dir=tmp_path)
    assert again.from_cache and np.array_equal(np.asarray(again.images), data.images)


def test_label_nodata_9999_and_negative_labels_are_unlabelled(tmp_path):
    exp = write_synthetic_export(tmp_path / "e", chip=32, grid=(3, 1), label_nodata=-9999.0, with_pft=False)
    info = read_export(exp["export"])
    data = load_split(info, "train", info.bands)
    assert data.pft is None
    assert data.labels.min() == -1.0 and (data.labels >= 0).sum() > 0


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "chips_export.json is missing"), ("{", "not valid JSON"), ('{"bands": ["B02"]}', "export_version is None"),
     ('{"export_version": 1, "bands": ["B02"]}', "export_version is 1"),
     ('{"export_version": 2, "bands": ["B02"]}', r"missing key\(s\) \['band_names'"),
     ("std0", "std must be positive"), ("extra", r"unknown key\(s\) \['surprise'\]")],
)
def test_bad_exports_are_named(tmp_path, export, content, message):
    good = json.loads((Path(export["export"]) / "chips_export.json").read_text())
    if content == "std0":
        good["stats"]["train"]["std"][0] = 0.0
        content = json.dumps(good)
    elif content == "extra":
        content = json.dumps({**good, "surprise": 1})
    if content is not None:
        (tmp_path / "chips_export.json").write_text(content)
    with pytest.raises(ExportError, match=message) as err:
        read_export(tmp_path)
    assert str(tmp_path) in str(err.value)  # the error names the export


def test_batcher_flips_and_rotations_keep_image_and_label_aligned(export):
    info = read_export(export["export"])
    data = load_split(info, "train", info.bands)
    # put the label equal to band 0 so that any misalignment shows
    data.labels = np.ascontiguousarray(data.images[:, 0])
    b = Batcher(data, batch_size=6, crop=48, augment=True)
    gen = torch.Generator().manual_seed(0)
    x, y = b.make(b.epoch_batches(gen, 1)[0], gen)
    assert x.shape == (6, 6, 48, 48) and y.shape == (6, 48, 48)
    assert torch.equal(x[:, 0], y)


def test_lr_schedule_warms_up_and_decays():
    lrs = [lr_at(s, 100, 1.0, 10) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[50] < lrs[10] and lrs[-1] == pytest.approx(0.01, abs=0.01)


def test_train_writes_checkpoints_history_and_skips_when_finished(export, tmp_path):
    res = train_model(export=export["export"], output_dir=str(tmp_path), config=TrainConfig(**FAST, epochs=2))
    assert res.epochs_run == 2 and res.stopped == "completed"
    assert all(np.isfinite(h["train_loss"]) and np.isfinite(h["val_loss"]) for h in res.history)
    assert res.best_checkpoint == str(tmp_path / "best.ckpt")
    assert res.last_checkpoint == str(tmp_path / "last.ckpt")
    ck = read_checkpoint(res.last_checkpoint)
    assert ck["model_config"]["preset"] == "tiny" and ck["bands"] == read_export(export["export"]).bands
    assert len(ck["norm"]["mean"]) == 6 and ck["train_state"]["finished"] is True
    assert json.loads((tmp_path / "history.json").read_text()) == res.history
    assert res.throughput["model_img_per_s"] > 0
    again = train_model(export=export["export"], output_dir=str(tmp_path), config=TrainConfig(**FAST, epochs=2))
    assert again.skipped is True


class _Interrupt(RuntimeError):
    pass


def test_resume_after_interruption_matches_uninterrupted_run(export, tmp_path):
    full = train_model(export=export["export"], output_dir=str(tmp_path / "a"), config=TrainConfig(**FAST, epochs=3))

    def kill(epoch: int, step: int) -> None:
        if epoch == 1 and step == 1:
            raise _Interrupt("killed mid-epoch")

    with pytest.raises(_Interrupt):
        train_model(export=export["export"], output_dir=str(tmp_path / "b"), on_step=kill, config=TrainConfig(**FAST, epochs=3))
    partial = read_checkpoint(tmp_path / "b" / "last.ckpt")
    assert partial["train_state"]["epoch"] == 0
    resumed = train_model(export=export["export"], output_dir=str(tmp_path / "b"), config=TrainConfig(**FAST, epochs=3))
    assert resumed.resumed_from_epoch == 0
    assert [h["val_loss"] for h in resumed.history] == [h["val_loss"] for h in full.history]
    a = read_checkpoint(full.last_checkpoint)["state_dict"]
    b = read_checkpoint(resumed.last_checkpoint)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_with_other_settings_is_refused(export, tmp_path):
    train_model(export=export["export"], output_dir=str(tmp_path), config=TrainConfig(**FAST, epochs=1))
    with pytest.raises(CheckpointError, match="other settings.*lr"):
        train_model(export=export["export"], output_dir=str(tmp_path), config=TrainConfig(**(FAST | {"lr": 1e-5}), epochs=2))


def test_fine_tune_with_frozen_backbone_keeps_encoder_weights(export, tmp_path):
    base = train_model(export=export["export"], output_dir=str(tmp_path / "base"), config=TrainConfig(**FAST, epochs=1))
    tuned = train_model(export=export["export"], output_dir=str(tmp_path / "ft"), config=TrainConfig(**FAST, epochs=1, init_checkpoint=base.best_checkpoint, freeze_backbone=True))
    assert tuned.init["missing"] == [] and tuned.frozen_parameters > 0
    a = read_checkpoint(base.best_checkpoint)["state_dict"]
    b = read_checkpoint(tuned.last_checkpoint)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("encoder."))
    assert any(not torch.equal(a[k], b[k]) for k in a if k.startswith("decoder."))


def test_batch_size_one_is_refused_clearly(export, tmp_path):
    with pytest.raises(ValueError, match="batch_size must be >= 2"):
        TrainConfig(**(FAST | {"batch_size": 1}), epochs=1)


def test_chips_without_nodata_tags_use_the_export_nodata_values(export, tmp_path):
    from training.data import band_indices, read_chip

    info = read_export(export["export"])
    img = np.full((6, 8, 8), 500.0, np.float32)
    img[:, 0, 0] = info.image_nodata
    lab = np.full((1, 8, 8), info.label_nodata, np.float32)
    lab[0, 2, 3] = 42.0
    from affine import Affine

    profile = {"driver": "GTiff", "width": 8, "height": 8, "dtype": "float32", "crs": "EPSG:32610",
               "transform": Affine(30, 0, 500000, 0, -30, 4000000)}
    with rasterio.open(tmp_path / "i.tif", "w", count=6, **profile) as dst:
        dst.write(img)
    with rasterio.open(tmp_path / "l.tif", "w", count=1, **profile) as dst:
        dst.write(lab)
    image, label, pft = read_chip(tmp_path / "i.tif", tmp_path / "l.tif", band_indices(info, info.bands), info)
    assert (image[:, 0, 0] == 0).all() and (image[:, 1, 1] == 500).all()
    assert (label >= 0).sum() == 1 and label[2, 3] == 42.0 and pft is None


def test_esri_layout_with_split_json_reads_the_same_chips(export, tmp_path):
    import shutil

    src = read_export(export["export"])
    root = tmp_path / "esri_export"
    (root / "esri" / "images").mkdir(parents=True)
    (root / "esri" / "labels").mkdir(parents=True)
    lines, split = [], {"train": [], "val": [], "test": []}
    n = 0
    for name in ("train", "val", "test"):
        for img in sorted((src.root / "terratorch" / f"{name}_images").glob("*.tif")):
            lab = src.root / "terratorch" / f"{name}_labels" / img.name.replace("_tile_img", "_tile_label")
            esri_name = f"{n:012d}.tif"
            shutil.copy(img, root / "esri" / "images" / esri_name)
            shutil.copy(lab, root / "esri" / "labels" / esri_name)
            lines.append(f"images\\{esri_name} labels\\{esri_name} ")
            split[name].append(esri_name)
            n += 1
    (root / "esri" / "map.txt").write_bytes("\r\n".join(lines).encode() + b"\r\n")
    (root / "split.json").write_text(json.dumps(split))
    meta = dict(src.manifest.to_dict(), layouts={"esri": "esri"})
    (root / "chips_export.json").write_text(json.dumps(meta))
    info = read_export(root)
    a = load_split(src, "val", src.bands)
    b = load_split(info, "val", info.bands)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
