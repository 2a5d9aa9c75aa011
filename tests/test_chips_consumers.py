"""Exports as the real consumers read them: per-split Esri folders, granite's 10-band chip and composite
layout, the TerraTorch config's batch size, and band names that agree from composite to checkpoint.

(The consumers' own code runs in `make interop` / `make interop-esri`; these tests pin the files.)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import yaml

from chips.bandlayout import BandLayout
from chips.export import export_chips
from chips.params import ChipParams
from chips.stats import chip_band_stats
from chips.terratorch import config_batch_size
from compositing.granite import GraniteLayoutError, granite_path, write_granite_composite
from core.grid import Grid, mgrs_tile_grid
from sampleworld.synthetic.pairs import write_pair

CS = 32
GRANITE = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B09", "B10", "B11")
DATASET_BANDS = [-1, "BLUE", "GREEN", "RED", "NIR_NARROW", "SWIR_1", "SWIR_2", -1, -1, -1]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("consumers")
    g = mgrs_tile_grid("10TEK").clip((520000, 4450000, 520000 + 30 * 200, 4450000 + 30 * 200))
    write_pair(root, g, nodata_corner=40)
    return root


def _export(world: Path, out: Path, **params: Any):
    return export_chips(composites=world, labels=world, output_dir=out,
                        params=ChipParams(chip_size=CS, split_block_m=1000, split_buffer_m=100, **params))


@pytest.fixture(scope="module")
def model_export(world: Path, tmp_path_factory: pytest.TempPathFactory):
    return _export(world, tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def granite_export(world: Path, tmp_path_factory: pytest.TempPathFactory):
    return _export(world, tmp_path_factory.mktemp("granite"), band_layout="granite", extra_bands=("count",),
                   label_nodata=-1)


def _split_rows(res) -> list[dict[str, Any]]:
    return json.loads(Path(res.split_file).read_text())["chips"]


def test_esri_split_folders_hold_their_split_with_their_own_stats(model_export) -> None:
    esri = Path(model_export.esri_dir)
    rows = _split_rows(model_export)
    for split in ("train", "val", "test"):
        root = esri.parent / "esri_splits" / split
        want = sorted(r["esri"] for r in rows if r["split"] == split)
        assert sorted(p.name for p in (root / "images").glob("*.tif")) == want
        assert sorted(p.name for p in (root / "images2").glob("*.tif")) == want
        for name in want:
            for sub in ("images", "images2"):
                assert os.path.samefile(root / sub / name, esri / sub / name)  # links, no copies
            assert (root / "images" / name.replace(".tif", ".tfw")).is_file()
        emd = json.loads((root / "esri_model_definition.emd").read_text())
        acc = json.loads((root / "esri_accumulated_stats.json").read_text())
        assert acc["NumTiles"] == len(want) == model_export.splits[split]
        assert emd["AGB_SplitFolder"]["split"] == split
        stats = np.zeros((6, 5))
        from chips.stats import merge_stats

        for name in want:
            with rasterio.open(root / "images" / name) as ds:
                stats = merge_stats(stats, chip_band_stats(ds.read(), -9999.0))
        assert [s["Mean"] for s in emd["AllTilesStats"]] == pytest.approx(list(stats[:, 1]))
        assert [s["Min"] for s in emd["AllTilesStats"]] == pytest.approx(list(stats[:, 3]))
    man = json.loads(Path(model_export.chips_export).read_text())
    assert man["layouts"]["esri_val"] == "esri_splits/val"


def test_export_without_split_folders(world: Path, tmp_path: Path) -> None:
    res = _export(world, tmp_path, esri_splits=False, layouts=("esri",))
    assert not (Path(res.export_dir) / "esri_splits").exists()
    assert json.loads(Path(res.chips_export).read_text())["layouts"] == {"esri": "esri"}


@pytest.mark.parametrize(("n_train", "batch"), [(2, 2), (3, 3), (63, 63), (64, 64), (65, 64), (500, 64)])
def test_config_batch_size_trains_at_least_one_full_batch(n_train: int, batch: int) -> None:
    assert config_batch_size(n_train) == batch
    assert n_train // batch >= 1 and batch >= 2  # drop_last keeps >= 1 batch, never a batch of one chip


@pytest.mark.parametrize("n_train", [0, 1])
def test_config_batch_size_refuses_fewer_than_two_chips(n_train: int) -> None:
    with pytest.raises(ValueError, match="at least 2"):
        config_batch_size(n_train)


def test_generated_config_batch_size_is_the_training_chip_count(model_export) -> None:
    cfg = yaml.safe_load(Path(model_export.terratorch_config).read_text())
    data = cfg["data"]["init_args"]
    n = model_export.splits["train"]
    assert 2 <= n < 64 and data["batch_size"] == n and data["drop_last"] is True
    assert data["dataset_bands"] == ["BLUE", "GREEN", "RED", "NIR_NARROW", "SWIR_1", "SWIR_2"]


def test_granite_layout_chips(granite_export, model_export) -> None:
    """10 bands B01, B02..B07, B09, B10, B11 (+ count), placeholders nodata, same pixels as the model layout."""
    tt = Path(granite_export.terratorch_dir)
    mt = Path(model_export.terratorch_dir)
    img = sorted((tt / "val_images").iterdir())[0]
    same = mt / "val_images" / img.name
    with rasterio.open(img) as g, rasterio.open(same) as m:
        a, b = g.read(), m.read()
        assert g.count == 11 and g.descriptions == (*GRANITE, "count") and g.nodata == -9999
        assert g.dtypes[0] == "float32"
    assert (a[[0, 7, 8, 9]] == -9999).all()
    np.testing.assert_array_equal(a[1:7], b)
    lab = sorted((tt / "val_labels").iterdir())[0]
    with rasterio.open(lab) as ds:
        assert ds.count == 1 and ds.nodata == -1 and ds.units == ("Mg/ha",)
    man = json.loads(Path(granite_export.chips_export).read_text())
    assert man["bands"] == [*GRANITE, "count"]
    assert man["stats"]["train"]["count"][0] == 0 and man["stats"]["train"]["count"][1] > 0
    cfg = yaml.safe_load(Path(granite_export.terratorch_config).read_text())
    data = cfg["data"]["init_args"]
    assert data["dataset_bands"] == [*DATASET_BANDS, "count"]
    assert data["output_bands"] == ["BLUE", "GREEN", "RED", "NIR_NARROW", "SWIR_1", "SWIR_2"]
    assert data["means"] == pytest.approx(man["stats"]["train"]["mean"][1:7])
    emd = json.loads((Path(granite_export.esri_dir) / "esri_model_definition.emd").read_text())
    assert len(emd["AllTilesStats"]) == 11 and emd["AGB_BandLayout"] == "granite"
    assert emd["InputRastersProps"]["BandNames"][:2] == ["CoastalBlue", "Blue"]


def test_training_reads_a_granite_layout_export_by_band_name(granite_export, model_export) -> None:
    from training.data import load_split, read_export

    g, m = read_export(granite_export.export_dir), read_export(model_export.export_dir)
    bands = ["B02", "B03", "B04", "B05", "B06", "B07"]
    a, b = load_split(g, "val", bands), load_split(m, "val", bands)
    np.testing.assert_allclose(a.images, b.images, rtol=1e-6)


def test_band_layout_table() -> None:
    lay = BandLayout.build("granite", ["count"])
    assert lay.ids == (*GRANITE, "count") and lay.source == (None, 0, 1, 2, 3, 4, 5, None, None, None, 6)
    assert lay.wavelengths()[:2] == [0.44, 0.49] and lay.positions(["B02", "count"]) == [1, 10]
    assert BandLayout.build("model").ids == ("B02", "B03", "B04", "B05", "B06", "B07")
    with pytest.raises(ValueError, match="band_layout"):
        BandLayout.build("rgb")


def test_granite_composite_copy(world: Path, tmp_path: Path) -> None:
    """composites_granite/<TILE>/<SEASON>.tif: 10 bands in granite's order, means pixel for pixel."""
    src = world / "composites" / "10TEK" / "2021-06-01_2021-09-30.tif"
    dst = write_granite_composite(src, granite_path(tmp_path, "10TEK", "2021-06-01_2021-09-30"))
    assert dst == tmp_path / "composites_granite" / "10TEK" / "2021-06-01_2021-09-30.tif"
    assert sorted(p.name for p in dst.parent.iterdir()) == [dst.name]  # no sidecar, no temp files
    with rasterio.open(dst) as g, rasterio.open(src) as c:
        assert g.descriptions == GRANITE and g.count == 10 and g.nodata == -9999 and g.dtypes[0] == "float32"
        assert g.tags(8)["BAND_NAME"] == "Cirrus" and g.tags()["MGRS_TILE"] == c.tags()["MGRS_TILE"]
        assert Grid.from_raster(str(dst)) == Grid.from_raster(str(src))
        a, b = g.read(), c.read()
        assert g.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
    np.testing.assert_array_equal(a[1:7], b[:6])
    assert (a[[0, 7, 8, 9]] == -9999).all()
    with rasterio.open(tmp_path / "odd.tif", "w", driver="GTiff", width=4, height=4, count=2, dtype="float32",
                       crs="EPSG:32610", transform=rasterio.Affine(30, 0, 0, 0, -30, 0)) as ds:
        ds.descriptions = ("red", "nir")
    # 'red' is B04's name; the others are missing
    with pytest.raises(GraniteLayoutError, match=r"odd\.tif: no band described as B02, B03, B05, B06, B07 \(bands: "
                                                 r"\['red', 'nir'\]\)"):
        write_granite_composite(tmp_path / "odd.tif", tmp_path / "x.tif")
