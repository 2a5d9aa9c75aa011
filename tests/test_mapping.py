"""Tiled mapping: crop placement, overlap averaging, the output COG on the composite's grid."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
from torch import nn

from sampleworld.synthetic.export import write_synthetic_export
from training.config import TrainConfig
from training.mapping import MappingError, predict_map, tile_starts, tiled_predict
from training.train import train_model


@pytest.mark.parametrize(
    ("size", "crop", "stride", "expected"),
    [(224, 224, 192, [0]), (100, 224, 192, [0]), (448, 224, 192, [0, 192, 224]), (416, 224, 192, [0, 192]),
     (1344, 224, 192, [0, 192, 384, 576, 768, 960, 1120])],
)
def test_tile_starts_cover_the_raster_with_the_last_crop_flush(size, crop, stride, expected):
    assert tile_starts(size, crop, stride) == expected


class _Band0(nn.Module):
    """Returns band 0: a tiler that places crops correctly reproduces the input exactly."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0]


class _CropMean(nn.Module):
    """Returns each crop's mean everywhere in the crop: overlaps show as averages."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0].mean(dim=(1, 2), keepdim=True).expand(-1, x.shape[2], x.shape[3])


@pytest.mark.parametrize("shape", [(2, 100, 130), (1, 20, 30)])
def test_tiled_predict_places_crops_exactly(shape):
    image = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    out = tiled_predict(_Band0(), image, crop=32, stride=24, batch_size=3)
    assert out.shape == shape[1:]
    assert np.allclose(out, image[0], atol=1e-6)


def test_tiled_predict_averages_overlaps():
    image = np.zeros((1, 32, 40), np.float32)
    image[0, :, 32:] = 8.0  # crop x in [0, 32) has mean 0, crop x in [8, 40) has mean 2
    out = tiled_predict(_CropMean(), image, crop=32, stride=24)
    assert np.allclose(out[:, :8], 0.0) and np.allclose(out[:, 8:32], 1.0) and np.allclose(out[:, 32:], 2.0)


def test_stride_larger_than_crop_is_refused():
    with pytest.raises(MappingError, match="stride"):
        tiled_predict(_Band0(), np.zeros((1, 8, 8), np.float32), crop=4, stride=5)


def test_predict_map_writes_a_cog_on_the_composite_grid(tmp_path):
    exp = write_synthetic_export(tmp_path / "export", chip=64, grid=(3, 2), seed=4)
    res = train_model(export=exp["export"], output_dir=str(tmp_path / "run"), config=TrainConfig(model="tiny", epochs=1, batch_size=2, steps_per_epoch=2, device="cpu", cpu_threads=1))
    out = predict_map(checkpoint=res.best_checkpoint, composite=exp["composite"],
                      output_dir=str(tmp_path / "maps"), crop=64, stride=48)
    assert out.map == str(tmp_path / "maps" / "10TEK_agb.tif") and out.band_match == "by description"
    with rasterio.open(exp["composite"]) as c, rasterio.open(out.map) as m:
        assert (m.crs, m.transform, m.width, m.height) == (c.crs, c.transform, c.width, c.height)
        assert m.nodata == -9999.0 and m.dtypes == ("float32",) and m.tags()["UNITS"] == "Mg/ha"
        assert m.units == ("Mg/ha",)  # GDAL band unit type
        assert m.profile["tiled"] and m.overviews(1) == [] and m.profile["compress"] == "deflate"
        agb, comp = m.read(1), c.read(1)
    assert np.array_equal(agb == -9999.0, comp == -9999.0)
    assert (agb[agb != -9999.0] >= 0).all()
    assert out.mpx_per_s > 0 and out.valid_fraction < 1.0
    again = predict_map(checkpoint=res.best_checkpoint, composite=exp["composite"],
                        output_dir=str(tmp_path / "maps"), crop=64, stride=48)
    assert again.skipped is True
    auto = predict_map(checkpoint=res.best_checkpoint, composite=exp["composite"], output_dir=str(tmp_path / "auto"))
    with rasterio.open(auto.map) as m:  # unset crop: the 64 px chips the model was trained on, 6/7 stride
        assert (m.tags()["CROP"], m.tags()["STRIDE"]) == ("64", "55")
    # bands are matched by name: the same bands in another order give the same map; other bands are an error
    shuffled, other = tmp_path / "shuffled" / "10TEK.tif", tmp_path / "other" / "10TEK.tif"
    with rasterio.open(exp["composite"]) as c:
        data, profile, desc = c.read(), c.profile, c.descriptions
    order = [6, 5, 3, 4, 2, 1, 0]
    for path, names in ((shuffled, [desc[i] for i in order]), (other, ["red", "green", "blue", "nir", "swir16",
                                                                         "swir22", "count"])):
        path.parent.mkdir()
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data[order] if path == shuffled else data)
            dst.descriptions = tuple(names)
    moved = predict_map(checkpoint=res.best_checkpoint, composite=str(shuffled), crop=64, stride=48)
    with rasterio.open(moved.map) as m:
        np.testing.assert_array_equal(m.read(1), agb)
    with pytest.raises(MappingError, match=r"other/10TEK\.tif: the model needs bands \['B02'.*'red', 'green'"):
        predict_map(checkpoint=res.best_checkpoint, composite=str(other), crop=64, stride=48)


def test_missing_composite_is_named(tmp_path):
    with pytest.raises(MappingError, match="nothing.tif"):
        predict_map(checkpoint="x.ckpt", composite=str(tmp_path / "nothing.tif"))


@pytest.mark.parametrize(("ck", "crop", "stride", "expected"), [
    ({"meta": {"run_config": {"chip_size": 32}}}, None, None, (32, 27)),    # the model's chips, 6/7 stride
    ({"meta": {"run_config": {"chip_size": 224}}}, None, None, (224, 192)),  # granite's 224 / 192
    ({"meta": {}}, None, None, (224, 192)),                                 # foreign / older checkpoint
    ({"meta": {"run_config": {"chip_size": 32}}}, 64, None, (64, 55)),      # an explicit crop wins
    ({"meta": {"run_config": {"chip_size": 32}}}, 64, 64, (64, 64)),
])
def test_map_crop_follows_the_training_chips(ck, crop, stride, expected) -> None:
    from training.mapping import map_crop

    assert map_crop(ck, crop, stride) == expected
