"""Chip export: pixels, georeferencing, filters, spatial split without label leakage, layouts, re-run, errors."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import yaml
from rasterio.windows import from_bounds

from chips.audit import audit_export
from chips.export import ChipExportError, export_chips
from chips.manifest import ExportResult
from chips.params import ChipParams
from core.grid import Grid, mgrs_tile_grid
from sampleworld.synthetic.pairs import write_pair


def run_export(*, composites: Any, labels: Any, output_dir: Any, **params: Any) -> ExportResult:
    """export_chips with the chip parameters given as keywords (tests vary them one at a time)."""
    return export_chips(composites=composites, labels=labels, output_dir=output_dir, params=ChipParams(**params))


CS = 32  # small chips keep the tests fast; the default 224 is exercised by test_default_size_export
SPLIT = {"split_block_m": 1500.0, "split_buffer_m": 200.0}  # blocks for the ~7 km test windows


def _windows() -> list[Grid]:
    """Two overlapping zone-10 windows (10TEK and 10TFK share a 326 px strip), ~200 x 230 px."""
    ek, fk = mgrs_tile_grid("10TEK"), mgrs_tile_grid("10TFK")
    x0 = fk.bounds[0]
    y1 = ek.bounds[3] - 30 * 500
    return [ek.clip((x0 - 30 * 100, y1 - 30 * 200, x0 + 30 * 130, y1)),
            fk.clip((x0, y1 - 30 * 200, x0 + 30 * 230, y1))]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("chipworld")
    g1, g2 = _windows()
    write_pair(root, g1, nodata_corner=60)
    write_pair(root, g2)
    return root


@pytest.fixture(scope="module")
def export(world: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("chipout")
    return run_export(composites=world, labels=world, output_dir=out, chip_size=CS, **SPLIT,
                      max_nodata_fraction=0.3, min_labeled_pixels=5, seed=0)


def _chips(export: dict[str, Any]) -> list[dict[str, Any]]:
    return json.loads(Path(export.split_file).read_text())["chips"]


def test_result_and_contract(export: dict[str, Any]) -> None:
    meta = json.loads(Path(export.chips_export).read_text())
    assert meta["bands"] == ["B02", "B03", "B04", "B05", "B06", "B07"]
    assert meta["wavelengths_um"] == [0.49, 0.56, 0.665, 0.864, 1.61, 2.2]
    assert meta["chip_size"] == CS and meta["image_nodata"] == -9999 and meta["label_nodata"] == -9999
    assert meta["layouts"] == {"esri": "esri", "terratorch": "terratorch", "esri_train": "esri_splits/train",
                               "esri_val": "esri_splits/val", "esri_test": "esri_splits/test"}
    assert set(meta["stats"]["train"]) >= {"min", "max", "mean", "std"}
    assert sum(export.splits.values()) == export.n_chips == len(_chips(export))
    assert all(export.splits[s] > 0 for s in ("train", "val", "test"))
    assert all(export.labelled_pixels[s] > 0 for s in ("train", "val", "test"))
    assert meta["labelled_pixels"] == export.labelled_pixels
    assert sum(c["n_labeled"] for c in _chips(export) if c["split"] == "val") == export.labelled_pixels["val"]
    assert export.masked_buffer > 0
    assert export.dropped["duplicate_overlap"] > 0  # the overlap strip is exported once
    assert export.dropped["image_nodata"] > 0  # the 60 px nodata corner
    assert ExportResult.from_dict(json.loads(json.dumps(export.to_dict()))) == export  # JSON round trip


def test_chip_pixels_and_georeferencing_equal_source_windows(export: dict[str, Any], world: Path) -> None:
    esri = Path(export.esri_dir)
    for chip in _chips(export):
        comp = world / "composites" / chip["tile"] / f"{chip['season']}.tif"
        lab = world / "labels" / chip["tile"] / f"{chip['season']}.tif"
        with rasterio.open(esri / "images" / chip["esri"]) as ds:
            img, tr, crs = ds.read(), ds.transform, ds.crs
            assert ds.nodata == -9999 and ds.dtypes[0] == "float32" and ds.count == 6
            assert ds.descriptions == ("B02", "B03", "B04", "B05", "B06", "B07")
        with rasterio.open(esri / "images2" / chip["esri"]) as ds:
            lchip = ds.read(1)
            assert ds.nodata == -9999 and ds.transform == tr and ds.count == 1
            assert ds.units == ("Mg/ha",) and ds.descriptions == ("agbd",)  # GDAL band unit type
        with rasterio.open(comp) as src:
            assert crs == src.crs
            bounds = rasterio.transform.array_bounds(CS, CS, tr)
            win = from_bounds(*bounds, transform=src.transform)
            assert (round(win.row_off), round(win.col_off)) == (chip["row"], chip["col"])
            assert float(win.row_off).is_integer() and float(win.col_off).is_integer()
            np.testing.assert_array_equal(img, src.read([1, 2, 3, 4, 5, 6], window=win))
        with rasterio.open(lab) as src:
            source_lab = src.read(1, window=win)
        keep = lchip != -9999  # this split's labels equal the source's; the rest is masked
        np.testing.assert_array_equal(lchip[keep], source_lab[keep])
        assert int(keep.sum()) == chip["n_labeled"] >= 5
        assert tuple(chip["bounds"]) == pytest.approx(bounds)


def test_filters_match_brute_force(export: dict[str, Any], world: Path) -> None:
    kept = {(c["tile"], c["row"], c["col"]) for c in _chips(export)}
    for chip in _chips(export):
        comp = world / "composites" / chip["tile"] / f"{chip['season']}.tif"
        with rasterio.open(comp) as src:
            img = src.read([1, 2, 3, 4, 5, 6], window=((chip["row"], chip["row"] + CS), (chip["col"], chip["col"] + CS)))
        assert (img == -9999).any(axis=0).mean() <= 0.3
        assert chip["n_labeled"] >= 5
    # every dropped position of 10TEK away from the overlap is dropped for a reason
    with rasterio.open(world / "composites" / "10TEK" / "2021-06-01_2021-09-30.tif") as src:
        img = src.read([1, 2, 3, 4, 5, 6])
    with rasterio.open(world / "labels" / "10TEK" / "2021-06-01_2021-09-30.tif") as src:
        agbd = src.read(1)
    n_bad = 0
    for r in range(0, img.shape[1] - CS + 1):
        for c in range(0, img.shape[2] - CS + 1):
            if ("10TEK", r, c) in kept:
                continue
            frac = (img[:, r:r + CS, c:c + CS] == -9999).any(axis=0).mean()
            nlab = int((agbd[r:r + CS, c:c + CS] != -9999).sum())
            if r < 60 and c < 60 and (frac > 0.3 or nlab < 5):
                n_bad += 1
    assert n_bad > 0


def test_no_label_leakage_between_splits(export: dict[str, Any]) -> None:
    """On the written chips, by their georeferencing: no labelled ground pixel in two splits, labelled pixels
    of different splits at least the buffer apart."""
    rep = audit_export(export.export_dir)
    assert rep.buffer_m == SPLIT["split_buffer_m"] and rep.crs == "EPSG:32610"
    assert all(n > 0 for n in rep.labelled_points.values())
    assert rep.ok, rep
    assert all(d >= SPLIT["split_buffer_m"] for d in rep.min_distance_m.values())


def test_audit_finds_planted_leakage(export: dict[str, Any], tmp_path: Path) -> None:
    """The audit is not vacuous: a val label written next to a train label is reported."""
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(export.export_dir, root, copy_function=shutil.copy)
    rows = json.loads((root / "split.json").read_text())["chips"]
    train = next(r for r in rows if r["split"] == "train")
    val = next(r for r in rows if r["split"] == "val")
    with rasterio.open(root / "esri" / "images2" / train["esri"]) as ds:
        r, c = (int(v[0]) for v in np.nonzero(ds.read(1) != -9999))
        x, y = ds.xy(r, c)
    # move the val chip's georeferencing so that one of its labelled pixels sits 30 m from (x, y)
    tt = root / "terratorch" / "val_labels" / f"{val['terratorch_stem']}_tile_label.tif"
    with rasterio.open(tt, "r+") as ds:
        vr, vc = (int(v[0]) for v in np.nonzero(ds.read(1) != -9999))
        ds.transform = rasterio.Affine(30, 0, x + 30 - (vc + 0.5) * 30, 0, -30, y + (vr + 0.5) * 30)
    rep = audit_export(root)
    assert not rep.ok and rep.closer_than_buffer["train/val"] >= 1 and rep.min_distance_m["train/val"] == 30


def test_a_position_serves_several_splits_with_one_image_and_disjoint_labels(export: dict[str, Any]) -> None:
    esri = Path(export.esri_dir)
    by_pos: dict[tuple, list[dict[str, Any]]] = {}
    for c in _chips(export):
        by_pos.setdefault((c["tile"], c["season"], c["row"], c["col"]), []).append(c)
    shared = [v for v in by_pos.values() if len(v) > 1]
    assert shared, "with 1.5 km blocks some 32 px chips must serve two splits"
    for copies in shared:
        assert len({c["split"] for c in copies}) == len(copies)
        with rasterio.open(esri / "images" / copies[0]["esri"]) as ds:
            first = ds.read()
        seen = np.zeros(first.shape[1:], dtype=int)
        for c in copies:
            with rasterio.open(esri / "images" / c["esri"]) as ds:
                np.testing.assert_array_equal(ds.read(), first)
            with rasterio.open(esri / "images2" / c["esri"]) as ds:
                seen += ds.read(1) != -9999
        assert seen.max() == 1  # no pixel labelled in two copies


def test_split_is_seeded_and_written(world: Path, tmp_path: Path, export: dict[str, Any]) -> None:
    kw = dict(composites=world, labels=world, chip_size=CS, **SPLIT, max_nodata_fraction=0.3,
              min_labeled_pixels=5)
    same = run_export(output_dir=tmp_path / "a", seed=0, **kw)
    other = run_export(output_dir=tmp_path / "b", seed=7, **kw)
    split = lambda e: {c["index"]: c["split"] for c in _chips(e)}  # noqa: E731
    assert split(same) == split(export)
    assert split(other) != split(export)
    doc = json.loads(Path(export.split_file).read_text())
    assert doc["seed"] == 0 and doc["fractions"] == [0.7, 0.15, 0.15] and doc["blocks"]
    assert doc["block_m"] == 1500 and doc["buffer_m"] == 200 and doc["block_crs"] == "EPSG:32610"
    assert doc["labelled_pixels"] == export.labelled_pixels
    assert {b["split"] for b in doc["blocks"]} == {"train", "val", "test"}
    for b in doc["blocks"]:
        x0, y0, x1, y1 = b["bounds"]
        assert x1 - x0 == y1 - y0 == 1500 and x0 % 1500 == 0 and y0 % 1500 == 0
    for s in ("train", "val", "test"):
        assert doc[s] == [c["esri"] for c in doc["chips"] if c["split"] == s]
        assert len(doc[s]) == export.splits[s]


def test_terratorch_layout(export: dict[str, Any]) -> None:
    tt = Path(export.terratorch_dir)
    esri = Path(export.esri_dir)
    by_index = {c["index"]: c for c in _chips(export)}
    for split in ("train", "val", "test"):
        imgs = sorted((tt / f"{split}_images").iterdir())
        labs = sorted((tt / f"{split}_labels").iterdir())
        assert len(imgs) == len(labs) == export.splits[split]
        for i, la in zip(imgs, labs, strict=True):
            m = re.fullmatch(r"(\d{2}[A-Z]{3})_(\d{5,})_tile_img\.tif", i.name)
            assert m and la.name == f"{m.group(1)}_{m.group(2)}_tile_label.tif"
            chip = by_index[int(m.group(2))]
            assert chip["split"] == split and chip["tile"] == m.group(1)
            assert os.path.samefile(i, esri / "images" / chip["esri"])  # hard link to the Esri chip
            assert os.path.samefile(la, esri / "images2" / chip["esri"])
    cfg = yaml.safe_load(Path(export.terratorch_config).read_text())
    data = cfg["data"]["init_args"]
    assert cfg["data"]["class_path"].endswith("GenericNonGeoPixelwiseRegressionDataModule")
    assert data["means"] == pytest.approx(export.stats["train"]["mean"])
    assert data["stds"] == pytest.approx(export.stats["train"]["std"])
    assert data["train_label_data_root"] == str(tt.resolve() / "train_labels")
    assert data["output_bands"] == ["BLUE", "GREEN", "RED", "NIR_NARROW", "SWIR_1", "SWIR_2"]
    assert data["no_label_replace"] == -1 and cfg["model"]["init_args"]["ignore_index"] == -1


def test_train_stats_equal_pooled_train_pixels(export: dict[str, Any]) -> None:
    esri = Path(export.esri_dir)
    pix = []
    for c in _chips(export):
        if c["split"] == "train":
            with rasterio.open(esri / "images" / c["esri"]) as ds:
                pix.append(ds.read().reshape(6, -1))
    allpix = np.concatenate(pix, axis=1).astype(np.float64)
    st = export.stats["train"]
    for b in range(6):
        v = allpix[b][allpix[b] != -9999]
        assert st["count"][b] == v.size
        assert st["mean"][b] == pytest.approx(v.mean(), rel=1e-6)
        assert st["std"][b] == pytest.approx(v.std(), rel=1e-5)
        assert (st["min"][b], st["max"][b]) == (v.min(), v.max())


def test_esri_files(export: dict[str, Any]) -> None:
    esri = Path(export.esri_dir)
    raw = (esri / "map.txt").read_bytes()
    lines = raw.split(b"\r\n")
    assert lines[-1] == b"" and b"\n" not in raw.replace(b"\r\n", b"")
    assert len(lines) - 1 == export.n_chips
    for ln in lines[:-1]:
        m = re.fullmatch(rb"images\\(\d{12}\.tif) images2\\(\d{12}\.tif) ", ln)
        assert m and m.group(1) == m.group(2)
        assert (esri / "images" / m.group(1).decode()).exists() and (esri / "images2" / m.group(1).decode()).exists()
        assert (esri / "images" / m.group(1).decode().replace(".tif", ".tfw")).exists()
    assert (esri / "stats.txt").read_bytes().startswith(f"images = {export.n_chips} *6*{CS}*{CS}\r\n".encode())
    emd = json.loads((esri / "esri_model_definition.emd").read_text())
    assert emd["ImageHeight"] == emd["ImageWidth"] == CS and emd["ImageSpaceUsed"] == "MAP_SPACE"
    assert emd["MinCellSize"]["spatialReference"]["wkid"] == 32610
    assert emd["AGB_WavelengthsMicrons"] == [0.49, 0.56, 0.665, 0.864, 1.61, 2.2]
    assert emd["AGB_LabelUnits"] == "Mg/ha" and emd["AGB_LabelNodata"] == -9999
    assert emd["AGB_Split"]["counts"] == export.splits
    assert len(emd["AGB_SourceComposites"]) == 2
    acc = json.loads((esri / "esri_accumulated_stats.json").read_text())
    assert acc["NumTiles"] == export.n_chips and acc["NumBands"] == 6 and acc["MetaDataMode"] == "Export_Tiles"
    # the .tfw world file gives the centre of the upper-left pixel
    chip = _chips(export)[0]
    tfw = [float(v) for v in (esri / "images" / chip["esri"].replace(".tif", ".tfw")).read_text().split()]
    assert tfw == pytest.approx([30, 0, 0, -30, chip["bounds"][0] + 15, chip["bounds"][3] - 15])


def test_rerun_skips_and_param_change_reexports(world: Path, tmp_path: Path) -> None:
    kw = dict(composites=world, labels=world, output_dir=tmp_path, chip_size=CS, **SPLIT)
    first = run_export(**kw)
    mtime = Path(first.chips_export).stat().st_mtime_ns
    again = run_export(**kw)
    assert again.skipped is True and again.n_chips == first.n_chips
    assert Path(first.chips_export).stat().st_mtime_ns == mtime
    changed = run_export(**{**kw, "chip_size": 48})
    assert changed.skipped is False and changed.n_chips != first.n_chips
    assert not list(tmp_path.glob(".chips.tmp-*"))


def test_label_nodata_minus_one_and_extra_band(world: Path, tmp_path: Path) -> None:
    res = run_export(composites=world, labels=world, output_dir=tmp_path, chip_size=CS, label_nodata=-1,
                       extra_bands=("count",), layouts=("terratorch",), **SPLIT)
    tt = Path(res.terratorch_dir)
    assert not (tmp_path / "chips" / "esri").exists()
    img = sorted((tt / "train_images").iterdir())[0]
    lab = sorted((tt / "train_labels").iterdir())[0]
    rows = {r["terratorch_stem"]: r for r in _chips(res)}
    pos = rows[img.name.replace("_tile_img.tif", "")]
    copies = [r for r in rows.values() if (r["tile"], r["row"], r["col"]) == (pos["tile"], pos["row"], pos["col"])]
    # real files when there is no Esri layout (hard links between the copies of one position's image)
    assert not img.is_symlink() and img.stat().st_nlink == len(copies)
    with rasterio.open(img) as ds:
        assert ds.count == 7 and ds.descriptions[-1] == "count"
        assert set(np.unique(ds.read(7))) <= {3.0, 4.0, 5.0, 6.0, 7.0}
    with rasterio.open(lab) as ds:
        a = ds.read(1)
        assert ds.nodata == -1
        assert (a == -1).any() and (a >= 0).any() and not (a == -9999).any()
    cfg = yaml.safe_load(Path(res.terratorch_config).read_text())
    assert cfg["data"]["init_args"]["dataset_bands"][-1] == "count"
    assert len(cfg["data"]["init_args"]["means"]) == 6


def test_default_size_export(tmp_path: Path) -> None:
    g = mgrs_tile_grid("10TEK").clip((520000, 4450000, 520000 + 30 * 460, 4450000 + 30 * 460))
    write_pair(tmp_path / "in", g, compress=None)
    kw = dict(composites=[tmp_path / "in/composites/10TEK/2021-06-01_2021-09-30.tif"],
              labels=[tmp_path / "in/labels/10TEK/2021-06-01_2021-09-30.tif"], split_block_m=3000)
    # one training chip: TerraTorch cannot train on it (a batch of one fails in BatchNorm), so the default
    # layouts are refused with the reason; the Esri layout alone is written
    with pytest.raises(ChipExportError, match=r"only 1 training chip .*TerraTorch layout needs at least 2"):
        run_export(**kw, output_dir=tmp_path / "tt")
    res = run_export(**kw, output_dir=tmp_path / "out", layouts=("esri",))
    assert res.n_chips >= 1 and res.splits["train"] == 1
    with rasterio.open(Path(res.esri_dir) / "images" / "000000000000.tif") as ds:
        assert (ds.width, ds.height, ds.count) == (224, 224, 6)


def test_cross_zone_export_has_no_leakage(tmp_path: Path) -> None:
    """Overlapping tiles of zones 10 and 11: one block lattice (zone 10's), labelled pixels of different
    splits at least the buffer apart after reprojection, over the same ground exported from both zones."""
    from pyproj import Transformer

    x11, y = 250000.0, 4450000.0
    to10 = Transformer.from_crs("EPSG:32611", "EPSG:32610", always_xy=True)
    x10, y10 = to10.transform(x11, y)
    g10 = mgrs_tile_grid("10TGK").clip((x10 - 4000, y10 - 4000, x10 + 4000, y10 + 4000))
    g11 = mgrs_tile_grid("11TKE").clip((x11 - 4000, y - 4000, x11 + 4000, y + 4000))
    for g in (g10, g11):
        write_pair(tmp_path / "in", g, compress=None)
    res = run_export(composites=tmp_path / "in", labels=tmp_path / "in", output_dir=tmp_path / "out",
                     chip_size=CS, **SPLIT, split_fractions=(0.5, 0.25, 0.25))
    chips = _chips(res)
    assert {c["epsg"] for c in chips} == {32610, 32611}
    for epsg in (32610, 32611):  # both zones' chips serve several splits
        assert len({c["split"] for c in chips if c["epsg"] == epsg}) == 3
    assert json.loads(Path(res.split_file).read_text())["block_crs"] == "EPSG:32610"
    rep = audit_export(res.export_dir)
    assert rep.crs == "EPSG:32610" and rep.ok, rep
    assert all(n > 0 for n in rep.labelled_points.values())


@pytest.mark.parametrize(
    ("case", "match"),
    [("other_grid", "not on the grid"), ("no_label", "no label raster on its grid"),
     ("bad_fraction", "split_fractions"),
     ("bad_nodata", "label_nodata"), ("few_bands", "needs >= 6 bands"), ("missing", "not found")],
)
def test_clear_errors(case: str, match: str, tmp_path: Path) -> None:
    g = mgrs_tile_grid("10TEK").clip((520000, 4450000, 520000 + 30 * 70, 4450000 + 30 * 70))
    comp, lab = write_pair(tmp_path, g, compress=None)
    kw: dict[str, Any] = dict(composites=[comp], labels=[lab], output_dir=tmp_path / "out", chip_size=CS)
    if case == "other_grid":
        shifted = Grid(g.crs, (30.0, 0.0, g.transform[2] + 30, 0.0, -30.0, g.transform[5]), 70, 70, g.tile)
        _, lab2 = write_pair(tmp_path / "x", shifted, compress=None)
        kw["labels"] = [lab2]
    elif case == "no_label":
        other = mgrs_tile_grid("10TFK").clip((610000, 4450000, 610000 + 30 * 70, 4450000 + 30 * 70))
        comp2, _ = write_pair(tmp_path / "y", other, compress=None)
        kw["composites"] = [comp, comp2]
    elif case == "bad_fraction":
        kw["split_fractions"] = (0.6, 0.2, 0.1)
    elif case == "bad_nodata":
        kw["label_nodata"] = 0
    elif case == "few_bands":
        with rasterio.open(comp) as ds:
            prof, arr, tags = ds.profile, ds.read([1, 2, 3]), ds.tags()
        prof.update(count=3)
        with rasterio.open(comp, "w", **prof) as ds:
            ds.write(arr)
            ds.update_tags(**tags)
    elif case == "missing":
        kw["composites"] = [tmp_path / "nope.tif"]
    with pytest.raises(ChipExportError, match=match) as ei:
        run_export(**kw)
    if case in ("other_grid", "few_bands"):
        assert str(comp.parent.name) in str(ei.value) or "10TEK" in str(ei.value)


def test_negative_label_fill_under_other_tag_is_unlabelled(tmp_path: Path) -> None:
    """Like the real granite label chip: nodata tag -9999 but unlabelled pixels hold -1."""
    g = mgrs_tile_grid("10TEK").clip((520000, 4450000, 520000 + 30 * 70, 4450000 + 30 * 70))
    comp, lab = write_pair(tmp_path, g, label_nodata=-1.0, compress=None)
    with rasterio.open(lab, "r+") as ds:
        ds.nodata = -9999
    res = run_export(composites=[comp], labels=[lab], output_dir=tmp_path / "out", chip_size=CS,
                     split_block_m=1000, split_buffer_m=100, split_fractions=(1.0, 0.0, 0.0), layouts=("esri",))
    assert res.label_nodata == -9999
    for f in (Path(res.esri_dir) / "images2").glob("*.tif"):
        with rasterio.open(f) as ds:
            a = ds.read(1)
        assert not (a == -1).any() and (a == -9999).any() and (a >= 0).any()
    assert res.label_stats["train"]["min"][0] >= 0


def test_overlapping_stride(tmp_path: Path) -> None:
    g = mgrs_tile_grid("10TEK").clip((520000, 4450000, 520000 + 30 * 120, 4450000 + 30 * 120))
    comp, lab = write_pair(tmp_path, g, compress=None)
    res = run_export(composites=[comp], labels=[lab], output_dir=tmp_path / "out", chip_size=CS, stride=16,
                     split_block_m=1000, split_buffer_m=100)
    chips = _chips(res)
    cols = sorted({c["col"] for c in chips})
    assert any(b - a == 16 for a, b in zip(cols, cols[1:], strict=False))  # overlapping chips
    assert all(res.labelled_pixels[s] > 0 for s in ("train", "val", "test"))
    with rasterio.open(comp) as src:
        full = src.read([1, 2, 3, 4, 5, 6])
    for c in chips:
        with rasterio.open(Path(res.esri_dir) / "images" / c["esri"]) as ds:
            np.testing.assert_array_equal(ds.read(), full[:, c["row"]:c["row"] + CS, c["col"]:c["col"] + CS])
    rep = audit_export(res.export_dir)
    assert rep.ok, rep
    doc = json.loads(Path(res.split_file).read_text())
    # overlapping chips count a labelled pixel once per chip; distinct ground pixels are fewer
    assert all(doc["unique_labelled_pixels"][s] < res.labelled_pixels[s] for s in ("train", "val", "test"))
    assert doc["unique_labelled_pixels"] == rep.labelled_points


def test_chip_profile_matches_real_granite_chip(tmp_path: Path) -> None:
    """Our 224 px chips have the structure of a real granite-geospatial-biomass training chip."""
    real = Path(__file__).resolve().parents[1].parent / "shared" / "realdata" / "chips_granite"
    if not real.is_dir():
        pytest.skip(f"real granite chip not found at {real}")
    g = mgrs_tile_grid("10TEK").clip((520000, 4450000, 520000 + 30 * 700, 4450000 + 30 * 700))
    comp, lab = write_pair(tmp_path, g, compress=None)
    res = run_export(composites=[comp], labels=[lab], output_dir=tmp_path / "out", split_block_m=3000)
    tt = Path(res.terratorch_dir)
    ours = {"img": sorted((tt / "train_images").iterdir())[0], "label": sorted((tt / "train_labels").iterdir())[0]}
    theirs = {"img": real / "granite_biomass_chip_T14_input.tif", "label": real / "granite_biomass_chip_T14_label.tif"}
    for kind in ("img", "label"):
        with rasterio.open(ours[kind]) as o, rasterio.open(theirs[kind]) as t:
            assert (o.width, o.height) == (t.width, t.height) == (224, 224)
            assert o.dtypes[0] == t.dtypes[0] == "float32"
            assert o.res == t.res == (30.0, 30.0)
            assert o.crs.to_epsg() // 100 == t.crs.to_epsg() // 100 == 326  # UTM north, EPSG:326NN
            assert o.nodata == t.nodata == -9999
            if kind == "label":
                assert o.count == t.count == 1
                a, b = o.read(1), t.read(1)
                # both sparse: most pixels unlabelled, labelled values are non-negative Mg/ha
                assert (a >= 0).mean() < 0.2 and (b >= 0).mean() < 0.2 and (a >= 0).any() and (b >= 0).any()
            else:
                assert o.count == 6 and t.count == 10  # granite keeps 10 bands and selects 6 in its config


def _file_digests(root: Path) -> dict[str, str]:
    import hashlib

    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes().replace(str(root).encode(), b"ROOT")).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "chips_export.json"}


def test_split_planned_ahead_equals_the_split_planned_after_the_cut(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """The split is planned from the label rasters while the composites are read; it is used only when the
    cut gives the expected chips, and the export is byte-identical to one planned after the cut."""
    import chips.export as ex

    g1, g2 = _windows()
    write_pair(tmp_path / "w", g1)
    write_pair(tmp_path / "w", g2)
    kw = dict(chip_size=CS, **SPLIT, min_labeled_pixels=5, seed=0)
    with caplog.at_level("INFO", logger="chips.export"):
        ahead = run_export(composites=tmp_path / "w", labels=tmp_path / "w", output_dir=tmp_path / "a", **kw)
    assert "re-planning" not in caplog.text  # no chip fails the image-nodata filter: the plan ahead is used
    orig = ex._plan_expected
    monkeypatch.setattr(ex, "_plan_expected", lambda *a: ([], orig(*a)[1]))  # expected positions never match
    with caplog.at_level("INFO", logger="chips.export"):
        after = run_export(composites=tmp_path / "w", labels=tmp_path / "w", output_dir=tmp_path / "b", **kw)
    assert "re-planning the split" in caplog.text
    assert ahead.n_chips == after.n_chips > 0
    a, b = _file_digests(Path(ahead.export_dir)), _file_digests(Path(after.export_dir))
    assert a == b and len(a) > 4 * ahead.n_chips
    assert not any(p.name == "_stage" for p in Path(ahead.export_dir).rglob("*"))  # the per-thread folders are gone


def test_chips_failing_the_nodata_filter_re_plan_the_split(export: dict[str, Any], world: Path, tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """A composite with a nodata corner drops chips the label rasters alone would keep: the split is planned
    again on the chips actually cut (the module export's filters and splits are checked by the tests above)."""
    assert export.dropped["image_nodata"] > 0
    with caplog.at_level("INFO", logger="chips.export"):
        again = run_export(composites=world, labels=world, output_dir=tmp_path, chip_size=CS, **SPLIT,
                           max_nodata_fraction=0.3, min_labeled_pixels=5, seed=0)
    assert "re-planning the split" in caplog.text
    assert json.loads(Path(again.split_file).read_text()) == json.loads(Path(export.split_file).read_text().replace(
        str(Path(export.export_dir)), str(Path(again.export_dir))))
