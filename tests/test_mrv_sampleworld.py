"""MRV outputs on the sample world, with a real tiny model (engines only, no Prefect):

* the 90 % split-conformal intervals, calibrated on the validation split, cover 90 +/- 3 % of the test split's
  GEDI-like labels;
* the maps carry interval bands; the area totals (overlapping tiles counted once) and their interval;
* the run's STAC catalog built from the typed stage results validates offline, re-runs idempotently and
  resolves back to the mapping inputs; quicklooks of every kind are written.

The world is the ``small`` preset with a larger area (512 px), two clear leaf-on scenes and ten full GEDI passes
(WorldSpec overrides of the same generator): the preset's ~600 labelled training pixels and six validation
chips give too few spatial clusters for a coverage check to mean anything. Chips of 32 px in spatial blocks of
2 x 2 chips give ~56 validation and ~56 test chips.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import rasterio

from chips.export import export_chips
from chips.params import ChipParams
from compositing.composite import build_composites
from compositing.contracts import SearchOptions
from compositing.search import search_hls
from core import quicklooks as ql
from core.catalog import resolve_catalog
from core.stac_validate import validate_catalog
from flows import stac_items as si
from flows.mrv import RunOutputs, mrv_outputs
from flows.summaries import totals_text
from labels import run_gedi_labels
from sampleworld import generate_world
from sampleworld.spec import GediSpec, preset
from training.config import TrainConfig
from training.evaluate import evaluate_model
from training.mapping import predict_map
from training.totals import TotalsOptions, area_totals
from training.train import train_model

TRAIN = TrainConfig(model="tiny", epochs=10, batch_size=8, lr=3e-3, device="cpu", cpu_threads=1, seed=0)


def _world(root: Path) -> dict[str, Any]:
    small = preset("small")
    scenes = tuple(s for s in small.scenes if s.doy in (204, 236))  # partial swath (LC09) and clear
    gedi = tuple(GediSpec(doy=160 + 9 * k, time=f"{(3 + 2 * k) % 24:02d}1430", crossing_frac=(0.04 + 0.61803 * k) % 1,
                          ascending=k % 2 == 0) for k in range(10))
    return generate_world(str(root / "world"), size="small", seed=0, aoi_px=512, scenes=scenes, gedi=gedi)


def _quicklooks(comp: Any, labels: Any, maps: dict[str, Any]) -> list[ql.Quicklook]:
    out = []
    for t in comp.tiles.values():
        out.append(ql.true_colour(t.path, str(Path(t.path).with_suffix(".quicklook.png"))))
    for tile, p in labels.labels.items():
        out.append(ql.band(p, str(Path(p).with_suffix(".coverage.png")), title=f"{tile} labels", kind="labels"))
        out.append(ql.label_density(p, str(Path(p).with_suffix(".density.png"))))
    for m in maps.values():
        out.append(ql.band(m.map, str(Path(m.map).with_suffix(".preview.png")), title="AGB"))
        out.append(ql.interval_width(m.map, str(Path(m.map).with_suffix(".interval.png"))))
    return out


@pytest.fixture(scope="module")
def mrv(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from sampleworld.stac_server import serve_stac

    root = tmp_path_factory.mktemp("mrv")
    out = root / "out"
    w = _world(root)
    with serve_stac(str(Path(w["hls"]["items_json"]).resolve().parents[1])) as url:
        search = search_hls(aoi=w["aoi"], year=w["year"], output_dir=str(out), options=SearchOptions(stac_url=url))
        comp = build_composites(items_json=search.items_json, aoi=w["aoi"], season=search.season, output_dir=str(out))
    labels = run_gedi_labels(aoi=w["aoi"], year=w["year"], granules=w["gedi"]["granules"], composites=comp.paths,
                             output_dir=str(out))
    chips = export_chips(composites=comp.paths, labels=list(labels.labels.values()), output_dir=str(out),
                         params=ChipParams(chip_size=32, split_block_m=1920.0, split_buffer_m=90.0,
                                           split_fractions=(0.5, 0.25, 0.25)))
    trained = train_model(export=chips.export_dir, output_dir=str(out / "model"), config=TRAIN)
    ev = evaluate_model(checkpoint=trained.best_checkpoint, export=chips.export_dir, output_dir=str(out / "eval"),
                        cpu_threads=1)
    maps = {t: predict_map(checkpoint=trained.best_checkpoint, composite=c.path, output_dir=str(out / "maps"),
                           calibration=ev.calibration, cpu_threads=1) for t, c in comp.tiles.items()}
    looks = _quicklooks(comp, labels, maps)
    totals = area_totals(maps=[m.map for m in maps.values()], calibration=ev.calibration, year=si.season_year(comp.season),
                         aoi=w["aoi"], options=TotalsOptions())
    return {"world": w, "out": out, "comp": comp, "labels": labels, "chips": chips, "trained": trained, "eval": ev,
            "maps": maps, "quicklooks": looks, "totals": totals}


def test_interval_coverage_on_the_test_split(mrv):
    ev = mrv["eval"]
    iv = ev.interval
    saved = json.loads(Path(ev.metrics_path).read_text())["interval"]
    assert saved == iv and iv["split"] == "test" and iv["calibration_split"] == "val" and not iv["in_sample"]
    assert iv["n"] == ev.n_pixels >= 1500 and iv["calibration_pixels"] >= 1500
    print(f"coverage {iv['coverage']:.4f} of {iv['n']} test pixels (calibration {iv['calibration_pixels']} val "
          f"pixels), mean width {iv['mean_width']:.1f} Mg/ha, below {iv['below']:.3f} above {iv['above']:.3f}; "
          f"model RMSE {ev.metrics['model']['rmse']:.1f}, ridge {ev.metrics['baseline_ridge']['rmse']:.1f}")
    assert 0.87 <= iv["coverage"] <= 0.93
    assert "not its true AGB" in iv["covers"]


def test_maps_carry_interval_bands(mrv):
    for m in mrv["maps"].values():
        assert m.bands == ["agb", "agb_lower", "agb_upper"] and m.calibration == mrv["eval"].calibration
        with rasterio.open(m.map) as ds:
            agb, lower, upper = ds.read()
            ok = agb != ds.nodata
        assert ok.mean() > 0.9
        assert (lower[ok] <= agb[ok] + 1e-3).all() and (upper[ok] >= agb[ok]).all() and (lower[ok] >= 0).all()


def test_totals_of_the_map_year(mrv):
    t = mrv["totals"]
    per_tile = 0
    for m in mrv["maps"].values():
        with rasterio.open(m.map) as ds:
            per_tile += int((ds.read(1) != ds.nodata).sum())
    assert 0 < t.pixels < per_tile  # the two tiles overlap (and the AOI trims): each place is counted once
    assert t.agb_mg.lower < t.agb_mg.value < t.agb_mg.upper and t.sd_random_mg > 0 and t.sd_systematic_mg > 0
    assert t.carbon_mg.value == pytest.approx(0.47 * t.agb_mg.value)
    assert t.sd_bounds["independent_pixels"] < t.agb_mg.sd < t.sd_bounds["fully_correlated"]
    assert 20 < t.mean_agb_mg_ha < 400
    print(f"total AGB {t.agb_mg.value:.4g} Mg [{t.agb_mg.lower:.4g}, {t.agb_mg.upper:.4g}] over {t.area_ha:.0f} ha; "
          f"map sum {t.map_sum_mg:.4g}, bias adjustment {t.bias_adjustment_mg:.4g}, carbon {t.carbon_mg.value:.4g} Mg C")


def test_quicklooks_of_every_kind(mrv):
    kinds = {q.kind for q in mrv["quicklooks"]}
    assert kinds == {"true_colour", "labels", "label_density", "map", "interval_width"}
    for q in mrv["quicklooks"]:
        assert Path(q.path).is_file() and q.width_px > 200 and q.vmax > q.vmin and q.valid_fraction > 0


def _truth_maps(mrv: dict[str, Any]) -> list[str]:
    """The world's true AGB on each map's grid, nodata where the map is (same MGRS tags: same pixels counted)."""
    from rasterio.windows import Window

    out = []
    with rasterio.open(mrv["world"]["truth"]["agb"]) as truth:
        for m in mrv["maps"].values():
            with rasterio.open(m.map) as ds:
                tt = truth.transform  # same 30 m lattice: whole-pixel offsets
                win = Window(round((ds.bounds.left - tt.c) / tt.a), round((ds.bounds.top - tt.f) / tt.e), ds.width,
                             ds.height)
                agb = ds.read(1)
                t = truth.read(1, window=win).astype("float32")  # the world window holds every map
                t[agb == ds.nodata] = ds.nodata
                path = m.map.replace("_agb.tif", "_truth.tif")
                with rasterio.open(path, "w", driver="GTiff", width=ds.width, height=ds.height, count=1,
                                   dtype="float32", crs=ds.crs, transform=ds.transform, nodata=ds.nodata) as o:
                    o.write(t, 1)
                    o.update_tags(MGRS_TILE=ds.tags()["MGRS_TILE"])
            out.append(path)
    return out


def test_totals_interval_holds_the_true_total(mrv):
    """The sample world knows the true AGB: its total over the same pixels lies in the 90 % interval, and the
    bias correction is what puts it there (the map alone underestimates)."""
    t = mrv["totals"]
    truth = area_totals(maps=_truth_maps(mrv), calibration=mrv["eval"].calibration, year="truth",
                        aoi=mrv["world"]["aoi"], options=TotalsOptions(bias_correction=False))
    assert truth.pixels == t.pixels
    print(f"true total {truth.map_sum_mg:.4g} Mg; estimate {t.agb_mg.value:.4g} [{t.agb_mg.lower:.4g}, "
          f"{t.agb_mg.upper:.4g}]; map sum alone {t.map_sum_mg:.4g}")
    assert t.agb_mg.lower <= truth.map_sum_mg <= t.agb_mg.upper
    assert abs(t.agb_mg.value - truth.map_sum_mg) < abs(t.map_sum_mg - truth.map_sum_mg)


def test_run_catalog_validates_offline_is_idempotent_and_resolves(mrv):
    out, comp = mrv["out"], mrv["comp"]
    year = si.season_year(comp.season)
    outputs = RunOutputs(composites={year: comp}, labels=[mrv["labels"]], chips=mrv["chips"], training=mrv["trained"],
                         train_config=TRAIN.to_dict(), evaluation=mrv["eval"], maps={year: mrv["maps"]})
    res = mrv_outputs(output_dir=str(out), outputs=outputs, aoi=mrv["world"]["aoi"])
    assert res.totals[0].to_dict() == mrv["totals"].to_dict() and res.changes == []
    assert Path(res.table).is_file() and Path(res.totals_json).is_file() and res.notes == []
    assert res.catalog.missing_links == [] and not res.catalog.updated
    assert set(res.catalog.items) == {"composites", "labels", "chips", "models", "evaluations", "maps", "totals"}
    n_items = sum(len(v) for v in res.catalog.items.values())
    report = validate_catalog(out / "catalog")
    assert report.ok and report.items == n_items == 2 + 2 + 1 + 1 + 1 + 2 + 1
    assert any("projection" in s for s in report.schemas) and any("raster" in s for s in report.schemas)
    comp_item = json.loads(next((out / "catalog" / "composites").glob("*/*.json")).read_text())
    assert comp_item["properties"]["agb:source_scenes"] == next(iter(comp.tiles.values())).scenes_used
    lab_item = json.loads(next((out / "catalog" / "labels").glob("*/*.json")).read_text())
    assert lab_item["properties"]["agb:gedi_granules"] and lab_item["properties"]["agb:filters"]["drop_degraded"]
    assert "overview-density" in lab_item["assets"]
    map_item = json.loads(next((out / "catalog" / "maps").glob("*/*.json")).read_text())
    assert [b["name"] for b in map_item["assets"]["data"]["bands"]] == ["agb", "agb_lower", "agb_upper"]
    assert {"overview-preview", "overview-interval"} <= set(map_item["assets"])
    again = mrv_outputs(output_dir=str(out), outputs=outputs, aoi=mrv["world"]["aoi"])
    assert again.catalog.added == [] and len(again.catalog.updated) == n_items
    assert again.catalog.items == res.catalog.items
    r = resolve_catalog(str(out / "catalog"))
    assert r.checkpoint == mrv["trained"].best_checkpoint and r.calibration == mrv["eval"].calibration
    assert r.composites == {year: {t: c.path for t, c in comp.tiles.items()}} and r.model == "tiny"
    assert "Area totals (90% intervals)" in totals_text(res) and "Mg C" in totals_text(res)


def test_map_biomass_from_a_catalog(mrv, tmp_path):
    """What the map-biomass flow does with a catalog: resolve it, map its composites with its model and
    calibration, and add the maps and totals to a catalog of its own (links to the model resolve there)."""
    out = mrv["out"]
    if not (out / "catalog" / "catalog.json").is_file():
        test_run_catalog_validates_offline_is_idempotent_and_resolves(mrv)
    r = resolve_catalog(str(out / "catalog"))
    year, paths = next(iter(r.composites.items()))
    comps = si.composites_from_paths(paths)
    assert comps.tiles.keys() == mrv["comp"].tiles.keys() and comps.season == mrv["comp"].season
    maps = {t: predict_map(checkpoint=r.checkpoint, composite=p, output_dir=str(tmp_path / "maps"),
                           calibration=r.calibration, cpu_threads=1) for t, p in paths.items()}
    outputs = RunOutputs(composites={year: comps}, labels=[], chips=None, training=None, train_config={},
                         evaluation=None, maps={year: maps}, calibration=r.calibration)
    res = mrv_outputs(output_dir=str(tmp_path), outputs=outputs, aoi=mrv["world"]["aoi"])
    assert res.totals[0].agb_mg.value == pytest.approx(mrv["totals"].agb_mg.value, rel=1e-6)  # same model, inputs
    assert set(res.catalog.items) == {"composites", "maps", "totals"} and res.validation.ok
    assert sorted(res.catalog.missing_links) == sorted(f"maps/map-{t}-{year} -> models/model" for t in paths)
    again = mrv_outputs(output_dir=str(out), outputs=outputs, aoi=mrv["world"]["aoi"])  # into the run's catalog
    assert again.catalog.missing_links == [] and not again.catalog.added
    assert validate_catalog(out / "catalog").ok
