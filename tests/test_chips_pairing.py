"""Pairing composites with label rasters by grid and SEASON tag; small areas; several seasons."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import rasterio

from chips.audit import audit_export
from chips.export import ChipExportError, export_chips
from chips.params import ChipParams
from core.constants import IMAGE_NODATA, LABEL_NODATA
from core.grid import Grid, mgrs_tile_grid
from sampleworld.synthetic.pairs import COMPOSITE_DESCRIPTIONS, synth_arrays, write_pair

SMALL = ChipParams(chip_size=32, split_block_m=1000.0, split_buffer_m=100.0)


def _grid(x0: float = 520020.0, n: int = 100, tile: str = "10TEK") -> Grid:
    return mgrs_tile_grid(tile).clip((x0, 4450020, x0 + 30 * n, 4450020 + 30 * n))


def _write(path: Path, grid: Grid, kind: str, tags: dict[str, str] | None = None) -> Path:
    """A composite or label raster at ``path`` (any name), with only the given tags."""
    comp, lab = synth_arrays(grid)
    arr, nodata, desc = ((comp, IMAGE_NODATA, COMPOSITE_DESCRIPTIONS) if kind == "composite"
                         else (lab, LABEL_NODATA, ("agbd", "shot_count")))
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", width=grid.width, height=grid.height, count=arr.shape[0],
                       dtype="float32", crs=grid.crs, transform=grid.affine, nodata=nodata) as ds:
        ds.write(arr)
        ds.descriptions = desc
        if tags:
            ds.update_tags(**tags)
    return path


def _export(tmp: Path, comps: list[Path], labs: list[Path], params: ChipParams = SMALL):  # noqa: ANN202
    return export_chips(composites=comps, labels=labs, output_dir=tmp / "out", params=params)


def _rows(res) -> list[dict]:  # noqa: ANN001
    return json.loads(Path(res.split_file).read_text())["chips"]


@pytest.mark.parametrize("names", [("DATA/T19LBJ_composite.tif", "DATA/T19LBJ_label.tif"),
                                   ("a/input.tif", "b/reference.tif")])
def test_an_explicit_pair_exports_whatever_the_file_names(tmp_path: Path, names: tuple[str, str]) -> None:
    g = _grid()
    comp = _write(tmp_path / names[0], g, "composite")
    lab = _write(tmp_path / names[1], g, "label")
    res = _export(tmp_path, [comp], [lab])
    assert all(res.labelled_pixels[s] > 0 for s in ("train", "val", "test"))
    man = json.loads(Path(res.chips_export).read_text())
    assert [(s["composite"], s["label"]) for s in man["sources"]] == [(str(comp.resolve()), str(lab.resolve()))]
    assert {(r["tile"], r["season"]) for r in _rows(res)} == {("UTM10", "unknown")}  # no tags: no names made up


def test_tags_name_the_tile_and_season_of_an_explicit_pair(tmp_path: Path) -> None:
    g = _grid()
    comp = _write(tmp_path / "x.tif", g, "composite", {"MGRS_TILE": "10TEK", "SEASON": "2022-06-01_2022-09-30"})
    lab = _write(tmp_path / "y.tif", g, "label")
    res = _export(tmp_path, [comp], [lab])
    assert {(r["tile"], r["season"]) for r in _rows(res)} == {("10TEK", "2022-06-01_2022-09-30")}


def test_seasons_on_one_grid_pair_by_tag_not_by_name(tmp_path: Path) -> None:
    """Two seasons of one tile, label files named the other way round: the SEASON tags decide. A labelled
    ground position of both seasons is in the same split (blocks do not depend on the season)."""
    g = _grid()
    s1, s2 = "2021-06-01_2021-09-30", "2022-06-01_2022-09-30"
    comps = [_write(tmp_path / f"c_{s}.tif", g, "composite", {"SEASON": s}) for s in (s1, s2)]
    labs = [_write(tmp_path / f"l_{other}.tif", g, "label", {"SEASON": s}) for s, other in ((s1, s2), (s2, s1))]
    res = _export(tmp_path, comps, labs[::-1])
    man = json.loads(Path(res.chips_export).read_text())
    assert {(s["season"], Path(s["label"]).name) for s in man["sources"]} == {(s1, f"l_{s2}.tif"), (s2, f"l_{s1}.tif")}
    rows = _rows(res)
    assert {r["season"] for r in rows} == {s1, s2}
    split_of = {}
    for r in rows:  # same position, same labelled pixels in both seasons (synthetic labels): same split
        split_of.setdefault((r["row"], r["col"], r["split"]), set()).add(r["season"])
    assert all(v == {s1, s2} for v in split_of.values())
    assert audit_export(res.export_dir).ok


@pytest.mark.parametrize(
    ("case", "match"),
    [("ambiguous", "ambiguous"), ("unmatched_label", "match no composite"),
     ("no_label_on_grid", "no label raster on its grid"), ("two_composites", "both pair with label raster"),
     ("season_mismatch", "different SEASON tags")],
)
def test_ambiguous_or_unmatched_inputs_are_named(tmp_path: Path, case: str, match: str) -> None:
    g, other = _grid(), _grid(x0=530010.0)
    if case == "ambiguous":  # two seasons on one grid without SEASON tags
        comps = [_write(tmp_path / f"c{i}.tif", g, "composite") for i in (1, 2)]
        labs = [_write(tmp_path / f"l{i}.tif", g, "label") for i in (1, 2)]
    elif case == "unmatched_label":
        comps = [_write(tmp_path / "c1.tif", g, "composite"), _write(tmp_path / "c2.tif", other, "composite")]
        labs = [_write(tmp_path / "l1.tif", g, "label"), _write(tmp_path / "l2.tif", other, "label"),
                _write(tmp_path / "l3.tif", _grid(x0=540000.0), "label")]
    elif case == "no_label_on_grid":
        comps = [_write(tmp_path / "c1.tif", g, "composite"), _write(tmp_path / "c2.tif", other, "composite")]
        labs = [_write(tmp_path / "l1.tif", g, "label")]
    elif case == "two_composites":
        comps = [_write(tmp_path / f"c{i}.tif", g, "composite", {"SEASON": "2021-06-01_2021-09-30"}) for i in (1, 2)]
        labs = [_write(tmp_path / "l1.tif", g, "label", {"SEASON": "2021-06-01_2021-09-30"}), _write(tmp_path / "l2.tif", other, "label")]
        comps.append(_write(tmp_path / "c3.tif", other, "composite"))
    else:
        comps = [_write(tmp_path / "c1.tif", g, "composite", {"SEASON": "2021-06-01_2021-09-30"}),
                 _write(tmp_path / "c2.tif", other, "composite")]
        labs = [_write(tmp_path / "l1.tif", g, "label", {"SEASON": "2022-06-01_2022-09-30"}), _write(tmp_path / "l2.tif", other, "label")]
    with pytest.raises(ChipExportError, match=match) as err:
        _export(tmp_path, comps, labs)
    named = {"ambiguous": ["l1.tif", "l2.tif", "c1.tif"], "unmatched_label": ["l3.tif"],
             "no_label_on_grid": ["c2.tif", "l1.tif"], "two_composites": ["c1.tif", "c2.tif", "l1.tif"],
             "season_mismatch": ["c1.tif", "l1.tif"]}[case]
    assert all(n in str(err.value) for n in named), err.value
    assert not (tmp_path / "out" / "chips").exists()


def test_label_folder_with_extra_tiles_is_logged_not_fatal(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    comp, _ = write_pair(tmp_path, _grid(), compress=None)
    write_pair(tmp_path, _grid(x0=610020.0, tile="10TFK"), compress=None)
    with caplog.at_level(logging.WARNING, logger="chips.sources"):
        res = export_chips(composites=[comp], labels=tmp_path / "labels", output_dir=tmp_path / "out", params=SMALL)
    assert res.n_chips > 0 and "10TFK" in caplog.text and "ignored" in caplog.text


def test_a_single_pair_with_contradicting_season_tags_is_refused(tmp_path: Path) -> None:
    g = _grid()
    comp = _write(tmp_path / "c.tif", g, "composite", {"SEASON": "2021-06-01_2021-09-30"})
    lab = _write(tmp_path / "l.tif", g, "label", {"SEASON": "2022-06-01_2022-09-30"})
    with pytest.raises(ChipExportError, match=r"c\.tif .*l\.tif .*different SEASON tags"):
        _export(tmp_path, [comp], [lab])


def test_an_area_inside_one_block_fails_before_writing_with_the_smallest_workable_area(tmp_path: Path) -> None:
    g = mgrs_tile_grid("10TEK").clip((505020, 4451010, 505020 + 30 * 100, 4451010 + 30 * 100))  # in one 5 km block
    comp, lab = write_pair(tmp_path, g, compress=None)
    with pytest.raises(ChipExportError) as err:
        export_chips(composites=[comp], labels=[lab], output_dir=tmp_path / "out", params=ChipParams(chip_size=32))
    msg = str(err.value)
    assert "['val', 'test'] got no labelled pixel" in msg and "1 block(s) of 5000 m" in msg
    assert "smallest workable area with split_block_m=5000 and split_buffer_m=500 is about 10.5 km x 10.5 km" in msg
    assert str(comp.resolve()) in msg
    assert not (tmp_path / "out" / "chips").exists() and not list((tmp_path / "out").glob(".chips*"))
    ok = export_chips(composites=[comp], labels=[lab], output_dir=tmp_path / "out",
                      params=ChipParams(chip_size=32, split_block_m=1000, split_buffer_m=100))
    assert all(ok.labelled_pixels[s] > 0 for s in ("train", "val", "test"))  # the suggested remedy works


def test_train_only_export_needs_no_other_split(tmp_path: Path) -> None:
    g = mgrs_tile_grid("10TEK").clip((505020, 4451010, 505020 + 30 * 100, 4451010 + 30 * 100))
    comp, lab = write_pair(tmp_path, g, compress=None)
    res = export_chips(composites=[comp], labels=[lab], output_dir=tmp_path / "out",
                       params=ChipParams(chip_size=32, split_fractions=(1.0, 0.0, 0.0)))
    assert res.splits["val"] == res.splits["test"] == 0 and res.labelled_pixels["train"] > 0
    assert res.masked_buffer == 0


def test_split_parameters_are_checked() -> None:
    with pytest.raises(ChipExportError, match="split_block_m"):
        ChipParams(split_block_m=400, split_buffer_m=500)
    with pytest.raises(ChipExportError, match="split_buffer_m"):
        ChipParams(split_buffer_m=-1)


def test_overlapping_tiles_clipped_to_one_area_pair_by_tile_tag(tmp_path: Path) -> None:
    """10TEK and 10TFK clipped to an area in their overlap share one grid: the MGRS_TILE tags pair them, and
    the second tile's chips are the first's ground positions (exported once)."""
    g = _grid(x0=603000.0)  # in the 10TEK / 10TFK overlap
    season = {"SEASON": "2023-06-01_2023-09-30"}
    comps = [_write(tmp_path / f"c{t}.tif", g, "composite", {**season, "MGRS_TILE": t}) for t in ("10TEK", "10TFK")]
    labs = [_write(tmp_path / f"l{t}.tif", g, "label", {**season, "MGRS_TILE": t}) for t in ("10TFK", "10TEK")]
    res = _export(tmp_path, comps, labs)
    man = json.loads(Path(res.chips_export).read_text())
    assert {(s["tile"], Path(s["label"]).name) for s in man["sources"]} == {("10TEK", "l10TEK.tif"),
                                                                         ("10TFK", "l10TFK.tif")}
    assert res.dropped["duplicate_overlap"] > 0 and {r["tile"] for r in _rows(res)} == {"10TEK"}
    with pytest.raises(ChipExportError, match="different MGRS_TILE tags"):
        _export(tmp_path / "x", comps[:1] + [_write(tmp_path / "c3.tif", _grid(), "composite")],
                labs[:1] + [_write(tmp_path / "l3.tif", _grid(), "label")])
