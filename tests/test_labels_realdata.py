"""Acceptance on the real granules in ../shared/realdata: filter counts equal a direct h5py count; the
all-fill granule and the L2A granule give the documented outcomes (docs/labels.md)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import rasterio

from core.grid import Grid
from labels import LabelsError, run_gedi_labels
from labels.contracts import LabelOptions
from labels.filters import FILTER_KEYS
from labels.rasterize import pixel_index

V01 = "gedi_l4a/GEDI04_A_2020036151358_O06515_02_T00198_02_002_01_V002.h5"
ALL_FILL = "gedi_l4a/GEDI04_A_2019117051430_O02102_01_T04603_02_002_02_V002.h5"
L2A = "gedi_other/GEDI02_A_2019162222610_O02812_04_T01244_02_003_01_V002.h5"
WORLD = [-180.0, -90.0, 180.0, 90.0]
IRAN = [51.0, 35.5, 52.0, 36.5]  # only the shots near 36 N 51 E


def _file(realdata: Path, rel: str) -> Path:
    p = realdata / rel
    if not p.is_file():
        pytest.skip(f"{p} absent")
    return p


def _h5py_counts(path: Path, bbox: list[float], params: dict) -> dict[str, int]:
    """The reference: whole datasets read with h5py, each filter applied in turn."""
    c = dict.fromkeys(("input", *FILTER_KEYS, "kept"), 0)
    with h5py.File(path) as h5:
        for beam in [k for k in h5 if k.startswith("BEAM")]:
            g = h5[beam]
            lon, lat = g["lon_lowestmode"][()], g["lat_lowestmode"][()]
            keep = np.ones(lon.size, bool)
            c["input"] += lon.size
            steps = [
                ("outside_area", (lon >= bbox[0]) & (lon <= bbox[2]) & (lat >= bbox[1]) & (lat <= bbox[3])),
                ("fill", g["agbd"][()] != -9999),
                ("l4_quality", g["l4_quality_flag"][()] == 1 if params.get("require_l4_quality", True) else None),
                ("degraded", g["degrade_flag"][()] == 0 if params.get("drop_degraded", True) else None),
                ("sensitivity", g["sensitivity"][()] >= np.float32(params["min_sensitivity"])
                 if params.get("min_sensitivity") is not None else None),
                ("leaf_off", g["land_cover_data/leaf_off_flag"][()] == 0 if params.get("leaf_on_only") else None),
                ("pft", np.isin(g["land_cover_data/pft_class"][()], params["pft_classes"])
                 if params.get("pft_classes") else None),
            ]
            for key, m in steps:
                if m is not None:
                    c[key] += int((keep & ~m).sum())
                    keep &= m
            c["kept"] += int(keep.sum())
    return c


@pytest.mark.parametrize("bbox", [WORLD, IRAN])
@pytest.mark.parametrize("params", [
    {},
    {"require_l4_quality": False, "drop_degraded": False},
    {"min_sensitivity": 0.95},
    {"leaf_on_only": True},
    {"pft_classes": [6]},
    {"min_sensitivity": 0.9, "leaf_on_only": True, "pft_classes": [6, 11]},
])
def test_filter_counts_equal_h5py(realdata: Path, tmp_path: Path, bbox: list[float], params: dict) -> None:
    path = _file(realdata, V01)
    res = run_gedi_labels(aoi=bbox, granules=[str(path)], output_dir=str(tmp_path), options=LabelOptions(**params))
    expected = _h5py_counts(path, bbox, params)
    got = res.filter_counts["per_granule"][path.name[:-3]]
    assert got == expected
    assert res.filter_counts["total"] == expected
    assert res.n_shots == expected["kept"] > 0
    import geopandas as gpd

    gdf = gpd.read_parquet(res.shots)
    assert len(gdf) == expected["kept"] and gdf.crs.to_epsg() == 4326
    assert (gdf["agbd"] != -9999).all() and gdf["shot_number"].is_unique
    if params.get("require_l4_quality", True):
        assert (gdf["l4_quality_flag"] == 1).all()


def test_version_01_warning_and_date_window(realdata: Path, tmp_path: Path) -> None:
    path = _file(realdata, V01)  # acquired 2020-02-05
    res = run_gedi_labels(aoi=WORLD, granules=[str(path)], output_dir=str(tmp_path / "a"),
                          season={"start": "2020-02-05", "end": "2020-02-05"})
    assert res.n_shots > 0 and any("production version 01" in w for w in res.warnings)
    # no shot in the date window / the only granule skipped: the stage fails naming why, writing nothing
    with pytest.raises(LabelsError, match=rf"no GEDI shot was kept .*{path.name[:-3]}: \d+ shots read, removed: "
                                          r"(outside_area \d+, )?outside_dates \d+\)"):
        run_gedi_labels(aoi=WORLD, granules=[str(path)], output_dir=str(tmp_path / "b"),
                        season={"start": "2020-02-06", "end": "2020-03-01"})
    with pytest.raises(LabelsError, match=rf"no usable GEDI L4A granule .*{path.name[:-3]}: production version 01"):
        run_gedi_labels(aoi=WORLD, granules=[str(path)], output_dir=str(tmp_path / "c"),
                        options=LabelOptions(skip_version_01=True))
    assert not (tmp_path / "b" / "labels" / "gedi_shots.parquet").exists()
    assert not (tmp_path / "c" / "labels" / "gedi_shots.parquet").exists()


def _composite(path: Path, grid: Grid, season: str) -> Path:
    """A stand-in composite COG: only its grid and tags matter to the labels engine."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", width=grid.width, height=grid.height, count=1,
                       dtype="float32", crs=grid.crs, transform=grid.affine, nodata=-9999.0) as ds:
        ds.write(np.zeros(grid.shape, np.float32), 1)
        ds.update_tags(MGRS_TILE=grid.tile, SEASON=season)
    return path


