"""Nothing a run reads decides where it writes: hostile raster tags, STAC ids, hrefs and granule names at the
engine entry points (composites, labels, chips, maps) are refused with a clear error and nothing is written
outside ``output_dir``; a failed run leaves an earlier run's outputs as they were."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import rasterio

from chips.export import export_chips
from chips.params import ChipParams
from chips.sources import ChipExportError
from compositing.composite import CompositeError, build_composites
from core.files import UnsafePathError, contained, staged
from core.grid import mgrs_tile_grid
from labels import LabelsError, run_gedi_labels
from sampleworld.synthetic.granules import synthetic_beam, write_l4a_granule
from sampleworld.synthetic.pairs import SEASON, write_pair
from training.checkpoint import save_checkpoint
from training.mapping import MappingError, predict_map
from training.model import build_model

HOSTILE = "../../escape/X"
GRID = mgrs_tile_grid("10TEK").window_bounds(1000, 1000, 256, 256)
AOI = [-122.63, 40.32, -122.57, 40.37]  # inside GRID (a window of 10TEK)
NAME = "GEDI04_A_2021200051430_O25001_02_T01234_02_004_02_V002.h5"


def _escaped(root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*") if "escape" in p.name or "escape" in p.parent.name]


def _tag(path: Path, **tags: str) -> None:
    with rasterio.open(path, "r+") as ds:
        ds.update_tags(**tags)


@pytest.fixture()
def pair(tmp_path: Path) -> tuple[Path, Path]:
    return write_pair(tmp_path / "in", GRID)


@pytest.fixture()
def out(tmp_path: Path) -> Path:
    return tmp_path / "a" / "b" / "out"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("ckpt") / "tiny.ckpt"
    net = build_model("tiny", in_channels=6)
    return str(save_checkpoint(path, model=net, bands=["B02", "B03", "B04", "B05", "B06", "B07"],
                               norm_mean=[500.0] * 6, norm_std=[300.0] * 6, image_nodata=-9999.0,
                               label_nodata=-9999.0, label_mean=50.0))


# ------------------------------------------------------------------------------------------ core.files
def test_contained_refuses_traversal_absolute_and_symlinks(tmp_path: Path) -> None:
    root = tmp_path / "out"
    assert contained(root, "labels", "10TEK", f"{SEASON}.tif") == root / "labels" / "10TEK" / f"{SEASON}.tif"
    assert contained(root, "labels/granules", "x.parquet") == root / "labels" / "granules" / "x.parquet"
    for bad in (HOSTILE, "..", "a/../../b", "x\\..\\y", "C:evil", "a\x00b", "", "/etc/passwd", "..hidden"):
        with pytest.raises(UnsafePathError, match=r"not a plain file name|absolute path"):
            contained(root, "labels", bad)
    (root / "labels").mkdir(parents=True)
    os.symlink(tmp_path / "elsewhere", root / "labels" / "link")
    with pytest.raises(UnsafePathError, match=r"resolves to .*elsewhere.*outside the output folder"):
        contained(root, "labels", "link", "x.tif")


def test_staged_outputs_replace_together_or_not_at_all(tmp_path: Path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text("old a")
    b.write_text("old b")
    with pytest.raises(RuntimeError), staged() as st:
        st.path(a).write_text("new a")
        raise RuntimeError("the stage failed after writing a")
    assert a.read_text() == "old a" and not list(tmp_path.glob(".*staged*"))
    with staged() as st:
        st.path(a).write_text("new a")
        st.path(b).write_text("new b")
    assert (a.read_text(), b.read_text()) == ("new a", "new b")


# ------------------------------------------------------------------------------------------ composites
def _items_json(tmp: Path, items: list[dict]) -> str:
    p = tmp / "items.json"
    p.write_text(json.dumps({"type": "FeatureCollection", "features": items}))
    return str(p)


def _item(iid: str, href: str) -> dict:
    return {"type": "Feature", "id": iid, "properties": {"datetime": "2021-07-01T18:00:00Z"},
            "assets": {b: {"href": f"{href}.{b}.tif"} for b in ("B02", "B03", "B04", "B05", "B06", "B07", "Fmask")}}


@pytest.mark.parametrize("iid", [f"{HOSTILE}/HLS.L30.T10TEK.2021182T180000.v2.0",
                                 "HLS.L30.T10TEK.2021182T180000.v2.0/../../escape",
                                 "HLS.L30.T../../escape.2021182T180000.v2.0"])
def test_composites_refuse_hostile_stac_item_ids(tmp_path: Path, out: Path, iid: str) -> None:
    items = _items_json(tmp_path, [_item(iid, str(tmp_path / "scene"))])
    with pytest.raises(ValueError, match=rf"{items}: .*is not an HLS granule id.*refused"):
        build_composites(items_json=items, aoi=AOI, season=SEASON.replace("_", "/"), output_dir=str(out))
    assert not _escaped(tmp_path) and not out.exists()


@pytest.mark.parametrize("href", ["/vsicurl/http://169.254.169.254/latest", "vrt:///etc/passwd",
                                  "ftp://example.com/scene"])
def test_composites_skip_hostile_asset_hrefs_and_fail_when_none_is_left(tmp_path: Path, out: Path, href: str) -> None:
    items = _items_json(tmp_path, [_item("HLS.L30.T10TEK.2021182T180000.v2.0", href)])
    with pytest.raises(CompositeError, match=r"10TEK: no readable scene among 1 .*HLS.L30.T10TEK.2021182T180000.v2.0"
                                             r".*unsupported href"):
        build_composites(items_json=items, aoi=AOI, season=SEASON.replace("_", "/"), output_dir=str(out))
    assert not list(out.rglob("*.tif")) if out.exists() else True


# ------------------------------------------------------------------------------------------ labels
def _granule(folder: Path, name: str = NAME, **kw: object) -> Path:
    rng = np.random.default_rng(0)
    dt0 = (datetime(2021, 7, 19) - datetime(2018, 1, 1)).total_seconds()  # GEDI delta_time
    beams = {"BEAM0000": synthetic_beam(4000, (AOI[0], AOI[2]), (AOI[1], AOI[3]), rng, delta_time0=dt0)}
    return write_l4a_granule(folder / name, beams, **kw)


@pytest.mark.parametrize(("tags", "message"), [({"MGRS_TILE": HOSTILE}, r"not an MGRS tile id: '\.\./\.\./escape/X'"),
                                               ({"SEASON": "../../escape"}, r"'\.\./\.\./escape' is not a season label")])
def test_labels_refuse_hostile_composite_tags(tmp_path: Path, out: Path, pair, tags: dict, message: str) -> None:
    comp, _ = pair
    _tag(comp, **tags)
    g = _granule(tmp_path / "gedi")
    with pytest.raises(ValueError, match=rf"composite {comp}: .*{message}"):
        run_gedi_labels(aoi=AOI, season=SEASON.replace("_", "/"), granules=[str(g)], composites=[str(comp)],
                        output_dir=str(out))
    assert not _escaped(tmp_path) and not out.exists()


@pytest.mark.parametrize("href", ["{tmp}/gedi/..", "{tmp}/gedi/..h5", "{tmp}/gedi/..%2F..%2Fescape.h5"])
def test_labels_skip_hostile_granule_names(tmp_path: Path, out: Path, href: str) -> None:
    good = _granule(tmp_path / "gedi")
    hostile = href.format(tmp=tmp_path)
    res = run_gedi_labels(aoi=AOI, season=SEASON.replace("_", "/"), granules=[hostile, str(good)],
                          output_dir=str(out))
    assert res.granules_used == [good.name[:-3]] and res.n_shots > 0
    (skip,) = res.granules_skipped
    assert skip["reason"]  # named with what is wrong: not a plain name, or not found / not a GEDI file
    assert not _escaped(tmp_path)
    inside = {p.resolve() for p in out.rglob("*")}
    assert all(out.resolve() in p.parents for p in inside)


def test_labels_fail_on_bad_granules_and_keep_the_earlier_labels(tmp_path: Path, out: Path, pair) -> None:
    comp, _ = pair
    good = _granule(tmp_path / "gedi")
    first = run_gedi_labels(aoi=AOI, season=SEASON.replace("_", "/"), granules=[str(good)], composites=[str(comp)],
                            output_dir=str(out))
    label = Path(first.labels["10TEK"])
    assert first.label_stats["10TEK"]["n_labelled_pixels"] > 0
    before = {p: p.read_bytes() for p in (label, Path(first.shots))}
    bad = tmp_path / "bad"
    bad.mkdir()
    text = bad / NAME.replace("O25001", "O25002")
    text.write_text("not an HDF5 file\n")
    trunc = bad / NAME.replace("O25001", "O25003")
    trunc.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    l2a = _granule(bad, NAME.replace("GEDI04_A", "GEDI02_A"))
    missing = _granule(bad, NAME.replace("O25001", "O25004"), omit=("agbd",))
    baddate = _granule(bad, NAME.replace("2021200", "2021399"))
    for granules in ([text], [trunc], [l2a], [missing], [baddate], [text, trunc, l2a, missing, baddate]):
        with pytest.raises(LabelsError, match=r"no usable GEDI L4A granule among the \d+ given, so no label was written; "
                                              r"skipped: .*GEDI0\d_A_\d+"):
            run_gedi_labels(aoi=AOI, season=SEASON.replace("_", "/"), granules=[str(g) for g in granules],
                            composites=[str(comp)], output_dir=str(out))
    assert {p: p.read_bytes() for p in before} == before  # 0 shots never replaces good labels


def test_a_bad_granule_name_date_is_skipped_not_fatal(tmp_path: Path, out: Path) -> None:
    good = _granule(tmp_path / "gedi")
    bad = _granule(tmp_path / "bad", NAME.replace("2021200", "2021399"))
    res = run_gedi_labels(aoi=AOI, season=SEASON.replace("_", "/"), granules=[str(bad), str(good)],
                          output_dir=str(out))
    assert res.granules_used == [good.name[:-3]]
    assert res.granules_skipped == [{"granule": bad.name[:-3], "reason": f"{bad.name}: start time 2021399051430 is "
                                     "not a date YYYYDDDHHMMSS (unconverted data remains: 30)"}]


# ------------------------------------------------------------------------------------------ chips
@pytest.mark.parametrize(("which", "tags", "message"), [
    ("composite", {"MGRS_TILE": HOSTILE}, r"not an MGRS tile id: '\.\./\.\./escape/X'"),
    ("label", {"MGRS_TILE": HOSTILE}, r"not an MGRS tile id: '\.\./\.\./escape/X'"),
    ("composite", {"SEASON": "../../escape"}, r"'\.\./\.\./escape' is not a season label"),
    ("label", {"SEASON": "2021-06-01_2021-09-31"}, r"'2021-06-01_2021-09-31' is not a season label: day is out"),
])
def test_chips_refuse_hostile_tags(tmp_path: Path, out: Path, pair, which: str, tags: dict, message: str) -> None:
    comp, lab = pair
    target = comp if which == "composite" else lab
    _tag(target, **tags)
    with pytest.raises(ChipExportError, match=rf"{target}: .*{message}.*refused"):
        export_chips(composites=[str(comp)], labels=[str(lab)], output_dir=str(out), params=ChipParams(chip_size=64))
    assert not _escaped(tmp_path) and not out.exists()


def test_chips_refuse_a_hostile_export_name(tmp_path: Path, out: Path, pair) -> None:
    comp, lab = pair
    with pytest.raises(ChipExportError, match=r"export_name '\.\.' is not a plain file name"):
        export_chips(composites=[str(comp)], labels=[str(lab)], output_dir=str(out), export_name="../escape",
                     params=ChipParams(chip_size=64))
    assert not _escaped(tmp_path)


# ------------------------------------------------------------------------------------------ maps
def test_map_refuses_a_hostile_tile_tag(tmp_path: Path, out: Path, pair, checkpoint: str) -> None:
    comp, _ = pair
    _tag(comp, MGRS_TILE=HOSTILE)
    with pytest.raises(MappingError, match=rf"composite {comp}: not an MGRS tile id: '\.\./\.\./escape/X'; refused"):
        predict_map(checkpoint=checkpoint, composite=str(comp), output_dir=str(out))
    assert not _escaped(tmp_path) and not out.exists()


def test_map_of_an_all_nodata_composite_fails_and_keeps_the_earlier_map(tmp_path: Path, out: Path, pair,
                                                                        checkpoint: str) -> None:
    comp, _ = pair
    first = predict_map(checkpoint=checkpoint, composite=str(comp), output_dir=str(out), crop=64, stride=64)
    before = Path(first.map).read_bytes()
    with rasterio.open(comp, "r+") as ds:
        ds.write(np.full((ds.count, ds.height, ds.width), -9999.0, np.float32))
    with pytest.raises(MappingError, match=rf"composite {comp}: no pixel has a value in every band"):
        predict_map(checkpoint=checkpoint, composite=str(comp), output_dir=str(out), crop=64, stride=64)
    assert Path(first.map).read_bytes() == before
