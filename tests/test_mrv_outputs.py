"""flows.mrv on two map years (synthetic rasters, maps given as paths as the pipeline keeps them): totals per
year, the change with its interval, the change quicklook, totals/change items in a catalog that validates."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from compositing.contracts import CompositeResult, TileComposite
from core.stac_validate import validate_catalog
from flows.mrv import RunOutputs, mrv_outputs
from flows.summaries import totals_text
from training.uncertainty import BinCalibration, Calibration

ND = -9999.0
TR = Affine(30, 0, 600000, 0, -30, 4440000)


def _cog(path: Path, data: np.ndarray, names: list[str], tile: str = "10TFK") -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                       dtype="float32", crs="EPSG:32610", transform=TR, nodata=ND) as ds:
        ds.write(data.astype(np.float32))
        for i, n in enumerate(names, start=1):
            ds.set_band_description(i, n)
        ds.update_tags(MGRS_TILE=tile)
    return str(path)


def _composite(out: Path, year: int) -> CompositeResult:
    season = {"start": f"{year}-06-01", "end": f"{year}-09-30"}
    path = _cog(out / "composites" / "10TFK" / f"{year}-06-01_{year}-09-30.tif",
                np.full((6, 40, 50), 800.0) + np.arange(50)[None, None, :], ["B02", "B03", "B04", "B05", "B06", "B07"])
    sidecar = Path(path).with_suffix(".json")
    sidecar.write_text("{}")
    t = TileComposite(tile="10TFK", path=path, sidecar=str(sidecar), grid={}, season=season, collection="HLSL30_2.0",
                      scenes_used=[f"HLS.L30.T10TFK.{year}200T184447.v2.0"], scenes_skipped=[], valid_obs={},
                      masked_bits="1,2,3", min_observations=1, software_version="test", inputs_key="k")
    return CompositeResult(season=season, items_json="", tiles={"10TFK": t})


def test_two_years_totals_change_and_catalog(tmp_path):
    out = tmp_path / "out"
    cal = out / "eval" / "calibration.json"
    Calibration(level=0.9, split="val", n_pixels=400, n_clusters=20, bins=[
        BinCalibration(lo=None, hi=None, n=400, n_clusters=20, lower_offset=-40.0, upper_offset=50.0,
                       residual_mean=2.0, residual_sd=25.0, mean_se=3.0)]).write(cal)
    agb = {2022: np.full((40, 50), 150.0), 2024: np.full((40, 50), 150.0)}
    agb[2024][10:20, 10:20] = 5.0  # a clear-cut
    maps = {str(y): {"10TFK": _cog(out / "maps" / str(y) / "10TFK_agb.tif", np.stack([a, a - 30, a + 40]),
                                   ["agb", "agb_lower", "agb_upper"])} for y, a in agb.items()}
    diff = _cog(out / "change" / "2022_2024" / "10TFK_change.tif", (agb[2024] - agb[2022])[None], ["agb_change"])
    outputs = RunOutputs(composites={str(y): _composite(out, y) for y in agb}, labels=[], chips=None, training=None,
                         train_config={}, evaluation=None, maps=maps, change_rasters={"2022-2024": [diff]},
                         calibration=str(cal))
    res = mrv_outputs(output_dir=str(out), outputs=outputs)
    assert [t.year for t in res.totals] == ["2022", "2024"] and len(res.changes) == 1
    assert res.notes == []  # no label years known (maps from a given checkpoint): nothing to flag
    flagged = mrv_outputs(output_dir=str(tmp_path / "flagged"), catalog=False,
                          outputs=dataclasses.replace(outputs, label_years=["2022"]))
    assert [n.split(" had")[0] for n in flagged.notes] == ["map year(s) 2024"]
    c = res.changes[0]
    assert c.agb_mg.value == pytest.approx(-100 * 145 * 0.09) and c.agb_mg.lower < c.agb_mg.value < c.agb_mg.upper
    assert c.same_calibration and c.sd_systematic_mg == 0.0  # one bin, same pixel count: the bias cancels
    assert len(res.quicklooks) == 1 and res.quicklooks[0].endswith("10TFK_change.change.png")
    saved = json.loads(Path(res.totals_json).read_text())
    assert [t["year"] for t in saved["totals"]] == ["2022", "2024"] and len(saved["changes"]) == 1
    assert res.catalog.items["totals"] == ["change-2022-2024", "totals-2022", "totals-2024"]
    assert res.catalog.items["maps"] == ["map-10TFK-2022", "map-10TFK-2024"]
    assert sorted(res.catalog.missing_links) == ["maps/map-10TFK-2022 -> models/model",
                                                 "maps/map-10TFK-2024 -> models/model"]
    assert res.validation.ok and validate_catalog(res.catalog.catalog).ok
    change = json.loads((out / "catalog" / "totals" / "change-2022-2024" / "change-2022-2024.json").read_text())
    assert change["properties"]["agb:change"]["agb_mg"]["value"] == pytest.approx(c.agb_mg.value)
    assert {"difference-10TFK_change", "overview-change", "table"} <= set(change["assets"])
    assert change["assets"]["difference-10TFK_change"]["proj:code"] == "EPSG:32610"
    text = totals_text(res)
    assert "2022: AGB" in text and "change 2022 -> 2024: AGB -1,305 Mg" in text
