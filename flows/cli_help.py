"""``python -m flows run <flow> --help`` and parameter errors, both from the flows' pydantic models.

Every parameter is listed with its type, default and description; options of nested models get dotted
names (``training.epochs``), the names ``-p`` takes. A validation error names each parameter at fault and
shows an example value for it.
"""

from __future__ import annotations

import json
import textwrap
import typing
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticUndefined

_EXAMPLES: dict[str, str] = {
    "aoi": "[-122.1, 44.2, -121.9, 44.35]",
    "year": "2024",
    "season": '{"start": "2024-06-01", "end": "2024-09-30"}',
    "output_dir": '"out/run1"',
    "stac_url": '"https://cmr.earthdata.nasa.gov/stac/LPCLOUD"',
    "size": '"small"',
}


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The model of a field typed ``Model`` or ``Model | None``; None otherwise."""
    args = typing.get_args(annotation) or (annotation,)
    models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
    return models[0] if len(models) == 1 and all(a is type(None) or a in models for a in args) else None


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if not typing.get_args(annotation) else None
    return text or str(annotation).replace("typing.", "").replace("NoneType", "None")


def _default(field: Any) -> str:
    if field.default is PydanticUndefined:
        return "required" if field.default_factory is None else "computed"
    return f"default {json.dumps(field.default, default=str)}"


def iter_params(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, str, str, str]]:
    """(dotted name, type, default, description) of every parameter of ``model``, nested models expanded."""
    for name, field in model.model_fields.items():
        dotted = f"{prefix}{name}"
        nested = _nested_model(field.annotation)
        desc = " ".join((field.description or "").split())
        if nested is not None:
            yield dotted, nested.__name__, _default(field) if field.default is not PydanticUndefined else "", desc
            yield from iter_params(nested, prefix=dotted + ".")
        else:
            yield dotted, _type_name(field.annotation), _default(field), desc


def flow_help(name: str, flow: Any, model: type[BaseModel]) -> str:
    """The text ``run <flow> --help`` prints."""
    doc = (getattr(flow, "fn", flow).__doc__ or "").strip()
    lines = [f"usage: python -m flows run {name} [--params FILE.json] [-p KEY=VALUE ...] [--debug]", ""]
    if doc:
        lines += [textwrap.fill(" ".join(doc.split("\n\n")[0].split()), 100), ""]
    lines += ["parameters (JSON file keys, or -p KEY=VALUE with dotted keys for nested options):"]
    for dotted, typ, default, desc in iter_params(model):
        head = f"  {dotted} ({typ}{', ' + default if default else ''})"
        lines.append(head)
        if desc:
            lines.append(textwrap.fill(desc, 100, initial_indent="      ", subsequent_indent="      "))
    lines += ["", "options:", "  --params FILE.json  parameters as JSON (flat, or Prefect's {\"params\": {...}})",
              "  -p KEY=VALUE        one parameter (a JSON value or a string); repeatable",
              "  --debug             show Python tracebacks on the console", "",
              f"example: python -m flows run {name} --params params.json -p output_dir=out/run1"]
    return "\n".join(lines)


def _field_at(model: type[BaseModel], loc: tuple[Any, ...]) -> Any:
    node: Any = model
    field = None
    for part in loc:
        if not (isinstance(node, type) and issubclass(node, BaseModel)) or part not in node.model_fields:
            break
        field = node.model_fields[part]
        node = _nested_model(field.annotation)
    return field


def example_for(model: type[BaseModel], loc: tuple[Any, ...]) -> str | None:
    """An example value of the parameter at ``loc`` (its ``examples``, a known one, or its default)."""
    names = [p for p in loc if isinstance(p, str)]
    field = _field_at(model, tuple(names))
    if field is not None and field.examples:
        return json.dumps(field.examples[0], default=str)
    if names and names[-1] in _EXAMPLES:
        return _EXAMPLES[names[-1]]
    if field is not None and field.default not in (PydanticUndefined, None):
        return json.dumps(field.default, default=str)
    kinds = [a for a in (typing.get_args(field.annotation) or (field.annotation,)) if a is not type(None)] \
        if field is not None else []
    return _BY_TYPE.get(kinds[0]) if kinds and isinstance(kinds[0], type) else None


_BY_TYPE: dict[type, str] = {int: "1", float: "10.0", bool: "true", str: '"text"'}


def explain_validation(name: str, model: type[BaseModel], exc: ValidationError) -> str:
    """One line per parameter at fault: its dotted name, what is wrong, an example ``-p`` value."""
    lines = [f"error: invalid parameters for {name}:"]
    for err in exc.errors(include_url=False):
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))  # drop union-branch tags
        dotted = ".".join(str(p) for p in loc) or "(parameters)"
        msg = err["msg"].removeprefix("Value error, ")
        got = err.get("input")
        line = f"  {dotted}: {msg}"
        if got is not None and err["type"] != "missing" and len(repr(got)) < 120:
            line += f" (got {json.dumps(got, default=str)})"
        example = example_for(model, loc)
        if example is not None and loc:
            line += f"; example: -p {dotted}={example}"
        lines.append(line)
    lines.append(f"See: python -m flows run {name} --help")
    return "\n".join(lines)
