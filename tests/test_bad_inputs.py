"""The catalogue of bad inputs: one row per input, the engine call it reaches, and the message expected.

Every message must name the file or item (``{tmp}`` stands for the case's folder) and say what is wrong.
This pass covers the engine entry points (areas, seasons, ids, composites, labels, chips, maps); the flow/CLI
cases (errors for people, crash trials, signals, locks) come in a later pass and join this table.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio

from chips.export import export_chips
from chips.params import ChipParams
from chips.sources import ChipExportError
from compositing.composite import CompositeError, build_composites
from core.area import AoiError, Season, parse_aoi, parse_season_label
from core.files import UnsafePathError, contained
from core.grid import GridError, mgrs_tile_grid, normalise_tile, tile_of_item_id
from labels import GediReadError, LabelsError, parse_granule_name, run_gedi_labels
from labels.contracts import LabelOptions
from sampleworld.synthetic.granules import synthetic_beam, write_l4a_granule
from sampleworld.synthetic.pairs import SEASON, write_pair
from training.checkpoint import CheckpointError, save_checkpoint
from training.mapping import MappingError, predict_map
from training.model import build_model

GRID = mgrs_tile_grid("10TEK").window_bounds(1000, 1000, 256, 256)
AOI = [-122.63, 40.32, -122.57, 40.37]  # inside GRID
NAME = "GEDI04_A_2021200051430_O25001_02_T01234_02_004_02_V002.h5"
SCENE = "HLS.L30.T10TEK.2021182T180000.v2.0"
BANDS = ("B02", "B03", "B04", "B05", "B06", "B07", "Fmask")


class Ctx:
    """Inputs of one case, made on first use under ``tmp``."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.out = tmp / "out"

    @cached_property
    def pair(self) -> tuple[Path, Path]:
        return write_pair(self.tmp / "in", GRID)

    @property
    def comp(self) -> Path:
        return self.pair[0]

    @property
    def label(self) -> Path:
        return self.pair[1]

    def granule(self, name: str = NAME, **kw: Any) -> Path:
        dt0 = (datetime(2021, 7, 19) - datetime(2018, 1, 1)).total_seconds()
        beams = {"BEAM0000": synthetic_beam(3000, (AOI[0], AOI[2]), (AOI[1], AOI[3]), np.random.default_rng(0),
                                            delta_time0=dt0)}
        return write_l4a_granule(self.tmp / "gedi" / name, beams, **kw)

    def text(self, name: str, content: str = "this is not what it claims to be\n") -> Path:
        p = self.tmp / "junk" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(content)
        return p

    def tag(self, path: Path, **tags: str) -> Path:
        with rasterio.open(path, "r+") as ds:
            ds.update_tags(**tags)
        return path

    def items(self, items: Any) -> str:
        p = self.tmp / "items.json"
        p.write_text(items if isinstance(items, str) else json.dumps(items))
        return str(p)

    def item(self, iid: str = SCENE, href: str | None = None, drop: str | None = None) -> dict[str, Any]:
        base = href or str(self.tmp / "scene" / iid)
        return {"type": "Feature", "id": iid, "properties": {"datetime": "2021-07-01T18:00:00Z"},
                "assets": {b: {"href": f"{base}.{b}.tif"} for b in BANDS if b != drop}}

    @cached_property
    def checkpoint(self) -> str:
        net = build_model("tiny", in_channels=6)
        return str(save_checkpoint(self.tmp / "model" / "tiny.ckpt", model=net, bands=list(BANDS[:6]),
                                   norm_mean=[500.0] * 6, norm_std=[300.0] * 6, image_nodata=-9999.0,
                                   label_nodata=-9999.0, label_mean=50.0))

    # engine calls
    def composites(self, items: Any) -> Any:
        return build_composites(items_json=self.items(items), aoi=AOI, season=SEASON.replace("_", "/"),
                                output_dir=str(self.out))

    def labels(self, granules: list[Any], composites: list[Any] | None = None, **options: Any) -> Any:
        return run_gedi_labels(aoi=AOI, season=SEASON.replace("_", "/"), granules=[str(g) for g in granules],
                               composites=[str(c) for c in composites] if composites else None,
                               output_dir=str(self.out), options=LabelOptions(**options))

    def chips(self, comps: list[Path] | None = None, labs: list[Path] | None = None, **kw: Any) -> Any:
        return export_chips(composites=[str(c) for c in comps or [self.comp]],
                            labels=[str(x) for x in labs or [self.label]], output_dir=str(self.out),
                            params=ChipParams(chip_size=64), **kw)

    def map(self, composite: Path | None = None, checkpoint: str | None = None) -> Any:
        return predict_map(checkpoint=checkpoint or self.checkpoint, composite=str(composite or self.comp),
                           output_dir=str(self.out), crop=64, stride=64)


