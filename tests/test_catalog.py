"""The run catalog engine: items with projection/raster/file/processing fields, offline validation against the
vendored schemas, idempotent upserts, resolving a catalog to mapping inputs, tamper detection, clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from core.catalog import (
    AssetSpec,
    CatalogError,
    ItemSpec,
    multihash_sha256,
    resolve_catalog,
    safe_id,
    write_catalog,
)
from core.stac_validate import SCHEMA_DIR, StacValidationFailure, validate_catalog, vendored_schemas

ND = -9999.0


def _raster(path: Path, bands: list[str], tile: str = "10TEK") -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", width=40, height=30, count=len(bands), dtype="float32",
                       crs="EPSG:32610", transform=Affine(30, 0, 600000, 0, -30, 4440000), nodata=ND) as ds:
        ds.write(np.ones((len(bands), 30, 40), np.float32))
        for i, b in enumerate(bands, start=1):
            ds.set_band_description(i, b)
            ds.set_band_unit(i, "Mg/ha")
        ds.update_tags(MGRS_TILE=tile)
    return str(path)


@pytest.fixture()
def run(tmp_path):
    out = tmp_path / "out"
    comp = {y: _raster(out / "composites" / "10TEK" / f"{y}-06-01_{y}-09-30.tif", ["B02", "B03", "B04"])
            for y in (2022, 2023)}
    ckpt = out / "model" / "best.ckpt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"weights")
    cal = out / "eval" / "calibration.json"
    cal.parent.mkdir(parents=True)
    cal.write_text("{}")
    items = [ItemSpec(id=f"composite-10TEK-{y}", collection="composites", start=f"{y}-06-01", end=f"{y}-09-30",
                      assets=[AssetSpec("data", p, ["data"], raster=True)],
                      properties={"agb:tile": "10TEK", "agb:year": str(y), "agb:source_scenes": ["HLS.L30.T10TEK.x"]})
             for y, p in comp.items()]
    items.append(ItemSpec(id="model", collection="models", start="2022-06-01", end="2023-09-30",
                          assets=[AssetSpec("checkpoint", str(ckpt), ["model"])], properties={"agb:model": "tiny"},
                          derived_from=[f"composites/composite-10TEK-{y}" for y in comp], geometry=None))
    items.append(ItemSpec(id="evaluation-test", collection="evaluations", start="2023-06-01", end="2023-09-30",
                          assets=[AssetSpec("calibration", str(cal), ["metadata"])],
                          properties={"agb:model_item": "model"}, derived_from=["models/model"]))
    return out, items, comp, ckpt, cal


def test_vendored_schemas_are_listed_with_their_checksums():
    listing = json.loads((SCHEMA_DIR / "SOURCES.json").read_text())
    assert {"https://stac-extensions.github.io/projection/v2.0.0/schema.json",
            "https://stac-extensions.github.io/raster/v1.1.0/schema.json"} <= set(listing)
    import hashlib

    for url, entry in listing.items():
        data = (SCHEMA_DIR / entry["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], url
    assert set(vendored_schemas()) == set(listing)


def test_catalog_items_fields_and_offline_validation(run):
    out, items, comp, ckpt, _ = run
    res = write_catalog(catalog_dir=str(out / "catalog"), items=items)
    assert res.items == {"composites": ["composite-10TEK-2022", "composite-10TEK-2023"], "models": ["model"],
                         "evaluations": ["evaluation-test"]} and res.missing_links == []
    report = validate_catalog(out / "catalog")
    assert report.ok and report.items == 4 and report.objects == 1 + 3 + 4
    assert {"https://stac-extensions.github.io/projection/v2.0.0/schema.json",
            "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
            "https://stac-extensions.github.io/file/v2.1.0/schema.json",
            "https://schemas.stacspec.org/v1.1.0/item-spec/json-schema/item.json"} <= set(report.schemas)
    doc = json.loads((out / "catalog" / "composites" / "composite-10TEK-2023" / "composite-10TEK-2023.json").read_text())
    asset = doc["assets"]["data"]
    assert asset["href"] == "../../../composites/10TEK/2023-06-01_2023-09-30.tif"  # relative: the folder can move
    assert asset["proj:code"] == "EPSG:32610" and asset["proj:shape"] == [30, 40]
    assert asset["proj:transform"] == [30.0, 0.0, 600000.0, 0.0, -30.0, 4440000.0]
    assert asset["raster:bands"][0] == {"nodata": ND, "data_type": "float32", "unit": "Mg/ha", "spatial_resolution": 30.0}
    assert [b["name"] for b in asset["bands"]] == ["B02", "B03", "B04"]
    assert asset["file:checksum"] == multihash_sha256(comp[2023]) and asset["file:size"] > 0
    props = doc["properties"]
    assert props["processing:software"]["agb-pipeline"] and props["agb:source_scenes"] == ["HLS.L30.T10TEK.x"]
    assert (props["start_datetime"], props["end_datetime"]) == ("2023-06-01T00:00:00Z", "2023-09-30T23:59:59Z")
    assert -125 < doc["bbox"][0] < doc["bbox"][2] < -115
    model = json.loads((out / "catalog" / "models" / "model" / "model.json").read_text())
    assert model["geometry"] is None and "bbox" not in model
    assert sorted(lk["href"] for lk in model["links"] if lk["rel"] == "derived_from") == [
        "../../composites/composite-10TEK-2022/composite-10TEK-2022.json",
        "../../composites/composite-10TEK-2023/composite-10TEK-2023.json"]


def test_second_run_updates_same_ids_and_adds_new_ones(run):
    out, items, _, _, _ = run
    write_catalog(catalog_dir=str(out / "catalog"), items=items)
    again = write_catalog(catalog_dir=str(out / "catalog"), items=items)
    assert again.added == [] and sorted(again.updated) == sorted(f"{i.collection}/{i.id}" for i in items)
    new = ItemSpec(id="composite-10TEK-2024", collection="composites", start="2024-06-01", end="2024-09-30",
                   assets=[AssetSpec("data", _raster(out / "composites" / "10TEK" / "2024.tif", ["B02"]), ["data"],
                                     raster=True)], properties={"agb:tile": "10TEK", "agb:year": "2024"})
    third = write_catalog(catalog_dir=str(out / "catalog"), items=[new])
    assert third.added == ["composites/composite-10TEK-2024"] and third.updated == []
    assert third.items["composites"] == ["composite-10TEK-2022", "composite-10TEK-2023", "composite-10TEK-2024"]
    coll = json.loads((out / "catalog" / "composites" / "collection.json").read_text())
    assert [lk["href"] for lk in coll["links"] if lk["rel"] == "item"].count(
        "./composite-10TEK-2023/composite-10TEK-2023.json") == 1
    assert coll["extent"]["temporal"]["interval"][0] == ["2022-06-01T00:00:00Z", "2024-09-30T23:59:59Z"]
    assert validate_catalog(out / "catalog").items == 5


def test_resolve_catalog_for_mapping(run):
    out, items, comp, ckpt, cal = run
    write_catalog(catalog_dir=str(out / "catalog"), items=items)
    moved = out.parent / "moved"
    shutil.move(str(out), str(moved))  # a self-contained catalog still resolves after the folder moves
    r = resolve_catalog(str(moved / "catalog"))
    assert r.checkpoint == str(moved / "model" / "best.ckpt") and r.model == "tiny" and r.model_item == "model"
    assert r.calibration == str(moved / "eval" / "calibration.json")
    assert r.composites == {y: {"10TEK": str(moved / "composites" / "10TEK" / f"{y}-06-01_{y}-09-30.tif")}
                            for y in ("2022", "2023")}
    (moved / "model" / "best.ckpt").write_bytes(b"other weights")
    with pytest.raises(CatalogError, match="checkpoint.*changed since it was catalogued"):
        resolve_catalog(str(moved / "catalog"))
    assert resolve_catalog(str(moved / "catalog"), verify=False).verified is False


def test_resolve_errors_are_named(run, tmp_path):
    out, items, *_ = run
    with pytest.raises(CatalogError, match="no STAC catalog"):
        resolve_catalog(str(tmp_path / "nothing"))
    write_catalog(catalog_dir=str(out / "catalog"), items=items[:2])
    with pytest.raises(CatalogError, match="choose a model"):
        resolve_catalog(str(out / "catalog"))
    with pytest.raises(CatalogError, match="does not exist"):
        write_catalog(catalog_dir=str(out / "catalog"),
                      items=[ItemSpec(id="x", collection="models", start="2023-01-01", end="2023-01-02",
                                      assets=[AssetSpec("checkpoint", str(tmp_path / "missing.ckpt"), ["model"])])])
    with pytest.raises(CatalogError, match="unknown collection"):
        write_catalog(catalog_dir=str(out / "catalog"),
                      items=[ItemSpec(id="x", collection="nope", start="2023-01-01", end="2023-01-02", assets=[])])


def test_invalid_items_fail_validation_with_the_file_named(run):
    out, items, *_ = run
    write_catalog(catalog_dir=str(out / "catalog"), items=items)
    path = out / "catalog" / "composites" / "composite-10TEK-2023" / "composite-10TEK-2023.json"
    doc = json.loads(path.read_text())
    doc["assets"]["data"]["proj:shape"] = ["thirty", 40]
    path.write_text(json.dumps(doc))
    with pytest.raises(StacValidationFailure, match="composite-10TEK-2023.json"):
        validate_catalog(out / "catalog")
    doc["assets"]["data"]["proj:shape"] = [30, 40]
    doc["stac_extensions"].append("https://stac-extensions.github.io/eo/v1.1.0/schema.json")
    path.write_text(json.dumps(doc))
    report = validate_catalog(out / "catalog", strict=False)
    assert len(report.errors) == 1 and "not vendored" in report.errors[0]


@pytest.mark.parametrize(("text", "expected"), [("map-10TEK-2023", "map-10TEK-2023"), ("a b/c", "a-b-c"),
                                                ("../x", "..-x"), ("", "item")])
def test_safe_id(text, expected):
    assert safe_id(text) == expected
