"""The MRV outputs of a run, in one call for the pipeline flows: area totals per map year and the change between
consecutive years (with intervals), the totals table, quicklooks, the run's STAC catalog (validated offline),
and their Prefect artifact.

:func:`mrv_outputs` is a plain function (tested without a flow run); the area flows call it through
:func:`mrv_task` after their maps and change exist (:func:`area_run_outputs` gathers their typed results). Files:
``<output_dir>/totals/totals.json`` and ``totals.csv``, quicklook PNGs beside each raster, ``<output_dir>/catalog/``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from chips.manifest import ExportResult
from compositing.contracts import CompositeResult
from core.catalog import CATALOG_DIR, CatalogOptions, CatalogResult, area_geometry, write_catalog
from core.contracts import Contract
from core.files import write_json_atomic
from core.stac_validate import ValidationReport, validate_catalog
from flows import stac_items as si
from flows.results import MappingResult
from labels.contracts import LabelsResult
from training.evaluate import EvalResult
from training.mapping import MapResult
from training.totals import AreaTotal, TotalChange, TotalsOptions, area_totals, total_change, totals_table
from training.train import TrainResult


@dataclass(frozen=True)
class MrvResult(Contract):
    """Totals per map year, changes between consecutive years, the table, the catalog and its validation."""

    totals: list[AreaTotal]
    changes: list[TotalChange]
    totals_json: str | None
    table: str | None
    catalog: CatalogResult | None
    validation: ValidationReport | None
    quicklooks: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RunOutputs:
    """The typed stage results of a run, by map year where a run has several (``"2023"`` -> ...). A map-biomass
    run has only composites (:func:`flows.stac_items.composites_from_paths`), maps and a ``calibration``."""

    composites: dict[str, CompositeResult]
    labels: list[LabelsResult]
    chips: ExportResult | None
    training: TrainResult | None
    train_config: dict[str, Any]
    evaluation: EvalResult | None
    maps: dict[str, dict[str, MapResult | str]]
    change_rasters: dict[str, list[str]] = field(default_factory=dict)
    calibration: str | None = None  # without an evaluation (a map-biomass run): the catalog's calibration
    checkpoint: str | None = None  # without training: the checkpoint the maps were made with
    label_years: list[str] = field(default_factory=list)  # years whose GEDI labels trained/calibrated the model


def area_run_outputs(*, composites: dict[int, CompositeResult], mapping: MappingResult,
                     labels: list[LabelsResult] | None = None, chips: ExportResult | None = None,
                     training: TrainResult | None = None, train_config: dict[str, Any] | None = None,
                     evaluation: EvalResult | None = None, calibration: str | None = None,
                     label_years: list[int] | None = None) -> RunOutputs:
    """:class:`RunOutputs` of an area flow: composites of every year it made or used (training and map years),
    the maps of every map year and the difference rasters of each pair of consecutive map years."""
    return RunOutputs(composites={str(y): c for y, c in sorted(composites.items())}, labels=list(labels or []),
                      chips=chips, training=training, train_config=dict(train_config or {}), evaluation=evaluation,
                      maps={y: dict(m.maps) for y, m in sorted(mapping.years.items())},
                      change_rasters={f"{c.year_from}-{c.year_to}": list(c.rasters.values()) for c in mapping.change},
                      calibration=calibration, checkpoint=mapping.checkpoint,
                      label_years=[str(y) for y in label_years or []])


def catalogued_checkpoint(catalog_dir: Path) -> str | None:
    """The checkpoint file of the ``model`` item of the catalog at ``catalog_dir`` (None: no such item)."""
    from core.files import read_json

    item = catalog_dir / "models" / si.MODEL_ID / f"{si.MODEL_ID}.json"
    if not item.is_file():
        return None
    href = ((read_json(item).get("assets") or {}).get("checkpoint") or {}).get("href")
    return str((item.parent / href).resolve()) if href else None


def year_totals(out: RunOutputs, calibration: str | None, aoi: Any, options: TotalsOptions,
                notes: list[str]) -> tuple[list[AreaTotal], list[TotalChange]]:
    """Totals of every map year and the changes between consecutive ones (none without a calibration)."""
    if not calibration:
        notes.append("no interval calibration (evaluation without intervals): no area totals")
        return [], []
    totals = [area_totals(maps=[m if isinstance(m, str) else m.map for _, m in sorted(tiles.items())],
                          calibration=calibration, year=year,
                          aoi=aoi, options=options) for year, tiles in sorted(out.maps.items()) if tiles]
    unlabelled = [str(t.year) for t in totals if out.label_years and str(t.year) not in out.label_years]
    if unlabelled:
        notes.append(f"map year(s) {', '.join(unlabelled)} had no GEDI labels in training or calibration: their "
                     "totals' and changes' intervals assume the labelled years' error distribution holds there "
                     "(not verifiable; a shift between years' composites adds an error they do not include)")
    return totals, [total_change(a, b) for a, b in zip(totals, totals[1:], strict=False)]


def run_items(out: RunOutputs, totals: list[AreaTotal], changes: list[TotalChange], table: str | None,
              model_ref: bool = True) -> list[Any]:
    """Every catalog item of the run (see :mod:`flows.stac_items`); ``model_ref``: the maps link to the
    catalog's ``model`` item (False: they were made with a model the catalog does not hold)."""
    comps = [out.composites[y] for y in sorted(out.composites)]
    geom = area_geometry([p for c in comps for p in c.paths])
    items = [i for y in sorted(out.composites) for i in si.composite_items(out.composites[y], y)]
    items += [i for lab in out.labels for i in si.label_items(lab)]
    if out.chips is not None:
        items.append(si.chips_item(out.chips, comps, out.labels, geom))
    if out.training is not None:
        items.append(si.model_item(out.training, out.train_config, comps, geom))
    if out.evaluation is not None:
        items.append(si.evaluation_item(out.evaluation, comps, geom))
    for year, tiles in sorted(out.maps.items()):
        items += si.map_items(tiles, out.composites[year], out.evaluation.split if out.evaluation else None, year,
                              model_ref=model_ref)
    seasons = {y: c.season for y, c in out.composites.items()}
    return items + si.totals_items(totals, changes, table=table, seasons=seasons, geometry=geom,
                                   change_rasters=out.change_rasters)


