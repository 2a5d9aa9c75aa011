"""Name -> (flow, parameter model) of every flow the CLI and the deployments know."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


def flows() -> dict[str, tuple[Any, type[BaseModel]]]:
    from flows import params as P
    from flows import stages as S
    from flows.pipeline import biomass_pipeline, map_biomass, yearly_biomass

    return {
        "sample-world": (S.sample_world, P.SampleWorldParams),
        "hls-composite": (S.hls_composite, P.HlsCompositeParams),
        "gedi-labels": (S.gedi_labels, P.GediLabelsParams),
        "export-chips": (S.export_chips, P.ExportChipsParams),
        "train-model": (S.train_model, P.TrainModelParams),
        "evaluate-model": (S.evaluate_model, P.EvaluateModelParams),
        "predict-map": (S.predict_map, P.PredictMapParams),
        "biomass-pipeline": (biomass_pipeline, P.BiomassPipelineParams),
        "map-biomass": (map_biomass, P.MapBiomassParams),
        "yearly-biomass": (yearly_biomass, P.YearlyBiomassParams),
    }


def build_params(model: type[BaseModel], raw: dict[str, Any]) -> BaseModel:
    """Accept the flat parameters or Prefect's ``{"params": {...}}`` form."""
    if set(raw) == {"params"} and isinstance(raw["params"], dict):
        raw = raw["params"]
    return model.model_validate(raw)
