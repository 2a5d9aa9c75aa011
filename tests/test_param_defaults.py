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
