"""Stage result cache keyed by the stage's inputs.

The key is the SHA-256 of the stage name and its resolved parameters (``force`` and ``dask_address``
excluded). A finished stage
stores its JSON result under ``<output_dir>/.cache/<stage>/<key>.json`` together with the output files it
produced; a re-run with the same key skips the stage while every recorded output still exists.
``force=True`` re-runs it. The engines themselves also skip finished files, so a forced or partially
deleted run redoes only what is missing.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from core.files import write_json_atomic

IGNORED_KEYS = ("force", "dask_address")  # where it runs does not change what it computes


_LOOPBACK = re.compile(r"^https?://(127\.\d+\.\d+\.\d+|localhost|\[::1\]):\d+")


def _normalise(v: Any) -> Any:
    """Loopback URLs lose their port: the sample world's STAC server gets a new free port every run."""
    if isinstance(v, str):
        return _LOOPBACK.sub("http://loopback", v)
    if isinstance(v, dict):
        return {k: _normalise(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_normalise(x) for x in v]
    return v


def stage_key(stage: str, params: dict[str, Any]) -> str:
    clean = {k: _normalise(v) for k, v in params.items() if k not in IGNORED_KEYS}
    blob = json.dumps({"stage": stage, "params": clean}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def output_paths(result: Any) -> list[str]:
    """Every string in ``result`` that names an existing file or folder (absolute path)."""
    found: list[str] = []

    def walk(v: Any) -> None:
        if isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, list | tuple):
            for x in v:
                walk(x)
        elif isinstance(v, str) and v.startswith("/") and "\n" not in v and len(v) < 4096:
            if Path(v).exists():
                found.append(v)

    walk(result)
    return sorted(set(found))


def _record_path(output_dir: str, stage: str, key: str) -> Path:
    return Path(output_dir) / ".cache" / stage / f"{key}.json"


def load_cached(output_dir: str, stage: str, key: str) -> dict[str, Any] | None:
    """The stored result when it exists and all its outputs still exist, else None."""
    path = _record_path(output_dir, stage, key)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    if not all(Path(p).exists() for p in record.get("outputs", [])):
        return None
    return record["result"]


def store(output_dir: str, stage: str, key: str, result: dict[str, Any]) -> None:
    write_json_atomic(_record_path(output_dir, stage, key),
                      {"stage": stage, "key": key, "outputs": output_paths(result), "result": result})
