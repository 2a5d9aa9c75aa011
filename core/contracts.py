"""Typed stage contracts: frozen dataclasses with ``to_dict()`` (JSON, Prefect) and a strict ``from_dict()``.

Every engine entry point returns one of these, so a consumer that reads a field the result does not have
fails at once (and in tests), instead of getting an empty value from a dict. ``from_dict`` rebuilds nested
contracts (fields typed as a contract, ``list[Contract]`` or ``dict[str, Contract]``) and rejects unknown
or missing keys, naming the type and the key.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any, TypeVar

T = TypeVar("T", bound="Contract")


class ContractError(ValueError):
    """A stored result that does not match its contract (names the type and the keys)."""


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


class Contract:
    """Mixin for frozen dataclasses that cross a stage boundary."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (nested contracts as dicts, tuples as lists, paths as strings)."""
        return _jsonable(dataclasses.asdict(self))  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[T], doc: dict[str, Any]) -> T:
        """Strict inverse of :meth:`to_dict`."""
        if not isinstance(doc, dict):
            raise ContractError(f"{cls.__name__}: expected a JSON object, got {type(doc).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(doc) - set(fields))
        missing = sorted(n for n, f in fields.items() if n not in doc and f.default is dataclasses.MISSING
                         and f.default_factory is dataclasses.MISSING)
        if unknown or missing:
            raise ContractError(f"{cls.__name__}: unknown keys {unknown}, missing keys {missing}")
        hints = typing.get_type_hints(cls)
        return cls(**{k: _rebuild(hints[k], v) for k, v in doc.items()})


def _rebuild(hint: Any, value: Any) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if isinstance(hint, type) and issubclass(hint, Contract) and isinstance(value, dict):
        return hint.from_dict(value)
    if origin is dict and len(args) == 2 and isinstance(value, dict):
        return {k: _rebuild(args[1], v) for k, v in value.items()}
    if origin is list and args and isinstance(value, list):
        return [_rebuild(args[0], v) for v in value]
    if origin is tuple and isinstance(value, list):
        return tuple(value)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)) and value is not None:
        for arg in args:
            if arg is not type(None) and isinstance(arg, type) and issubclass(arg, Contract) and isinstance(value, dict):
                return arg.from_dict(value)
    return value
