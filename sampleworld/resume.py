"""Resume markers of the sample-world generator: a finished scene or granule records its result."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from core.files import write_json_atomic


def done_marker(folder: Path, name: str) -> Path:
    """Sidecar recording a finished granule (its STAC item and the world key), for resuming a run."""
    return folder / f".{name}.done.json"


def load_done(path: Path, key: str) -> Any:
    """The recorded result if ``path`` exists and was written for world ``key``, else None."""
    if not path.exists():
        return None
    rec = json.loads(path.read_text())
    return rec["result"] if rec.get("key") == key else None


def save_done(path: Path, key: str, result: Any) -> None:
    write_json_atomic(path, {"key": key, "result": result})
