"""The sample world's files have the structure of their real NASA counterparts in ../shared/realdata.

Field by field: GeoTIFF dtype, nodata, tags (names and value forms), band description/scale/offset,
CRS form, block size, compression, predictor, overview rule; HDF5 groups, dataset names, dtypes, rank,
chunking, compression, attributes; STAC item keys, links, assets; CMR XML elements. Skips cleanly when
../shared/realdata is absent. Known, documented differences (docs/sampleworld.md) are named where allowed.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from datetime import datetime
from pathlib import Path

import h5py
import numpy as np
import pytest
import rasterio

from core.grid import epsg_of, mgrs_tile_grid
from sampleworld.cog import hls_utm_wkt, overview_factors

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"
REAL_FMASK = REALDATA / "hls" / "HLS.L30.T06WVS.2024120T211159.v2.0.Fmask.tif"
REAL_B01 = REALDATA / "hls" / "HLS.L30.T19LBJ.2020239T144556.v2.0.B01.tif"
REAL_CMR = REALDATA / "hls" / "HLS.L30.T06WVS.2024120T211159.v2.0.cmr.xml"
REAL_ITEM = REALDATA / "stac" / "HLS.L30.T10TEK.2021128T184447.v2.0.stac-item.json"
REAL_L4A = REALDATA / "gedi_l4a" / "GEDI04_A_2020036151358_O06515_02_T00198_02_002_01_V002.h5"
REAL_L4A_MIN = REALDATA / "gedi_l4a" / "GEDI04_A_2019117051430_O02102_01_T04603_02_002_02_V002.h5"
REAL_L2A = REALDATA / "gedi_other" / "GEDI02_A_2019162222610_O02812_04_T01244_02_003_01_V002.h5"
# Real files the sample world has no counterpart of (chip exports are written by chips.export).
NOT_GENERATED = {"README.md", "granite_biomass_chip_T14_input.tif", "granite_biomass_chip_T14_label.tif",
                 "esri_accumulated_stats.json", "esri_model_definition.emd", "map.txt", "stats.txt"}
GEDI_NAME = re.compile(r"^GEDI04_A_(\d{13})_O(\d{5})_(\d{2})_T(\d{5})_(\d{2})_(\d{3})_(\d{2})_V002\.h5$")

pytestmark = pytest.mark.skipif(not REALDATA.is_dir(), reason="../shared/realdata is absent")


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path.name} is not in ../shared/realdata")
    return path




def _asset(items: list[dict], key: str, i: int = 0) -> Path:
    return Path(items[i]["assets"][key]["href"])


def _structure(path: Path) -> dict:
    with rasterio.open(path) as ds:
        return {"driver": ds.driver, "count": ds.count, "dtype": ds.dtypes[0], "nodata": ds.nodata,
                "blocks": ds.block_shapes, "tiled": ds.profile.get("tiled"), "interleave": ds.interleaving,
                "image_structure": {k: v for k, v in ds.tags(ns="IMAGE_STRUCTURE").items() if k != "LAYOUT"},
                "res": ds.res, "rotation": (ds.transform.b, ds.transform.d),
                "band_tags": ds.tags(1), "colorinterp": ds.colorinterp}


def _tags(path: Path) -> dict[str, str]:
    with rasterio.open(path) as ds:
        return ds.tags()


def test_every_real_file_is_covered() -> None:
    covered = {p.name for p in (REAL_FMASK, REAL_B01, REAL_CMR, REAL_ITEM, REAL_L4A, REAL_L4A_MIN, REAL_L2A)}
    present = {p.name for p in REALDATA.rglob("*") if p.is_file()}
    assert present - covered - NOT_GENERATED == set(), "a real file with no structural comparison"


def test_fmask_structure_matches_real(items: list[dict]) -> None:
    real, ours = _need(REAL_FMASK), _asset(items, "Fmask")
    assert _structure(ours) == _structure(real)
    rt, ot = _tags(real), _tags(ours)
    assert set(ot) == set(rt)
    assert ot["Fmask bit description"] == rt["Fmask bit description"]
    assert ot["_FillValue"] == rt["_FillValue"] == "255"
    assert ot["OVR_RESAMPLING_ALG"] == rt["OVR_RESAMPLING_ALG"] == "NEAREST"
    for k in ("cloud_coverage", "spatial_coverage", "NCOLS", "NROWS", "ULX", "ULY", "SPATIAL_RESOLUTION"):
        assert re.fullmatch(r"-?\d+", ot[k]) and re.fullmatch(r"-?\d+", rt[k].split(";")[0]), k
    for k in ("MEAN_SUN_AZIMUTH_ANGLE", "MEAN_SUN_ZENITH_ANGLE", "MEAN_VIEW_AZIMUTH_ANGLE",
              "MEAN_VIEW_ZENITH_ANGLE", "NBAR_SOLAR_ZENITH"):
        float(ot[k]), float(rt[k])
    with rasterio.open(real) as r, rasterio.open(ours) as o:
        assert r.descriptions == o.descriptions == (None,)
        assert r.scales == o.scales and r.offsets == o.offsets
        assert r.overviews(1) == overview_factors(r.width, r.height)
        assert o.overviews(1) == overview_factors(o.width, o.height)
        for ds, t in ((r, rt), (o, ot)):
            assert (int(t["NCOLS"]), int(t["NROWS"])) == (ds.width, ds.height)
            assert (float(t["ULX"]), float(t["ULY"])) == (ds.transform.c, ds.transform.f)
        sample_r = r.read(1, window=((0, 512), (0, 512)))
        sample_o = o.read(1)
    for sample in (sample_r, sample_o):
        valid = sample[sample != 255]
        assert valid.dtype == np.uint8 and (valid & 1).sum() == 0  # bit 0 (cirrus) unused


def test_reflectance_cog_structure_matches_real_b01(items: list[dict]) -> None:
    real = _need(REAL_B01)
    rt = _tags(real)
    with rasterio.open(real) as r:
        r_desc, r_scales, r_offsets, r_wkt = r.descriptions, r.scales, r.offsets, r.crs.to_wkt()
        assert r.overviews(1) == overview_factors(r.width, r.height)
    for key in ("B01", "B02", "B05", "B07", "B09"):
        ours = _asset(items, key)
        assert _structure(ours) == _structure(real), key
        ot = _tags(ours)
        assert set(ot) == set(rt), (key, set(ot) ^ set(rt))
        for k in ("scale_factor", "add_offset", "_FillValue", "OVR_RESAMPLING_ALG", "SPATIAL_RESOLUTION",
                  "ACCODE", "SENSOR", "PROCESSING_LEVEL"):
            assert ot[k] == rt[k], (key, k)
        with rasterio.open(ours) as o:
            if key == "B01":
                assert o.descriptions == r_desc == (ot["long_name"],)
            assert o.scales == r_scales and o.offsets == r_offsets
            assert o.overviews(1) == overview_factors(o.width, o.height)
            wkt = o.crs.to_wkt()
        zone = int(re.search(r"UTM Zone (\d+)", r_wkt).group(1))
        assert wkt == hls_utm_wkt(10) and r_wkt == hls_utm_wkt(zone)  # the same authority-less form
        assert rasterio.crs.CRS.from_wkt(wkt).to_epsg() is None and epsg_of(rasterio.crs.CRS.from_wkt(wkt)) == 32610
    for pattern in ("HLS_PROCESSING_TIME", "L1_PROCESSING_TIME"):
        datetime.strptime(ot[pattern], "%Y-%m-%dT%H:%M:%SZ")
        datetime.strptime(rt[pattern], "%Y-%m-%dT%H:%M:%SZ")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z", ot["SENSING_TIME"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z", rt["SENSING_TIME"])
    assert re.fullmatch(r"L[CO]\d\d_L1TP_\d{6}_\d{8}_\d{8}_02_T1", ot["LANDSAT_PRODUCT_ID"])
    assert ot["HORIZONTAL_CS_NAME"] == "UTM, WGS84, UTM ZONE 10" and rt["HORIZONTAL_CS_NAME"].startswith("UTM, WGS84")


def test_thermal_and_angle_assets_follow_the_same_form(items: list[dict]) -> None:
    rt = _tags(_need(REAL_B01))
    for key, scale, fill, dtype in (("B10", "0.01", "-9999", "int16"), ("SZA", "0.01", "40000", "uint16")):
        ot = _tags(_asset(items, key))
        assert set(ot) == set(rt) and ot["scale_factor"] == scale and ot["_FillValue"] == fill
        with rasterio.open(_asset(items, key)) as o:
            assert o.dtypes[0] == dtype and o.nodata == float(fill) and o.block_shapes == [(256, 256)]


def test_pixel_grid_on_real_tile_lattice(items: list[dict]) -> None:
    with rasterio.open(_need(REAL_FMASK)) as r:  # the real tile origin is what mgrs_tile_grid gives
        assert tuple(r.transform)[:6] == mgrs_tile_grid("06WVS").transform
    for it in items:
        tile = it["id"].split(".")[2][1:]
        with rasterio.open(_asset([it], "B04")) as o:
            t = mgrs_tile_grid(tile).transform
            assert (o.transform.c - t[2]) % 30 == 0 and (o.transform.f - t[5]) % 30 == 0
            assert t[2] <= o.transform.c and o.transform.f <= t[5]
            assert o.res == (30.0, 30.0)


def test_stac_item_matches_real_cmr_stac_item(items: list[dict]) -> None:
    real = json.loads(_need(REAL_ITEM).read_text())
    for ours in items[:3]:
        assert set(ours) == set(real)
        assert set(ours["properties"]) == set(real["properties"])
        assert ours["stac_extensions"] == real["stac_extensions"]
        assert ours["collection"] == real["collection"] == "HLSL30_2.0"
        assert ours["type"] == real["type"] and ours["stac_version"] == real["stac_version"]
        assert [(link["rel"], link["type"], "title" in link) for link in ours["links"]] == \
               [(link["rel"], link["type"], "title" in link) for link in real["links"]]
        assert set(ours["assets"]) == set(real["assets"])
        for key, ra in real["assets"].items():
            oa = ours["assets"][key]
            assert set(oa) == set(ra), key
            assert oa.get("roles") == ra.get("roles") and oa.get("type") == ra.get("type"), key
            if "roles" in ra and ra["roles"] == ["data"]:
                assert oa["href"].endswith(f".{key}.tif") and ra["href"].endswith(f".{key}.tif")
                assert re.fullmatch(r"Direct Download \[\d+\]", oa["title"])
                assert oa["description"] == f"Download {ours['id']}.{key}.tif"
        assert re.fullmatch(r"HLS\.L30\.T\d\d[A-Z]{3}\.\d{7}T\d{6}\.v2\.0", ours["id"])
        for k in ("datetime", "start_datetime", "end_datetime"):
            assert len(ours["properties"][k]) == len(real["properties"][k]), k
        assert isinstance(ours["properties"]["eo:cloud_cover"], int)
        assert ours["geometry"]["type"] == real["geometry"]["type"]
        assert len(ours["geometry"]["coordinates"][0]) == len(real["geometry"]["coordinates"][0])
        assert len(ours["bbox"]) == len(real["bbox"]) == 4


def test_cmr_xml_has_the_real_elements(items: list[dict]) -> None:
    real = ET.parse(_need(REAL_CMR)).getroot()
    ours = ET.parse(_asset(items, "metadata")).getroot()

    def paths(root: ET.Element) -> set[str]:
        out = set()

        def walk(e: ET.Element, p: str) -> None:
            out.add(p)
            for c in e:
                walk(c, f"{p}/{c.tag}")
        walk(root, root.tag)
        return out

    assert paths(ours) <= paths(real)
    for p in ("Granule/GranuleUR", "Granule/Temporal/RangeDateTime/BeginningDateTime",
              "Granule/Spatial/HorizontalSpatialDomain/Geometry/GPolygon/Boundary/Point/PointLongitude",
              "Granule/AdditionalAttributes/AdditionalAttribute/Values/Value"):
        assert p in paths(ours)
    names = {a.findtext("Name") for a in ours.iter("AdditionalAttribute")}
    assert {"CLOUD_COVERAGE", "MGRS_TILE_ID", "SPATIAL_COVERAGE"} <= names
    assert names <= {a.findtext("Name") for a in real.iter("AdditionalAttribute")}


def _datasets(group: h5py.Group) -> dict[str, h5py.Dataset]:
    out: dict[str, h5py.Dataset] = {}

    def walk(g: h5py.Group, prefix: str) -> None:
        for k in g:
            o = g[k]
            if isinstance(o, h5py.Group):
                walk(o, f"{prefix}{k}/")
            else:
                out[f"{prefix}{k}"] = o
    walk(group, "")
    return out


def _attrs_equal(a: h5py.AttributeManager, b: h5py.AttributeManager) -> bool:
    if set(a) != set(b):
        return False
    for k in a:
        va, vb = a[k], b[k]
        if isinstance(va, np.ndarray) or isinstance(vb, np.ndarray):
            if not (np.asarray(va).dtype == np.asarray(vb).dtype and np.array_equal(va, vb)):
                return False
        elif type(va) is not type(vb) or va != vb:
            return False
    return True


def test_gedi_granule_structure_matches_real(world: dict) -> None:
    real_path = _need(REAL_L4A)
    with h5py.File(real_path) as real:
        for path in world["gedi"]["granules"]:
            assert GEDI_NAME.match(Path(path).name) and GEDI_NAME.match(real_path.name)
            with h5py.File(path) as ours:
                assert _attrs_equal(ours.attrs, real.attrs)
                beams = [k for k in ours if k.startswith("BEAM")]
                assert set(ours) - set(beams) == set(real) - {k for k in real if k.startswith("BEAM")}
                assert set(beams) <= {k for k in real if k.startswith("BEAM")} and beams
                for b in beams:
                    _compare_beam(ours[b], real[b])
                for name, ds in _datasets(real["ANCILLARY"]).items():
                    assert ours["ANCILLARY"][name].dtype == ds.dtype, name
                    assert ours["ANCILLARY"][name].ndim == ds.ndim
                om = ours["METADATA/DatasetIdentification"].attrs
                rm = real["METADATA/DatasetIdentification"].attrs
                assert set(om) == set(rm) and om["fileName"] == Path(path).name
                assert om["VersionID"] == Path(path).name.split("_")[-2]


def _compare_beam(ob: h5py.Group, rb: h5py.Group) -> None:
    assert _attrs_equal(ob.attrs, rb.attrs), ob.name
    for sub in ("agbd_prediction", "geolocation", "land_cover_data"):
        assert _attrs_equal(ob[sub].attrs, rb[sub].attrs), (ob.name, sub)
    ods, rds = _datasets(ob), _datasets(rb)
    assert set(ods) <= set(rds), set(ods) - set(rds)
    must = {"agbd", "agbd_se", "lat_lowestmode", "lon_lowestmode", "l4_quality_flag", "l2_quality_flag",
            "degrade_flag", "sensitivity", "shot_number", "delta_time", "beam", "channel", "predict_stratum",
            "land_cover_data/pft_class", "land_cover_data/leaf_off_flag", "land_cover_data/region_class",
            "selected_algorithm", "algorithm_run_flag", "xvar"}
    assert must <= set(ods)
    top = {k for k in rds if "/" not in k}
    assert top <= set(ods), top - set(ods)  # every top-level dataset of the real beam
    assert set(_datasets(rb["land_cover_data"])) <= set(_datasets(ob["land_cover_data"]))
    n = ob["agbd"].shape[0]
    for name, o in ods.items():
        r = rds[name]
        assert o.dtype == r.dtype or (h5py.check_string_dtype(o.dtype) and h5py.check_string_dtype(r.dtype)), name
        assert o.ndim == r.ndim and o.shape[0] == n, name
        assert (o.chunks, o.compression, o.compression_opts, o.maxshape) == \
               (r.chunks, r.compression, r.compression_opts, r.maxshape), name
        assert _attrs_equal(o.attrs, r.attrs), name
        assert "_FillValue" not in o.attrs
    addr = h5py.h5o.get_info(ob["shot_number"].id).addr
    for link in ("agbd_prediction/shot_number", "geolocation/shot_number", "land_cover_data/shot_number"):
        assert h5py.h5o.get_info(ob[link].id).addr == addr  # one dataset, hard-linked (as in the real file)


def test_gedi_values_have_real_forms(world: dict) -> None:
    with h5py.File(_need(REAL_L4A)) as real:
        rb = real["BEAM0101"]
        real_shot = int(rb["shot_number"][0])
    assert str(real_shot)[:4] == "6515" and str(real_shot)[4:6] == "05"  # orbit | beam | .. | index
    for path in world["gedi"]["granules"]:
        orbit = int(GEDI_NAME.match(Path(path).name).group(2))
        stamp = datetime.strptime(GEDI_NAME.match(Path(path).name).group(1), "%Y%j%H%M%S")
        with h5py.File(path) as f:
            for b in (k for k in f if k.startswith("BEAM")):
                g = f[b]
                shot = g["shot_number"][:]
                assert (shot // 10**13 == orbit).all() and (shot // 10**11 % 100 == int(b[4:], 2)).all()
                assert (g["beam"][:] == int(b[4:], 2)).all()
                dt = g["delta_time"][:]
                first = (stamp - datetime(2018, 1, 1)).total_seconds()
                assert abs(dt[0] - first) < 1.0 and (np.diff(dt) > 0).all()
                agbd = g["agbd"][:]
                assert ((agbd == -9999) | (agbd >= 0)).all()
                assert set(np.unique(g["degrade_flag"][:])) <= {0, 4, 34, 74}
                assert set(np.unique(g["l4_quality_flag"][:])) <= {0, 1}
                assert set(np.unique(g["land_cover_data/leaf_off_flag"][:])) <= {0, 1, 255}


def test_minimal_real_l4a_datasets_exist_in_ours(world: dict) -> None:
    with h5py.File(_need(REAL_L4A_MIN)) as real, h5py.File(world["gedi"]["granules"][0]) as ours:
        for b in (k for k in real if k.startswith("BEAM")):
            if b not in ours:
                continue
            for name, ds in _datasets(real[b]).items():
                assert ours[b][name].dtype == ds.dtype and ours[b][name].ndim == ds.ndim, name


def test_l2a_shares_only_the_common_fields(world: dict) -> None:
    """A real L2A granule carries the shared shot fields with the same dtypes but no L4A ``agbd``."""
    with h5py.File(_need(REAL_L2A)) as l2a, h5py.File(world["gedi"]["granules"][0]) as ours:
        for name in ("shot_number", "beam", "delta_time", "lat_lowestmode", "lon_lowestmode"):
            assert l2a["BEAM0000"][name].dtype == ours["BEAM0000"][name].dtype
        assert "agbd" not in l2a["BEAM0000"] and "agbd" in ours["BEAM0000"]
        assert ours.attrs["short_name"] == "GEDI_L4A" and "short_name" not in l2a.attrs
