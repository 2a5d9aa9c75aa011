"""The chips export contract: ``<export>/chips_export.json``, one type for the writer, training and tests.

:class:`ExportManifest` is written by :func:`chips.export.export_chips` (and by the synthetic test export)
and read by training with :meth:`ExportManifest.read`, which is strict: a missing file, a wrong or missing
``export_version`` or a missing key is an :class:`ExportError` naming the export and the key.

Units and nodata: image chips are float32 HLS surface reflectance x 10000 with nodata ``image_nodata``
(-9999); label chips are float32 AGBD in Mg/ha with nodata ``label_nodata`` (-9999 or -1); a label pixel
is labelled when finite, >= 0 and not ``label_nodata``. ``stats`` hold per-split band statistics over
valid pixels (``train``, ``val``, ``test``, ``all``; each ``{"bands", "count", "min", "max", "mean",
"std"}``, population std); ``label_stats`` the same for the label. ``splits`` counts chip file pairs per
split; ``labelled_pixels`` the labelled pixels in each split's label chips (a chip position may serve several
splits with disjoint labels: same image, one label copy per split; optional, None in exports of this
version written before it existed).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from core.contracts import Contract
from core.files import write_json_atomic

EXPORT_VERSION = 2
MANIFEST_NAME = "chips_export.json"
SPLITS = ("train", "val", "test")


class ExportError(ValueError):
    """A chips export that does not follow the contract (names the export and what is wrong)."""


@dataclass(frozen=True)
class SourcePair:
    """One composite/label raster pair the export was cut from."""

    tile: str
    season: str
    composite: str
    label: str
    crs: str


@dataclass(frozen=True)
class ExportManifest:
    """Everything a consumer needs to read an export (see the module docstring for units and nodata)."""

    bands: list[str]
    band_names: list[str]
    wavelengths_um: list[float | None]
    chip_size: int
    stride: int
    image_nodata: float
    image_units: str
    label_nodata: float
    label_bands: list[str]
    label_units: str
    splits: dict[str, int]
    stats: dict[str, Any]
    label_stats: dict[str, Any]
    layouts: dict[str, str]
    split_file: str | None
    terratorch_config: str | None
    sources: list[SourcePair]
    labelled_pixels: dict[str, int] | None = None
    export_version: int = EXPORT_VERSION
    fingerprint: dict[str, Any] | None = None
    result: dict[str, Any] | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def write(self, root: str | Path) -> Path:
        """Write ``<root>/chips_export.json`` atomically."""
        return write_json_atomic(Path(root) / MANIFEST_NAME, self.to_dict())

    def train_mean_std(self) -> tuple[list[float], list[float]]:
        """Per-band mean and std of the training split (raw units)."""
        train = self.stats["train"]
        return [float(v) for v in train["mean"]], [float(v) for v in train["std"]]

    @classmethod
    def from_dict(cls, doc: dict[str, Any], where: str) -> ExportManifest:
        """Strict parse; ``where`` names the file in errors."""
        version = doc.get("export_version")
        if version != EXPORT_VERSION:
            raise ExportError(f"{where}: export_version is {version!r}, this software reads version "
                              f"{EXPORT_VERSION}; re-run export-chips to rewrite the export")
        names = [f.name for f in fields(cls)]
        optional = ("fingerprint", "result", "export_version", "labelled_pixels")
        missing = [n for n in names if n not in doc and n not in optional]
        if missing:
            raise ExportError(f"{where}: missing key(s) {missing} (not a complete chips export manifest)")
        unknown = sorted(set(doc) - set(names))
        if unknown:
            raise ExportError(f"{where}: unknown key(s) {unknown}")
        try:
            sources = [SourcePair(**s) for s in doc["sources"]]
        except TypeError as exc:
            raise ExportError(f"{where}: bad 'sources' entry: {exc}") from exc
        man = cls(**{**doc, "sources": sources})
        man._validate(where)
        return man

    def _validate(self, where: str) -> None:
        if set(self.splits) != set(SPLITS):
            raise ExportError(f"{where}: 'splits' must count {SPLITS}, has {sorted(self.splits)}")
        for key in ("train",):
            if key not in self.stats:
                raise ExportError(f"{where}: missing key 'stats.{key}'")
        mean, std = self.train_mean_std() if "mean" in self.stats["train"] else ([], [])
        if len(mean) != len(self.bands) or len(std) != len(self.bands):
            raise ExportError(f"{where}: {len(self.bands)} bands but stats.train has {len(mean)} means / "
                              f"{len(std)} stds")

    @classmethod
    def read(cls, export: str | Path) -> ExportManifest:
        """The manifest of the export folder ``export``."""
        path = Path(export) / MANIFEST_NAME
        if not path.is_file():
            raise ExportError(f"{path} is missing: {export} is not a chips export")
        try:
            doc = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ExportError(f"{path} is not valid JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise ExportError(f"{path}: expected a JSON object")
        return cls.from_dict(doc, str(path))


@dataclass(frozen=True)
class ExportResult(Contract):
    """What an export run returns (also kept in the manifest as ``result``).

    ``splits``: chip file pairs per split; ``labelled_pixels``: labelled pixels in each split's label chips;
    ``masked_buffer``: distinct labelled pixels masked in every split by the buffer between blocks of
    different splits; ``dropped``: chip positions dropped per reason (``image_nodata``, ``unlabeled``: fewer
    than ``min_labeled_pixels``, ``duplicate_overlap``: already exported from an overlapping tile,
    ``split_masked``: no split keeps enough of its labels); ``stats``/``label_stats``: the train split's
    statistics.
    """

    export_dir: str
    chips_export: str
    split_file: str
    esri_dir: str | None
    terratorch_dir: str | None
    terratorch_config: str | None
    n_chips: int
    splits: dict[str, int]
    labelled_pixels: dict[str, int]
    masked_buffer: int
    candidates: int
    dropped: dict[str, int]
    label_nodata: float
    stats: dict[str, Any]
    label_stats: dict[str, Any]
    seconds: float
    chips_per_second: float
    skipped: bool = False
