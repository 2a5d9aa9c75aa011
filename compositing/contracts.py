"""Options and results of the HLS search and the composite engine (the stage contract).

Defaults are defined here once; the flow parameters (flows/params.py) take theirs from these classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.bands import parse_collections
from core.constants import HLS_L30, HLS_STAC_URL
from core.contracts import Contract

READ_ERROR_MODES = ("skip", "fail")
ENGINES = ("kernel", "stackstac")  # compositing.kernel (default) / compositing.stackstac_engine: the same composite
DEFAULT_CHUNK = 1024
DASK_UNITS = ("auto", "tile", "window")  # the unit of Dask work of a multi-tile composite (CompositeOptions.dask_unit)


@dataclass(frozen=True)
class SearchOptions(Contract):
    """Where and what to search. ``collection``: ``HLSL30_2.0``, ``HLSS30_2.0`` or both comma-separated
    (each searched; any other id is refused); ``max_cloud_cover``: percent, inclusive (None: no filter);
    ``limit``: page size (CMR caps it at 100); ``max_items``: stop after that many unique items (per
    collection)."""

    stac_url: str = HLS_STAC_URL
    collection: str = HLS_L30
    max_cloud_cover: float | None = None
    limit: int = 100
    max_items: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "collection", ",".join(parse_collections(self.collection)))
        if self.max_cloud_cover is not None and not 0 <= float(self.max_cloud_cover) <= 100:
            raise ValueError(f"max_cloud_cover must be a percentage 0..100, got {self.max_cloud_cover}")
        if not 1 <= self.limit <= 1000:
            raise ValueError(f"limit (page size) must be 1..1000, got {self.limit}")


@dataclass(frozen=True)
class SearchResult(Contract):
    """A finished search: the saved files, counts, and the item ids per MGRS tile."""

    items_json: str
    items_csv: str
    search_json: str
    n_items: int
    n_returned: int
    duplicates: int
    repeated_pages: int
    pages: int
    server_cloud_filter: bool
    retries: int
    retry_wait_s: float
    dropped_cloud: int
    dropped_season: int
    dropped_aoi: int
    dropped_collection: int
    tiles: list[str]
    ids_by_tile: dict[str, list[str]]
    season: dict[str, str]
    stac_url: str
    collection: str
    max_cloud_cover: float | None
    searched_at: str
    reused: bool = False


@dataclass(frozen=True)
class CompositeOptions(Contract):
    """How scenes are masked and combined.

    ``mask_snow``/``mask_water``/``mask_high_aerosol``: also mask Fmask bit 4, bit 5, aerosol level 3
    (cloud, adjacent and shadow are always masked). Pixels with fewer than ``min_observations`` valid
    observations get nodata (-9999) on the mean bands. ``on_read_error``: ``skip`` a scene that cannot be
    read (recorded with the reason) or ``fail``; a scene on another CRS or grid than the tile is skipped
    the same way. ``chunk_size``: output window edge (px, multiple of 256). ``collection``: ``HLSL30_2.0``,
    ``HLSS30_2.0`` or both comma-separated (one composite of both; each scene read with its own band
    table). ``granite_layout``: also write ``composites_granite/<TILE>/<SEASON>.tif``, the composite in
    granite-geospatial-biomass's 10-band chip layout (B01, B02..B07, B09, B10, B11; the bands not
    composited are nodata -9999), a folder of same-size GeoTIFFs only (for ``inference_on_dir``).
    ``engine``: ``kernel`` (default, fastest) or ``stackstac`` (the same composite computed with stackstac).
    ``dask_unit`` (where it runs, not what it computes; not in the inputs key): on a Dask cluster, ``tile``
    runs one task per tile on the workers, each writing its COG under ``output_dir`` itself (the workers
    must see ``output_dir``: shared disk or volume); ``window`` runs one task per window whose array
    travels to the caller, which writes the COG (no shared storage needed); ``auto`` picks ``tile`` when
    there are at least 4 tiles per worker thread (``dask_tiles.AUTO_TILES_PER_THREAD``) and a probe shows
    every worker sees ``output_dir``, else ``window``. Inside a Dask task (e.g. Prefect's ``DaskTaskRunner``) a tile runs its
    windows on that task's thread unless ``window`` (then they fan out to the cluster).
    """

    mask_snow: bool = False
    mask_water: bool = False
    mask_high_aerosol: bool = False
    min_observations: int = 1
    on_read_error: str = "skip"
    chunk_size: int = DEFAULT_CHUNK
    collection: str = HLS_L30
    granite_layout: bool = False
    engine: str = "kernel"
    dask_unit: str = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "collection", ",".join(parse_collections(self.collection)))
        if self.dask_unit not in DASK_UNITS:
            raise ValueError(f"dask_unit must be one of {DASK_UNITS}, got {self.dask_unit!r}")
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {self.engine!r}")
        if self.engine == "stackstac" and self.collection != HLS_L30:
            raise ValueError(f"engine 'stackstac' composites {HLS_L30} only (it stacks the L30 asset names); "
                             f"collection {self.collection!r} needs engine 'kernel', which reads each "
                             "collection's own bands (S30: B8A, B11, B12)")
        if self.on_read_error not in READ_ERROR_MODES:
            raise ValueError(f"on_read_error must be 'skip' or 'fail', got {self.on_read_error!r}")
        if self.min_observations < 1:
            raise ValueError(f"min_observations must be >= 1, got {self.min_observations}")
        if self.chunk_size <= 0 or self.chunk_size % 256:
            raise ValueError(f"chunk_size must be a positive multiple of 256 (the HLS block), got {self.chunk_size}")


@dataclass(frozen=True)
class TileComposite(Contract):
    """One tile's composite COG and what went into it (also its JSON sidecar).

    ``scenes_skipped``: ``{"id", "asset", "reason"}`` per skipped scene; ``valid_obs``: count statistics
    (``mean``, ``min``, ``max``, ``pixels``, ``pixels_with_data``, ``nodata_fraction``); ``granite_path``:
    the granite-layout copy (``CompositeOptions.granite_layout``), else None.
    """

    tile: str
    path: str
    sidecar: str
    grid: dict[str, Any]
    season: dict[str, str]
    collection: str
    scenes_used: list[str]
    scenes_skipped: list[dict[str, str]]
    valid_obs: dict[str, Any]
    masked_bits: str
    min_observations: int
    software_version: str
    inputs_key: str
    reused: bool = False
    granite_path: str | None = None


@dataclass(frozen=True)
class CompositeResult(Contract):
    """Composites of every tile of a search; ``tiles_outside_aoi``: tiles of the search the area misses;
    ``dask_unit``: the unit of the Dask run (``tile`` or ``window``), None on local threads."""

    season: dict[str, str]
    items_json: str
    tiles: dict[str, TileComposite]
    tiles_outside_aoi: list[str] = field(default_factory=list)
    dask_unit: str | None = None

    @property
    def paths(self) -> list[str]:
        return [t.path for t in self.tiles.values()]
