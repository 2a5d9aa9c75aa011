"""What the stage flows return: the engine's typed result, and whether the stage cache served it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from compositing.contracts import CompositeResult, SearchResult
from core.contracts import Contract

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
