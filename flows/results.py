"""What the flows return: the engine's typed result per stage (and whether the stage cache served it), the
run plan of a multi-year run, the maps and change of every map year, and an area's current model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from compositing.contracts import CompositeResult, SearchResult
from core.contracts import Contract
from core.seasons import SeasonChoice, YearPlan
from training.change import ChangeResult

R = TypeVar("R", bound=Contract)


@dataclass(frozen=True)
class HlsStageResult(Contract):
    """The hls-composite stage: the saved search and the composites of every tile it found."""

    search: SearchResult
    composites: CompositeResult
    output_dir: str


@dataclass(frozen=True)
class Stage(Generic[R]):
    """A stage flow's outcome: ``result`` (the engine's contract), ``cached`` (served by the stage cache)."""

    result: R
    cached: bool
    cache_key: str

    def to_dict(self) -> dict[str, Any]:
        return {**self.result.to_dict(), "cached": self.cached, "cache_key": self.cache_key}


@dataclass(frozen=True)
class RunPlan(Contract):
    """What a run maps and trains on, decided before any composite: the year plan (``core.seasons``:
    requested year, map years, training years and why) and each year's window (``SeasonChoice``, with
    ``gedi_days`` for the training seasons)."""

    years: YearPlan
    seasons: dict[str, SeasonChoice]  # str(year) -> window

    def season(self, year: int) -> SeasonChoice:
        return self.seasons[str(year)]

    @property
    def training(self) -> list[SeasonChoice]:
        return [self.season(y) for y in self.years.training_years]

    @property
    def mapped(self) -> list[SeasonChoice]:
        return [self.season(y) for y in self.years.map_years]


@dataclass(frozen=True)
class YearMaps(Contract):
    """One mapped year: its window, the composites it was mapped from, the biomass COGs (tile -> path)
    and, on the sample world, the maps against the world's truth AGB."""

    year: int
    season: SeasonChoice
    composites: CompositeResult
    maps: dict[str, str]
    map_vs_truth: dict[str, dict[str, Any]] | None = None


@dataclass(frozen=True)
class MappingResult(Contract):
    """Maps of every map year with one checkpoint, and the change between consecutive map years
    (``truth_change``: on the sample world, the same table computed on the world's true AGB)."""

    checkpoint: str
    years: dict[str, YearMaps]  # str(year) -> maps
    change: list[ChangeResult]
    truth_change: list[ChangeResult] = field(default_factory=list)


@dataclass(frozen=True)
class ModelRecord(Contract):
    """An area's current model (``<output_dir>/model/current.json``, written by biomass-pipeline after
    evaluation; read by map-biomass and yearly-biomass). ``rmse``: test RMSE (Mg/ha), overall;
    ``calibration``: the evaluation's prediction-interval calibration (None: evaluated without intervals)."""

    checkpoint: str
    training_years: list[int]
    seasons: list[str]
    export: str
    metrics: str
    rmse: float | None
    trained_at: str
    calibration: str | None = None
