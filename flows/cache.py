"""Stage result cache keyed by the stage's parameters AND its input files.

The key is the SHA-256 of the stage name, its resolved parameters (``force`` and ``dask_address``
excluded; loopback URLs lose their port) and the fingerprints (size, mtime) of its input files. A finished
stage stores its typed result under ``<output_dir>/.cache/<stage>/<key>.json`` together with the
fingerprints of the output files it produced. A re-run with the same key skips the stage only while every
recorded output still exists unchanged: an output rewritten by another run (e.g. a stand-alone
``gedi-labels`` with other filters into the same folder) makes the stage run again, and its consumers'
input fingerprints change with it. ``force=True`` re-runs. The engines also skip finished files.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from core.contracts import Contract, ContractError
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


def fingerprint(path: str | os.PathLike[str]) -> list[Any]:
    """``[path, size, mtime_ns]`` of a file, ``[path, "dir"]`` of a folder (its files are fingerprinted
    where they matter: a folder's mtime changes whenever a sibling stage adds to it), or ``[path, "missing"]``."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return [str(p), "missing"]
    return [str(p), "dir"] if p.is_dir() else [str(p), st.st_size, st.st_mtime_ns]


def stage_key(stage: str, params: dict[str, Any], inputs: Iterable[str | os.PathLike[str]] = ()) -> str:
    clean = {k: _normalise(v) for k, v in params.items() if k not in IGNORED_KEYS}
    blob = json.dumps({"stage": stage, "params": clean, "inputs": sorted(fingerprint(p) for p in inputs)},
                      sort_keys=True, default=str)
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


def load_cached(output_dir: str, stage: str, key: str, kind: type[Contract]) -> Contract | None:
    """The stored result when it exists and all its outputs exist unchanged, else None."""
    path = _record_path(output_dir, stage, key)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        if any(fingerprint(fp[0]) != fp for fp in record["outputs"]):
            return None
        return kind.from_dict(record["result"])
    except (json.JSONDecodeError, KeyError, TypeError, ContractError):
        return None  # an old or damaged record: run the stage again


def store(output_dir: str, stage: str, key: str, result: Contract) -> None:
    doc = result.to_dict()
    write_json_atomic(_record_path(output_dir, stage, key),
                      {"stage": stage, "key": key, "outputs": [fingerprint(p) for p in output_paths(doc)],
                       "result": doc})
