"""The Esri side files written by the exporter parse with the keys and conventions of a real ArcGIS export.

Compares against ../shared/realdata/esri_export_tiles (skipped when absent): same keys (ours may add
``AGB_`` keys), same value types and nested keys, the same placeholder strings where ArcGIS writes
placeholders, the same fixed values (``RasterCount``, modes, feature statistics), the second raster in
``images2/`` (CRLF + backslash + trailing-space ``map.txt`` naming ``images2``, never ``labels/``), the
same ``stats.txt`` lines, the same JSON formatting (``" : "``, indent 2, LF, no final newline). Every
per-split folder (``esri_splits/<split>``) is checked the same way.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from chips.export import export_chips
from chips.manifest import ExportResult
from chips.params import ChipParams
from core.grid import mgrs_tile_grid
from sampleworld.synthetic.pairs import write_pair


def run_export(*, composites: Any, labels: Any, output_dir: Any, **params: Any) -> ExportResult:
    """export_chips with the chip parameters given as keywords (tests vary them one at a time)."""
    return export_chips(composites=composites, labels=labels, output_dir=output_dir, params=ChipParams(**params))


PLACEHOLDER = re.compile(r"^e\.g\. ")


@pytest.fixture(scope="module")
def real(realdata: Path) -> Path:
    """The real ArcGIS export metadata (conftest's ``realdata`` skips when ../shared/realdata is absent)."""
    path = realdata / "esri_export_tiles"
    if not path.is_dir():
        pytest.skip(f"real ArcGIS export metadata not found at {path}")
    return path


@pytest.fixture(scope="module")
def ours(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("esri")
    g = mgrs_tile_grid("10TEK").clip((520000, 4450000, 520000 + 30 * 130, 4450000 + 30 * 130))
    write_pair(root / "in", g, compress=None)
    res = run_export(composites=root / "in", labels=root / "in", output_dir=root / "out", chip_size=32,
                     split_block_m=1000, split_buffer_m=100)
    return Path(res.esri_dir)


@pytest.fixture(scope="module", params=["esri", "train", "val", "test"])
def folder(request: pytest.FixtureRequest, ours: Path) -> Path:
    """The export's esri/ folder and each per-split Export Tiles folder."""
    return ours if request.param == "esri" else ours.parent / "esri_splits" / request.param


def _same_shape(real: Any, ours: Any, path: str) -> None:
    """Every key of ``real`` exists in ``ours`` with the same JSON type (placeholders: any type)."""
    if isinstance(real, str) and PLACEHOLDER.match(real):
        assert ours == real, f"{path}: ArcGIS writes the placeholder {real!r}, ours {ours!r}"
        return
    if isinstance(real, bool) or isinstance(ours, bool):
        assert type(real) is type(ours), path
        return
    if isinstance(real, int | float):
        assert isinstance(ours, int | float), f"{path}: {ours!r} is not a number"
        return
    assert type(real) is type(ours), f"{path}: {type(ours).__name__} != {type(real).__name__}"
    if isinstance(real, dict):
        missing = set(real) - set(ours)
        assert not missing, f"{path}: missing keys {sorted(missing)}"
        extra = [k for k in set(ours) - set(real) if not k.startswith("AGB_")]
        assert not extra, f"{path}: keys the real export lacks and without the AGB_ prefix: {extra}"
        for k in real:
            _same_shape(real[k], ours[k], f"{path}.{k}")
    elif isinstance(real, list) and real and ours:
        _same_shape(real[0], ours[0], f"{path}[0]")


@pytest.mark.parametrize("name", ["esri_model_definition.emd", "esri_accumulated_stats.json"])
def test_json_keys_and_types_match_real_export(real: Path, folder: Path, name: str) -> None:
    r = json.loads((real / name).read_text())
    o = json.loads((folder / name).read_text())
    _same_shape(r, o, name)
    assert o["MetaDataMode"] == r["MetaDataMode"] == "Export_Tiles"
    if name.endswith(".emd"):
        assert o["ImageSpaceUsed"] == r["ImageSpaceUsed"]
        assert o["CropTileMode"] == r["CropTileMode"]
        assert set(o["AllTilesStats"][0]) == set(r["AllTilesStats"][0])


FIXED = ["Version", "NumClasses", "OutputFeatures", "MetaDataMode", "FeatureStats", "BlackenAroundFeature",
         "IsMultidimensional", "CropTileMode", "ImageSpaceUsed", "WellKnownBandNames (FYI, these band names can be "
         "used in ExtractBands)"]


@pytest.mark.parametrize("name", ["esri_model_definition.emd", "esri_accumulated_stats.json"])
def test_fixed_values_equal_real_export(real: Path, folder: Path, name: str) -> None:
    """Field by field: what does not depend on the data is what ArcGIS writes (RasterCount 1 per input raster)."""
    r = json.loads((real / name).read_text())
    o = json.loads((folder / name).read_text())
    for key in FIXED:
        if key in r:
            assert o[key] == r[key], key
    for props in ("InputRastersProps", "InputRastersProps2"):
        assert o[props]["RasterCount"] == r[props]["RasterCount"] == 1
    placeholders = {k: v for k, v in r.items() if isinstance(v, str) and PLACEHOLDER.match(v)}
    assert {k: o[k] for k in placeholders} == placeholders
    if name.endswith(".emd"):
        assert set(placeholders) >= {"Framework", "ModelType", "Description", "ExtractBands", "DataRange",
                                     "ModelPadding"}


def test_second_raster_is_images2_as_arcgis_writes_it(real: Path, folder: Path) -> None:
    """arcgis.learn reads Export_Tiles + labels/ as a thematic dataset with labels/ as INPUT: never write it."""
    assert b"images2\\" in (real / "map.txt").read_bytes()
    dirs = sorted(p.name for p in folder.iterdir() if p.is_dir())
    assert dirs == ["images", "images2"]
    names = [ln.split()[1] for ln in (folder / "map.txt").read_text().splitlines()]
    assert names and all(n.startswith("images2\\") and (folder / n.replace("\\", "/")).is_file() for n in names)


@pytest.mark.parametrize("name", ["esri_model_definition.emd", "esri_accumulated_stats.json"])
def test_json_formatting_matches_real_export(real: Path, folder: Path, name: str) -> None:
    rb, ob = (real / name).read_bytes(), (folder / name).read_bytes()
    for b in (rb, ob):
        assert b"\r\n" not in b and not b.endswith(b"\n")
        assert b'\n  "' in b and b'" : ' in b and b'":' not in b


def test_accumulated_stats_consistent(ours: Path) -> None:
    acc = json.loads((ours / "esri_accumulated_stats.json").read_text())
    emd = json.loads((ours / "esri_model_definition.emd").read_text())
    for st, ts in zip(acc["BandStatsState"], emd["AllTilesStats"], strict=True):
        # ArcGIS: M1 = mean, M2 = sum of squared deviations, StdDev = sqrt(M2 / Num)
        assert st["M1"] == pytest.approx(ts["Mean"])
        assert (st["M2"] / st["Num"]) ** 0.5 == pytest.approx(ts["StdDev"])
    assert acc["NumBands"] == len(acc["BandStatsState"]) == len(emd["InputRastersProps"]["BandNames"])


def test_map_txt_matches_real_conventions(real: Path, folder: Path) -> None:
    pattern = re.compile(rb"^images\\(\d{12})\.tif images2\\(\d{12})\.tif \r\n$")
    for f in (real / "map.txt", folder / "map.txt"):
        raw = f.read_bytes()
        lines = raw.splitlines(keepends=True)
        assert lines and all(pattern.match(ln) for ln in lines), f
        assert raw.count(b"\n") == raw.count(b"\r\n")


def test_stats_txt_matches_real_lines(real: Path, folder: Path) -> None:
    r = (real / "stats.txt").read_bytes().split(b"\r\n")
    o = (folder / "stats.txt").read_bytes().split(b"\r\n")
    head = re.compile(rb"^images = \d+ \*\d+\*\d+\*\d+$")
    assert head.match(r[0]) and head.match(o[0])
    assert o[1:] == r[1:]