def test_all_fill_granule_outcomes(realdata: Path, tmp_path: Path) -> None:
    path = _file(realdata, ALL_FILL)  # South Pacific, every agbd -9999, no quality datasets
    aoi = [-90.1, -44.0, -88.9, -43.4]
    from pyproj import Transformer

    x, y = Transformer.from_crs("EPSG:4326", "EPSG:32616", always_xy=True).transform(-89.5, -43.65)
    x0, y0 = 60.0 * round(x / 60.0) - 30_000.0, 60.0 * round(y / 60.0) + 30_000.0
    grid = Grid("EPSG:32616", (30.0, 0.0, x0, 0.0, -30.0, y0), 2000, 2000, "16GCP")  # covers the shots
    comp = _composite(tmp_path / "composites" / "16GCP" / "2019-04-01_2019-05-31.tif", grid,
                      "2019-04-01_2019-05-31")
    # default filters need l4_quality_flag / degrade_flag: the granule is skipped, naming what is missing
    with pytest.raises(LabelsError, match=rf"no usable GEDI L4A granule among the 1 given.*{path.name}: BEAM\d+ "
                                          r"lacks dataset\(s\) l4_quality_flag, degrade_flag"):
        run_gedi_labels(aoi=aoi, granules=[str(path)], composites=[str(comp)], output_dir=str(tmp_path / "d"))
    assert not (tmp_path / "d" / "labels").exists() or not list((tmp_path / "d" / "labels").rglob("*.tif"))
    # on_read_error="fail": the same message as an exception
    with pytest.raises(ValueError, match="lacks dataset"):
        run_gedi_labels(aoi=aoi, granules=[str(path)], output_dir=str(tmp_path / "e"), season="2019-04-01/2019-05-31", options=LabelOptions(on_read_error="fail"))
    # without the quality filters it is read: every shot is fill, so no label raster is written (it would be empty)
    with pytest.raises(LabelsError, match=rf"no GEDI shot was kept .*{path.name[:-3]}: 8000 shots read, removed: "
                                          r"outside_area 1000, fill 7000"):
        run_gedi_labels(aoi=aoi, granules=[str(path)], composites=str(tmp_path), output_dir=str(tmp_path / "f"),
                        options=LabelOptions(require_l4_quality=False, drop_degraded=False, nodata=-1.0))
    assert not list((tmp_path / "f").rglob("*.tif"))
    with h5py.File(path) as h5:  # the fill shots do lie on the grid: the emptiness comes from the fill filter
        xs, ys = Transformer.from_crs("EPSG:4326", grid.crs, always_xy=True).transform(
            h5["BEAM0000/lon_lowestmode"][()], h5["BEAM0000/lat_lowestmode"][()])
    assert (pixel_index(np.asarray(xs), np.asarray(ys), grid) >= 0).sum() > 100


def test_l2a_granule_outcomes(realdata: Path, tmp_path: Path) -> None:
    path = _file(realdata, L2A)
    with pytest.raises(LabelsError, match=rf"no usable GEDI L4A granule among the 1 given, so no label was "
                                          rf"written; skipped: {path.name[:-3]}: {path.name}: is a GEDI L2A granule "
                                          r"\(file name prefix GEDI02_A\), not GEDI L4A"):
        run_gedi_labels(aoi=WORLD, granules=[str(path)], output_dir=str(tmp_path))
    with pytest.raises(ValueError, match=f"{path.name}: is a GEDI L2A granule"):
        run_gedi_labels(aoi=WORLD, granules=[str(path)], output_dir=str(tmp_path), options=LabelOptions(on_read_error="fail"))