def _wrong_grid_label(c: Ctx) -> Path:
    comp, _ = c.pair
    _, lab = write_pair(c.tmp / "other", mgrs_tile_grid("10TEK").window_bounds(1000, 1010, 256, 256))
    return lab


def _all_nodata(c: Ctx) -> Path:
    with rasterio.open(c.comp, "r+") as ds:
        ds.write(np.full((ds.count, ds.height, ds.width), -9999.0, np.float32))
    return c.comp


def _symlinked_out(c: Ctx) -> Path:
    (c.out / "labels").mkdir(parents=True)
    os.symlink(c.tmp / "elsewhere", c.out / "labels" / "10TEK")
    return contained(c.out, "labels", "10TEK", f"{SEASON}.tif")


BOWTIE = {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}
OVERLAP = {"type": "MultiPolygon", "coordinates": [[[[0, 0], [2, 0], [2, 2], [0, 2], [0, 0]]],
                                                   [[[1, 1], [3, 1], [3, 3], [1, 3], [1, 1]]]]}
UNSPLIT = {"type": "Polygon", "coordinates": [[[179.6, -16.7], [-179.6, -16.7], [-179.6, -16.3], [179.6, -16.3],
                                               [179.6, -16.7]]]}
Case = tuple[str, Callable[[Ctx], Any], type[BaseException], str]
CASES: list[Case] = [
    # ---------------------------------------------------------------- areas and seasons (core.area)
    ("aoi-bowtie", lambda c: parse_aoi(BOWTIE), AoiError, r"aoi is not a valid polygon: Self-intersection\[0.5 0.5\]"),
    ("aoi-overlapping-parts", lambda c: parse_aoi(OVERLAP), AoiError, r"aoi is not a valid polygon: Self-intersection"),
    ("aoi-flat-ring", lambda c: parse_aoi({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [2, 0], [0, 0]]]}),
     AoiError, r"aoi is not a valid polygon"),
    ("aoi-unsplit-antimeridian", lambda c: parse_aoi(UNSPLIT), AoiError,
     r"aoi polygon with bounds \(-179.6, -16.7, 179.6, -16.3\) .* crosses the antimeridian without being split"),
    ("aoi-projected-bbox", lambda c: parse_aoi([500000, 4400000, 510000, 4410000]), AoiError,
     r"aoi bbox \[500000, 4400000, 510000, 4410000\] is not a valid lon/lat box"),
    ("aoi-reversed-bbox", lambda c: parse_aoi([10, 50, 9, 51]), AoiError,
     r"aoi bbox \[10, 50, 9, 51\] is not a valid lon/lat box .*antimeridian is given as GeoJSON split"),
    ("aoi-point", lambda c: parse_aoi({"type": "Point", "coordinates": [0, 0]}), AoiError,
     r"aoi must be a non-empty \(Multi\)Polygon, got Point"),
    ("aoi-garbage-file", lambda c: parse_aoi(str(c.text("area.geojson"))), AoiError,
     r"{tmp}/junk/area.geojson: not valid GeoJSON"),
    ("season-label-slash", lambda c: parse_season_label("2021-06-01/2021-09-30"), AoiError,
     r"season label: '2021-06-01/2021-09-30' is not a season label YYYY-MM-DD_YYYY-MM-DD"),
    ("season-label-bad-day", lambda c: parse_season_label("2021-02-30_2021-09-30"), AoiError,
     r"'2021-02-30_2021-09-30' is not a season label: day is out of range"),
    ("season-label-hostile", lambda c: parse_season_label("../../escape"), AoiError,
     r"'\.\./\.\./escape' is not a season label"),
    ("season-end-before-start", lambda c: Season.from_any({"start": "2021-09-01", "end": "2021-06-01"}), AoiError,
     r"season end 2021-06-01 is before start 2021-09-01"),
    ("season-word", lambda c: Season.from_any("summer"), AoiError, r"season must be .*got 'summer'"),
    # ---------------------------------------------------------------- ids and output paths (core.grid, core.files)
    ("tile-hostile", lambda c: normalise_tile("../../escape/X"), GridError, r"not an MGRS tile id: '\.\./\.\./escape/X'"),
    ("hls-id-hostile", lambda c: tile_of_item_id(f"../{SCENE}"), GridError,
     rf"'\.\./{re.escape(SCENE)}' is not an HLS granule id"),
    ("gedi-name-bad-date", lambda c: parse_granule_name(NAME.replace("2021200", "2021399")), GediReadError,
     r"GEDI04_A_2021399051430_\w+\.h5: start time 2021399051430 is not a date"),
    ("gedi-name-l2a", lambda c: parse_granule_name(NAME.replace("GEDI04_A", "GEDI02_A")), GediReadError,
     r"GEDI02_A_\w+\.h5: is a GEDI L2A granule"),
    ("path-traversal", lambda c: contained(c.out, "labels", "../../escape"), UnsafePathError,
     r"output path '\.\.' is not a plain file name"),
    ("path-symlink-escape", _symlinked_out, UnsafePathError,
     r"{tmp}/out/labels/10TEK/.* resolves to {tmp}/elsewhere/.*, outside the output folder {tmp}/out"),
    # ---------------------------------------------------------------- composites (build_composites)
    ("items-garbage", lambda c: c.composites("<html>maintenance</html>"), ValueError, r"{tmp}/items.json: not valid JSON"),
    ("items-not-items", lambda c: c.composites({"hello": 1}), ValueError,
     r"{tmp}/items.json: expected a FeatureCollection or a list of STAC items"),
    ("items-hostile-id", lambda c: c.composites([c.item(f"../../escape/{SCENE}")]), ValueError,
     r"{tmp}/items.json: '\.\./\.\./escape/HLS\.L30\.T10TEK\S+' is not an HLS granule id.*refused"),
    ("items-without-id", lambda c: c.composites([{"type": "Feature", "assets": {}}]), ValueError,
     r"{tmp}/items.json: STAC item without an id"),
    ("items-empty", lambda c: c.composites({"type": "FeatureCollection", "features": []}), CompositeError,
     r"{tmp}/items.json: no HLS item for tiles any"),
    ("asset-vsi-href", lambda c: c.composites([c.item(href="/vsicurl/http://169.254.169.254/x")]), CompositeError,
     rf"tile 10TEK: no readable scene among 1 .*{re.escape(SCENE)}.*unsupported href"),
    ("asset-text-file", lambda c: c.composites([c.item(href=str(c.text(SCENE).with_suffix("")) + "/x")]), CompositeError,
     rf"tile 10TEK: no readable scene among 1 .*{re.escape(SCENE)}.*cannot open"),
    ("asset-missing", lambda c: c.composites([c.item(drop="B02")]), CompositeError,
     rf"no readable scene among 1 .*{re.escape(SCENE)}.*B02.*item has no such asset"),
    # ---------------------------------------------------------------- labels (run_gedi_labels)
    ("label-composite-hostile-tile", lambda c: c.labels([c.granule()], [c.tag(c.comp, MGRS_TILE="../../escape/X")]),
     ValueError, r"composite {tmp}/in/composites/10TEK/\S+\.tif: not an MGRS tile id"),
    ("label-composite-hostile-season", lambda c: c.labels([c.granule()], [c.tag(c.comp, SEASON="../x")]),
     ValueError, r"composite {tmp}/in/composites/10TEK/\S+\.tif: .*'\.\./x' is not a season label"),
    ("label-composite-missing", lambda c: c.labels([c.granule()], [c.tmp / "nothing.tif"]), ValueError,
     r"composite not found: {tmp}/nothing.tif"),
    ("granule-text-file", lambda c: c.labels([c.text(NAME)]), LabelsError,
     r"no usable GEDI L4A granule .*GEDI04_A_\w+\.h5: cannot open as HDF5 \(truncated or corrupt file\?\)"),
    ("granule-truncated", lambda c: c.labels([_truncated(c)]), LabelsError,
     r"GEDI04_A_\w+\.h5: cannot open as HDF5 .*truncated file"),
    ("granule-l2a", lambda c: c.labels([c.granule(NAME.replace("GEDI04_A", "GEDI02_A"))]), LabelsError,
     r"no usable GEDI L4A granule among the 1 given.*GEDI02_A_\w+\.h5: is a GEDI L2A granule"),
    ("granule-missing-dataset", lambda c: c.labels([c.granule(omit=("degrade_flag",))]), LabelsError,
     r"GEDI04_A_\w+\.h5: BEAM0000 lacks dataset\(s\) degrade_flag"),
    ("granule-not-l4a-content", lambda c: c.labels([c.granule(omit=("agbd",))]), LabelsError,
     r"GEDI04_A_\w+\.h5: BEAM0000 has no 'agbd' dataset, so this is not a GEDI L4A granule"),
    ("granule-bad-date", lambda c: c.labels([c.granule(NAME.replace("2021200", "2021399"))]), LabelsError,
     r"GEDI04_A_2021399051430_\w+\.h5: start time 2021399051430 is not a date"),
    ("granule-missing-file", lambda c: c.labels([c.tmp / NAME]), LabelsError,
     r"{tmp}/GEDI04_A_\w+\.h5: granule file not found"),
    ("granule-unsupported-scheme", lambda c: c.labels([f"ftp://example.com/{NAME}"]), LabelsError,
     rf"ftp://example.com/{NAME}: unsupported URL scheme"),
    ("granule-hostile-name", lambda c: c.labels([c.tmp / ".."]), LabelsError,
     r"granule file name '\.\.\.parquet' is not a plain file name"),
    ("granules-none", lambda c: c.labels([]), LabelsError, r"no usable GEDI L4A granule among the 0 given.*no granule given"),
    ("granule-fail-mode", lambda c: c.labels([c.granule(NAME.replace("GEDI04_A", "GEDI02_A"))], on_read_error="fail"),
     GediReadError, r"GEDI02_A_\w+\.h5: is a GEDI L2A granule"),
    ("shots-off-every-grid", lambda c: c.labels([c.granule()], [_far_composite(c)]), LabelsError,
     r"none of the \d+ kept GEDI shots falls on the composite grids of 10TEK \({tmp}/far/composites/10TEK/\S+\.tif\)"),
    # ---------------------------------------------------------------- chips (export_chips)
    ("chips-hostile-tile-tag", lambda c: c.chips(labs=[c.tag(c.label, MGRS_TILE="../../escape/X")]), ChipExportError,
     r"{tmp}/in/labels/10TEK/\S+\.tif: not an MGRS tile id: '\.\./\.\./escape/X'; refused"),
    ("chips-bad-season-tag", lambda c: c.chips(comps=[c.tag(c.comp, SEASON="2021")]), ChipExportError,
     r"{tmp}/in/composites/10TEK/\S+\.tif: .*'2021' is not a season label"),
    ("chips-wrong-grid-label", lambda c: c.chips(labs=[_wrong_grid_label(c)]), ChipExportError,
     r"{tmp}/other/labels/10TEK/\S+\.tif: not on the grid of {tmp}/in/composites/10TEK/\S+\.tif"),
    ("chips-garbage-label", lambda c: c.chips(labs=[c.text("labels/10TEK/2021-06-01_2021-09-30.tif")]),
     ChipExportError, r"{tmp}/junk/labels/10TEK/2021-06-01_2021-09-30.tif: not a readable raster"),
    ("chips-missing-label", lambda c: c.chips(labs=[c.tmp / "none.tif"]), ChipExportError,
     r"label raster not found: {tmp}/none.tif"),
    ("chips-no-label-for-composite", lambda c: c.chips(labs=[c.tag(c.label, SEASON="2020-06-01_2020-09-30")]),
     ChipExportError,
     r"composite {tmp}/in/composites/10TEK/\S+\.tif .*SEASON 2021-06-01_2021-09-30.* and label raster "
     r"{tmp}/in/labels/10TEK/\S+\.tif .*SEASON 2020-06-01_2020-09-30.* carry different SEASON tags"),
    ("chips-hostile-export-name", lambda c: c.chips(export_name="../../escape"), ChipExportError,
     r"export_name '\.\.' is not a plain file name"),
    # ---------------------------------------------------------------- maps (predict_map)
    ("map-hostile-tile-tag", lambda c: c.map(c.tag(c.comp, MGRS_TILE="../../escape/X")), MappingError,
     r"composite {tmp}/in/composites/10TEK/\S+\.tif: not an MGRS tile id: '\.\./\.\./escape/X'; refused"),
    ("map-garbage-checkpoint", lambda c: c.map(checkpoint=str(c.text("model.ckpt"))), CheckpointError,
     r"checkpoint {tmp}/junk/model.ckpt cannot be read with weights_only=True"),
    ("map-missing-checkpoint", lambda c: c.map(checkpoint=str(c.tmp / "none.ckpt")), MappingError,
     r"checkpoint {tmp}/none.ckpt does not exist"),
    ("map-all-nodata-composite", lambda c: c.map(_all_nodata(c)), MappingError,
     r"composite {tmp}/in/composites/10TEK/\S+\.tif: no pixel has a value in every band"),
    ("map-missing-composite", lambda c: c.map(c.tmp / "none.tif", "unused.ckpt"), MappingError,
     r"composite {tmp}/none.tif does not exist"),
]


def _truncated(c: Ctx) -> Path:
    good = c.granule()
    bad = c.tmp / "trunc" / good.name
    bad.parent.mkdir()
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    return bad


def _far_composite(c: Ctx) -> Path:
    comp, _ = write_pair(c.tmp / "far", mgrs_tile_grid("10TEK").window_bounds(3000, 3000, 64, 64))
    return comp


def test_the_catalogue_is_large_and_unique() -> None:
    names = [c[0] for c in CASES]
    assert len(names) == len(set(names)) and len(names) >= 40


@pytest.mark.parametrize(("name", "call", "error", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_input(tmp_path: Path, name: str, call: Callable[[Ctx], Any], error: type[BaseException],
                   message: str) -> None:
    ctx = Ctx(tmp_path)
    with pytest.raises(error) as info:
        call(ctx)
    pattern = message.replace("{tmp}", re.escape(str(tmp_path)))
    assert re.search(pattern, str(info.value)), f"{name}: {info.value}"
    assert not [p for p in tmp_path.rglob("*") if "escape" in p.name]  # nothing written outside its folder
