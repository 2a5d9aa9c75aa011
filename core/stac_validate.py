"""Offline validation of a static STAC catalog against the JSON schemas, with pystac's own validator.

pystac ships the STAC 1.1 core schemas; the extension schemas the run catalog uses (projection 2.0, raster 1.1,
file 2.1, processing 1.0 and PROJJSON 0.7) are vendored under ``core/stac_schemas/`` by
``scripts/vendor_stac_schemas.py`` (listed with SHA-256 and source in ``SOURCES.json``). The validator never
goes online: an object that declares a schema that is not vendored fails with a message naming it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from core.contracts import Contract

SCHEMA_DIR = Path(__file__).resolve().parent / "stac_schemas"


class StacValidationFailure(ValueError):
    """A catalog that does not validate, or a schema that is not vendored."""


@lru_cache(maxsize=1)
def vendored_schemas() -> dict[str, dict[str, Any]]:
    """URL -> schema of every vendored extension schema (read once)."""
    listing = json.loads((SCHEMA_DIR / "SOURCES.json").read_text())
    return {url: json.loads((SCHEMA_DIR / entry["file"]).read_text()) for url, entry in listing.items()}


def offline_validator() -> Any:
    """A pystac ``JsonSchemaSTACValidator`` that knows the vendored schemas and refuses every other download."""
    from pystac.validation.stac_validator import JsonSchemaSTACValidator

    class _Offline(JsonSchemaSTACValidator):  # type: ignore[misc]
        def _get_schema(self, schema_uri: str) -> dict[str, Any]:
            key = schema_uri.rstrip("#")
            if key not in self.schema_cache:
                raise StacValidationFailure(f"JSON schema {schema_uri} is not vendored in {SCHEMA_DIR} (add it to "
                                            "scripts/vendor_stac_schemas.py); offline validation cannot fetch it")
            return self.schema_cache[key]

    v = _Offline()
    v.schema_cache.update(vendored_schemas())
    return v


@dataclass(frozen=True)
class ValidationReport(Contract):
    """Every object of a catalog validated: ``schemas`` the schema URIs used, ``errors`` one line per failure."""

    catalog: str
    objects: int
    items: int
    schemas: list[str]
    errors: list[str]

    @property
    def ok(self) -> bool:
        return not self.errors


def _reason(exc: Exception) -> str:
    """The first line of a validation failure plus jsonschema's best-matching error (message and JSON path)."""
    import jsonschema

    head = str(exc).splitlines()[0]
    source = getattr(exc, "source", None)
    best = jsonschema.exceptions.best_match(source) if isinstance(source, list) and source else None
    return head if best is None else f"{head}: {best.message} at {best.json_path}"


def validate_catalog(catalog: str | Path, *, strict: bool = True) -> ValidationReport:
    """Validate the catalog at ``catalog`` (its ``catalog.json`` or folder) and every child and item in it.

    ``strict``: raise :class:`StacValidationFailure` listing the failures; else return them in the report.
    """
    import pystac
    from pystac.errors import STACValidationError

    path = Path(catalog)
    path = path / "catalog.json" if path.is_dir() else path
    root = pystac.Catalog.from_file(str(path))
    validator = offline_validator()
    objects: list[Any] = [root]
    for _, children, items in root.walk():
        objects += list(children) + list(items)
    schemas: set[str] = set()
    errors = []
    for obj in objects:
        try:
            schemas.update(s for s in obj.validate(validator=validator) if s)
        except (STACValidationError, StacValidationFailure) as exc:
            errors.append(f"{obj.get_self_href()}: {_reason(exc)}")
    report = ValidationReport(catalog=str(path), objects=len(objects),
                              items=sum(isinstance(o, pystac.Item) for o in objects), schemas=sorted(schemas),
                              errors=errors)
    if strict and errors:
        raise StacValidationFailure(f"{path}: {len(errors)} STAC object(s) do not validate:\n" + "\n".join(errors))
    return report
