"""Multi-year wiring shared by biomass-pipeline, map-biomass and yearly-biomass.

* :func:`plan_run`: the year plan (``core.seasons.plan_years``: map years, training years, the timeline
  checks) and each year's window (tropics: from the year's scenes, a saved search per year), then the GEDI
  days of every training window; all before any composite.
* :func:`composite_years` / :func:`label_years`: one hls-composite / gedi-labels subflow per season, each
  in its own folder ``<output_dir>/seasons/<START>_<END>/`` (search files, composites, labels and stage
  caches of different seasons never overwrite each other).
* :func:`map_years`: predict-map per year and tile into ``<output_dir>/maps/<YEAR>/`` (with the interval
  bands when a calibration is given), then the change of
  each pair of consecutive map years into ``<output_dir>/change/<FROM>_<TO>/`` (engine:
  :mod:`training.change`), with markdown artifacts.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from compositing.contracts import CompositeResult
from core.files import read_json, write_json_atomic
from core.seasons import SeasonChoice, YearPlan, needs_search, plan_years
from core.timeline import GEDI_L4A, TimelineError
from flows import stages as S
from flows import summaries
from flows.params import GediLabelsParams, HlsCompositeParams, PredictMapParams, _RunArea
from flows.results import HlsStageResult, MappingResult, ModelRecord, RunPlan, Stage, YearMaps
from labels.contracts import LabelsResult
from training.change import ChangeOptions, ChangeResult

MODEL_RECORD = "current.json"


def season_dir(out: Path, choice: SeasonChoice) -> Path:
    return out / "seasons" / choice.label


def _choice(area: dict[str, Any], params: _RunArea, year: int, out: Path) -> SeasonChoice:
    from compositing.window import choose_season

    explicit = area["season"] if year == area["year"] else None
    if not needs_search(area["aoi"], explicit):
        return choose_season(aoi=area["aoi"], year=year, season=explicit, output_dir=str(out))
    opts = dataclasses.replace(params.hls.search_options(), stac_url=area["hls_stac_url"],
                               collection=area["hls_collection"])
    return S.choose_season_task.with_options(name=f"choose-season-{year}")(
        area["aoi"], year, opts, str(out / "seasons" / f"window-{year}"))


def _check_training(plan: YearPlan, choices: dict[int, SeasonChoice], area: dict[str, Any]) -> YearPlan:
    """The plan with the training years whose window has GEDI shots (``gedi_days`` set on their choices);
    a default year without any is dropped with a note, an explicit (or the only) one raises."""
    from core.timeline import check_gedi_season

    kept, notes = [], list(plan.notes)
    for y in plan.training_years:
        days = GEDI_L4A.overlap_days(choices[y].season)
        choices[y] = dataclasses.replace(choices[y], gedi_days=days)
        if days:
            kept.append(y)
        elif plan.training_rule == "explicit" or len(plan.training_years) == 1:
            check_gedi_season(area["aoi"], choices[y].season, y, years=area.get("data_years"))
        else:
            notes.append(f"{y}: its window {choices[y].start}..{choices[y].end} has no GEDI shots: not trained on")
    if not kept:
        raise TimelineError(f"no training season has GEDI shots ({plan.training_years})")
    return dataclasses.replace(plan, training_years=kept, notes=notes)


def plan_run(params: _RunArea, area: dict[str, Any], out: Path, *, train: bool,
             training_years: list[int] | None = None) -> RunPlan:
    """Years, windows and timeline checks of a run (raises TimelineError before any composite)."""
    year = int(area["year"])
    plan = plan_years(area["aoi"], year, season=area["season"], map_years=params.wanted_map_years(year),
                      training_years=training_years, available=area.get("data_years"),
                      collection=area["hls_collection"], train=train)
    choices = {y: _choice(area, params, y, out) for y in sorted(set(plan.map_years) | set(plan.training_years))}
    if train:
        plan = _check_training(plan, choices, area)
    result = RunPlan(years=plan, seasons={str(y): c for y, c in choices.items()})
    summaries.plan(result)
    return result


def composite_years(params: _RunArea, area: dict[str, Any], out: Path, plan: RunPlan,
                    years: list[int]) -> dict[int, Stage[HlsStageResult]]:
    """One hls-composite subflow per year's window, each into its season folder."""
    hls = {**params.hls.model_dump(), "stac_url": area["hls_stac_url"], "collection": area["hls_collection"]}
    res = {}
    for y in sorted(set(years)):
        c = plan.season(y)
        res[y] = S.hls_composite(HlsCompositeParams(
            aoi=area["aoi"], year=y, season={"start": c.start, "end": c.end},
            output_dir=str(season_dir(out, c)), dask_address=params.dask_address, force=params.force, **hls))
    return res


