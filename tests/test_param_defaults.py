"""Each parameter's default is defined once: the flow's pydantic fields equal the engines' option dataclasses
(and the engines' entry points default to those dataclasses)."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from chips.export import export_chips
from chips.params import ChipParams
from compositing.composite import build_composites, composite_tile
from compositing.contracts import CompositeOptions, SearchOptions
from compositing.search import search_hls
from flows.params import ChipOptions, GediOptions, HlsOptions, IntervalParams, TotalsParams, TrainOptions
from labels.contracts import LabelOptions
from labels.engine import run_gedi_labels
from training.config import TrainConfig
from training.evaluate import evaluate_model
from training.totals import TotalsOptions, area_totals
from training.train import train_model
from training.uncertainty import IntervalOptions

PAIRS = [(HlsOptions, SearchOptions), (HlsOptions, CompositeOptions), (GediOptions, LabelOptions),
         (ChipOptions, ChipParams), (TrainOptions, TrainConfig), (IntervalParams, IntervalOptions),
         (TotalsParams, TotalsOptions)]


def _norm(v: object) -> object:
    return list(v) if isinstance(v, tuple) else v


@pytest.mark.parametrize(("model", "engine"), PAIRS, ids=lambda c: c.__name__)
def test_flow_defaults_equal_engine_defaults(model: type, engine: type) -> None:
    engine_defaults = {f.name: f.default for f in dataclasses.fields(engine)}
    shared = set(model.model_fields) & set(engine_defaults)
    assert len(shared) >= 3, f"{model.__name__} and {engine.__name__} share too few fields: {shared}"
    diffs = {k: (model.model_fields[k].default, engine_defaults[k]) for k in shared
             if _norm(model.model_fields[k].default) != _norm(engine_defaults[k])}
    assert not diffs, f"{model.__name__} vs {engine.__name__} defaults drifted: {diffs}"


@pytest.mark.parametrize(("model", "engine"), PAIRS, ids=lambda c: c.__name__)
def test_flow_options_build_the_engine_options(model: type, engine: type) -> None:
    """The flow's defaults, turned into the engine's options, are the engine's defaults."""
    build = {SearchOptions: "search_options", CompositeOptions: "composite_options", LabelOptions: "label_options",
             ChipParams: "chip_params", TrainConfig: "train_config", IntervalOptions: "interval_options",
             TotalsOptions: "totals_options"}[engine]
    assert getattr(model(), build)() == engine()


@pytest.mark.parametrize(("fn", "keyword", "engine"), [
    (search_hls, "options", SearchOptions), (composite_tile, "options", CompositeOptions),
    (build_composites, "options", CompositeOptions), (run_gedi_labels, "options", LabelOptions),
    (export_chips, "params", ChipParams), (train_model, "config", TrainConfig),
    (evaluate_model, "intervals", IntervalOptions), (area_totals, "options", TotalsOptions)])
def test_entry_points_default_to_the_option_dataclasses(fn: object, keyword: str, engine: type) -> None:
    assert inspect.signature(fn).parameters[keyword].default == engine()


@pytest.mark.parametrize(("model", "fn"), [("EvaluateModelParams", "evaluate_model"), ("PredictMapParams", "predict_map")])
def test_keyword_engines_share_their_flow_defaults(model: str, fn: str) -> None:
    """Evaluation and mapping take keywords: the flow models' shared fields default to the same values."""
    import flows.params as fp
    from training.evaluate import evaluate_model
    from training.mapping import predict_map

    engine = {"evaluate_model": evaluate_model, "predict_map": predict_map}[fn]
    flow = getattr(fp, model)
    params = inspect.signature(engine).parameters
    shared = {k for k in flow.model_fields if k in params and params[k].default is not inspect.Parameter.empty}
    assert {"norm_mean", "norm_std", "model"} <= shared

    def flow_default(k: str) -> object:  # nested option models convert to the engine's option dataclass
        v = flow.model_fields[k].get_default(call_default_factory=True)
        return v.interval_options() if hasattr(v, "interval_options") else v

    assert {k: flow_default(k) for k in shared} == {k: params[k].default for k in shared}
    assert ("intervals" in shared) == (fn == "evaluate_model") and ("calibration" in shared) == (fn == "predict_map")


def test_change_threshold_default_defined_once() -> None:
    from flows.params import ChangeParams, MapBiomassParams
    from training.change import ChangeOptions, compute_change

    assert ChangeParams().change_options() == ChangeOptions()
    assert ChangeParams.model_fields["loss_threshold"].default == ChangeOptions().loss_threshold
    assert inspect.signature(compute_change).parameters["options"].default == ChangeOptions()
    assert MapBiomassParams.model_fields["change"].default_factory is ChangeParams