def _resolved(path: str | None) -> str | None:
    return str(Path(path).resolve()) if path else None


def _change_quicklooks(out: RunOutputs) -> list[str]:
    """The ``.change.png`` of every difference raster (rendered by the mapping summary; again if missing)."""
    from flows.summaries import change_quicklook

    pngs = []
    for key, rasters in sorted(out.change_rasters.items()):
        for r in rasters:
            png = change_quicklook(r, f"{Path(r).stem}: AGB change {key}")
            pngs += [str(png)] if png else []
    return pngs


def mrv_outputs(*, output_dir: str, outputs: RunOutputs, aoi: Any = None, totals: TotalsOptions | None = None,
                catalog: bool = True, catalog_options: CatalogOptions | None = None) -> MrvResult:
    """Totals and changes, their table, change quicklooks, the run catalog (validated), and the artifact.
    ``totals``/``catalog_options``: None = the option dataclasses' defaults."""
    totals = totals or TotalsOptions()
    catalog_options = catalog_options or CatalogOptions()
    root = Path(output_dir)
    notes: list[str] = []
    calibration = outputs.evaluation.calibration if outputs.evaluation else outputs.calibration
    tots, changes = year_totals(outputs, calibration, aoi, totals, notes)
    table = tjson = None
    if tots:
        table = str(totals_table(tots, changes, root / "totals" / "totals.csv"))
        tjson = str(write_json_atomic(root / "totals" / "totals.json", {"totals": [t.to_dict() for t in tots],
                                                                         "changes": [c.to_dict() for c in changes]}))
    pngs = _change_quicklooks(outputs)
    cat = report = None
    if catalog:
        model_ref = outputs.training is not None or catalogued_checkpoint(root / CATALOG_DIR) == _resolved(
            outputs.checkpoint)
        if not model_ref:
            notes.append(f"maps made with {outputs.checkpoint}, which this catalog does not hold as its model: "
                         "no derived_from link to a model item")
        cat = write_catalog(catalog_dir=str(root / CATALOG_DIR),
                            items=run_items(outputs, tots, changes, table, model_ref), options=catalog_options)
        report = validate_catalog(cat.catalog, strict=False)
        notes += [f"catalog does not validate: {e}" for e in report.errors]
    res = MrvResult(totals=tots, changes=changes, totals_json=tjson, table=table, catalog=cat, validation=report,
                    quicklooks=pngs, notes=notes)
    from flows import summaries

    summaries.mrv(res)
    return res


@task(name="mrv-outputs", cache_policy=NO_CACHE)
def mrv_task(output_dir: str, outputs: RunOutputs, aoi: Any, totals: TotalsOptions, catalog: bool) -> MrvResult:
    """The area flows' MRV step (a Prefect task around :func:`mrv_outputs`)."""
    return mrv_outputs(output_dir=output_dir, outputs=outputs, aoi=aoi, totals=totals, catalog=catalog)