def label_years(params: Any, area: dict[str, Any], out: Path, plan: RunPlan,
                comps: dict[int, Stage[HlsStageResult]]) -> dict[int, Stage[LabelsResult]]:
    """One gedi-labels subflow per training season, on that season's composites."""
    gedi = {**params.gedi.model_dump(), "stac_url": area["gedi_stac_url"], "collection": area["gedi_collection"]}
    res = {}
    for c in plan.training:
        res[c.year] = S.gedi_labels(GediLabelsParams(
            aoi=area["aoi"], year=c.year, season={"start": c.start, "end": c.end},
            output_dir=str(season_dir(out, c)), composites=comps[c.year].result.composites.paths,
            force=params.force, **gedi))
    return res


@task(name="biomass-change", cache_policy=NO_CACHE)
def change_task(maps_from: dict[str, str], maps_to: dict[str, str], year_from: int, year_to: int, aoi: Any,
                output_dir: str, options: ChangeOptions) -> ChangeResult:
    from training.change import compute_change

    return compute_change(maps_from=maps_from, maps_to=maps_to, year_from=year_from, year_to=year_to, aoi=aoi,
                          output_dir=output_dir, options=options)


def map_years(checkpoint: str, area: dict[str, Any], out: Path, plan: RunPlan, comps: dict[int, CompositeResult],
              force: bool, options: ChangeOptions, calibration: str | None = None) -> MappingResult:
    """Maps of every map year (predict-map per tile; with ``calibration`` the interval bands too), truth
    comparison on the sample world, and change."""
    from flows import artifacts as art

    years: dict[str, YearMaps] = {}
    progress = art.Progress("predict-map-progress", "Biomass maps (tiles x map years)")
    total, done = sum(len(comps[y].tiles) for y in plan.years.map_years), 0
    for y in plan.years.map_years:
        composites, maps = comps[y], {}
        for tile, t in composites.tiles.items():
            maps[tile] = S.predict_map(PredictMapParams(checkpoint=checkpoint, composite=t.path, output_dir=str(
                out / "maps" / str(y)), calibration=calibration, force=force)).result.map
            done += 1
            progress.update(done / max(total, 1))
        years[str(y)] = YearMaps(year=y, season=plan.season(y), composites=composites, maps=maps,
                                 map_vs_truth=_truth(area.get("world"), maps, y))
    ordered = sorted(years.values(), key=lambda m: m.year)
    pairs = list(zip(ordered, ordered[1:], strict=False))
    change = [change_task.with_options(name=f"change-{a.year}-{b.year}")(
        a.maps, b.maps, a.year, b.year, area["aoi"], str(out / "change" / f"{a.year}_{b.year}"), options)
        for a, b in pairs]
    truth = _truth_change(area.get("world"), [(a.year, b.year) for a, b in pairs], area["aoi"], out, options)
    result = MappingResult(checkpoint=checkpoint, years=years, change=change, truth_change=truth)
    summaries.mapping(result)
    return result


def _truth(world: dict[str, Any] | None, maps: dict[str, str], year: int) -> dict[str, dict[str, Any]] | None:
    if world is None:
        return None
    from training.map_truth import compare_to_truth

    truth = world["truth"]
    path = (truth.get("agb_by_year") or {}).get(str(year), truth["agb"])
    return {tile: compare_to_truth(p, path) for tile, p in maps.items()}


def _truth_change(world: dict[str, Any] | None, pairs: list[tuple[int, int]], aoi: Any, out: Path,
                  options: ChangeOptions) -> list[ChangeResult]:
    """Sample world only: the same change computed on the world's truth AGB of each year (what the maps'
    change should show), into ``change/<FROM>_<TO>/truth/``."""
    if world is None:
        return []
    truth = world["truth"]
    by_year = truth.get("agb_by_year") or {}
    return [change_task.with_options(name=f"truth-change-{a}-{b}")(
        {"truth": by_year.get(str(a), truth["agb"])}, {"truth": by_year.get(str(b), truth["agb"])}, a, b, aoi,
        str(out / "change" / f"{a}_{b}" / "truth"), options) for a, b in pairs]


def read_model_record(out: Path) -> ModelRecord | None:
    """The area's current model, or None when there is none (or its checkpoint is gone)."""
    path = out / "model" / MODEL_RECORD
    if not path.is_file():
        return None
    rec = ModelRecord.from_dict(read_json(path))
    return rec if Path(rec.checkpoint).is_file() else None


def write_model_record(out: Path, plan: RunPlan, checkpoint: str, export: str, metrics_path: str,
                       rmse: float | None, calibration: str | None = None) -> ModelRecord:
    rec = ModelRecord(checkpoint=checkpoint, training_years=plan.years.training_years,
                      seasons=[c.label for c in plan.training], export=export, metrics=metrics_path, rmse=rmse,
                      trained_at=datetime.now(UTC).isoformat(timespec="seconds"), calibration=calibration)
    write_json_atomic(out / "model" / MODEL_RECORD, rec.to_dict())
    return rec
