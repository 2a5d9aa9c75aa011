"""A run's outputs as a static, self-contained STAC catalog (pystac), added to idempotently.

Layout (``<output_dir>/catalog/``, every href relative, so the output folder can be moved or published)::

    catalog.json
    <collection>/collection.json                 composites, labels, chips, models, evaluations, maps, totals
    <collection>/<item-id>/<item-id>.json

Each item: geometry and bbox (lon/lat) from its first raster asset (else given), ``start_datetime``/
``end_datetime`` (the season or seasons it describes), provenance (``processing:software`` with versions,
``processing:lineage``, ``agb:*`` fields: source scene ids, GEDI granules, filters, parameters), ``derived_from``
links to the items it was made from, and per asset a SHA-256 ``file:checksum`` (multihash ``1220...``) and
``file:size``; raster assets carry ``proj:code``/``proj:shape``/``proj:transform``/``proj:bbox`` (projection
2.0), ``raster:bands`` (nodata, data type, unit, resolution; raster 1.1) and STAC 1.1 ``bands`` names.

A second run upserts: items with the same id are replaced, new ones added, others kept; collection extents are
recomputed. Files are written atomically. Validation: :func:`core.stac_validate.validate_catalog` (offline).
:func:`resolve_catalog` turns a catalog back into the inputs of a mapping run (checkpoint, calibration,
composites per year and tile), checking the files against their checksums.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.contracts import Contract
from core.files import atomic_path

CATALOG_DIR = "catalog"
COLLECTIONS = {
    "composites": "Cloud-free HLS L30 mean composites per MGRS tile and season",
    "labels": "GEDI L4A AGBD label rasters on the composites' grids, and the kept shots",
    "chips": "Training chip exports (Esri Export Tiles + TerraTorch layouts)",
    "models": "Trained biomass regression models (checkpoints and training history)",
    "evaluations": "Model evaluations: metrics, interval calibration and coverage, plots",
    "maps": "Above-ground biomass maps (Mg/ha) with prediction-interval bands, per tile and year",
    "totals": "Area totals and changes of AGB and carbon with confidence intervals",
}
PROJ = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
RASTER = "https://stac-extensions.github.io/raster/v1.1.0/schema.json"
FILE = "https://stac-extensions.github.io/file/v2.1.0/schema.json"
PROCESSING = "https://stac-extensions.github.io/processing/v1.0.0/schema.json"
MEDIA = {".tif": "image/tiff; application=geotiff; profile=cloud-optimized", ".json": "application/json",
         ".png": "image/png", ".csv": "text/csv", ".parquet": "application/vnd.apache.parquet",
         ".yaml": "application/yaml", ".ckpt": "application/octet-stream"}


class CatalogError(ValueError):
    """A catalog that cannot be written or resolved; the message names the item, asset or file."""


@dataclass(frozen=True)
class CatalogOptions(Contract):
    """Root catalog id/title/description; ``license`` of the collections (SPDX id or ``other``)."""

    catalog_id: str = "agb-pipeline-run"
    title: str = "AGB pipeline run outputs"
    description: str = "Composites, GEDI labels, training chips, models, evaluations, biomass maps and totals"
    license: str = "other"
    checksums: bool = True


@dataclass(frozen=True)
class AssetSpec(Contract):
    """One file (or folder) of an item. ``raster``: read its grid and bands (projection/raster extensions)."""

    key: str
    path: str
    roles: list[str]
    title: str = ""
    media_type: str | None = None
    raster: bool = False


@dataclass(frozen=True)
class ItemSpec(Contract):
    """What an item describes. ``start``/``end``: ISO dates (inclusive); ``properties``: provenance (``agb:*``);
    ``derived_from``: ``"<collection>/<item id>"`` of its inputs; ``geometry``: lon/lat GeoJSON when no raster."""

    id: str
    collection: str
    assets: list[AssetSpec]
    start: str
    end: str
    properties: dict[str, Any] = field(default_factory=dict)
    lineage: str = ""
    derived_from: list[str] = field(default_factory=list)
    geometry: dict[str, Any] | None = None
    software: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CatalogResult(Contract):
    """The catalog written: its root file, item ids per collection, and which ids were added or replaced."""

    catalog: str
    items: dict[str, list[str]]
    added: list[str]
    updated: list[str]
    missing_links: list[str]


def safe_id(text: str) -> str:
    """An item id from free text: letters, digits, ``-``, ``_`` and ``.`` only."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-") or "item"


def multihash_sha256(path: str | Path) -> str:
    """``file:checksum`` of a file: multihash of SHA-256 (``1220`` + hex digest)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(4 << 20), b""):
            h.update(chunk)
    return "1220" + h.hexdigest()


def software_versions(extra: dict[str, str] | None = None) -> dict[str, str]:
    """``processing:software``: the pipeline's version and the libraries that shape every output."""
    from importlib.metadata import PackageNotFoundError, version

    import rasterio

    out = {}
    for name in ("agb-pipeline", "pystac", "rasterio", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "unversioned"
    out["gdal"] = rasterio.__gdal_version__
    return {**out, **(extra or {})}


def raster_metadata(path: str) -> dict[str, Any]:
    """Grid (EPSG code, shape, transform, native bbox), lon/lat footprint and per-band fields of a raster."""
    import rasterio
    from pyproj import Transformer

    from core.grid import epsg_of

    with rasterio.open(path) as ds:
        epsg = epsg_of(ds.crs) if ds.crs else None
        if epsg is None:
            raise CatalogError(f"{path}: the raster's CRS has no EPSG code")
        left, bottom, right, top = ds.bounds
        units = ds.units or (None,) * ds.count
        bands = [{"name": d or f"band{i + 1}", "nodata": _nodata(ds.nodatavals[i]), "data_type": ds.dtypes[i],
                  "unit": units[i] or ds.tags(i + 1).get("UNITS"), "spatial_resolution": abs(ds.transform.a)}
                 for i, d in enumerate(ds.descriptions)]
        shape, transform = [ds.height, ds.width], list(ds.transform)[:6]
    n = 16
    xs = [left + (right - left) * k / n for k in range(n)] + [right] * n + \
         [right - (right - left) * k / n for k in range(n)] + [left] * n
    ys = [top] * n + [top - (top - bottom) * k / n for k in range(n)] + [bottom] * n + \
         [bottom + (top - bottom) * k / n for k in range(n)]
    lon, lat = Transformer.from_crs(f"EPSG:{epsg}", "EPSG:4326", always_xy=True).transform(xs, ys)
    ring = [[round(x, 7), round(y, 7)] for x, y in zip(lon, lat, strict=True)][::-1]  # counter-clockwise
    return {"code": f"EPSG:{epsg}", "shape": shape, "transform": transform, "bbox": [left, bottom, right, top],
            "bands": bands, "geometry": {"type": "Polygon", "coordinates": [ring + [ring[0]]]}}


def area_geometry(rasters: list[str]) -> dict[str, Any] | None:
    """Union of the rasters' lon/lat footprints (GeoJSON), for items without a raster of their own."""
    from shapely.geometry import mapping, shape
    from shapely.ops import unary_union

    shapes = [shape(raster_metadata(r)["geometry"]) for r in rasters]
    return json.loads(json.dumps(mapping(unary_union(shapes)))) if shapes else None


def _nodata(v: float | None) -> float | str | None:
    if v is None:
        return None
    return "nan" if v != v else float(v)


def _to_datetime(day: str, end: bool) -> datetime:
    d = datetime.fromisoformat(str(day)[:10])
    return d.replace(hour=23, minute=59, second=59, tzinfo=UTC) if end else d.replace(tzinfo=UTC)


def _asset(spec: AssetSpec, checksums: bool) -> tuple[Any, dict[str, Any] | None]:
    import pystac

    p = Path(spec.path).resolve()
    if not p.exists():
        raise CatalogError(f"asset {spec.key!r}: {p} does not exist")
    media = spec.media_type or (MEDIA.get(p.suffix.lower()) if p.is_file() else None)
    extra: dict[str, Any] = {}
    if p.is_file():
        extra["file:size"] = p.stat().st_size
        if checksums:
            extra["file:checksum"] = multihash_sha256(p)
    meta = raster_metadata(str(p)) if spec.raster else None
    if meta is not None:
        extra["raster:bands"] = [{k: v for k, v in b.items() if k != "name" and v is not None} for b in meta["bands"]]
        extra["bands"] = [{"name": b["name"]} for b in meta["bands"]]
        extra.update({"proj:code": meta["code"], "proj:shape": meta["shape"], "proj:transform": meta["transform"],
                      "proj:bbox": meta["bbox"]})
    asset = pystac.Asset(href=str(p), title=spec.title or None, media_type=media, roles=list(spec.roles),
                         extra_fields=extra)
    return asset, meta


def build_item(spec: ItemSpec, *, checksums: bool = True) -> Any:
    """The pystac Item of ``spec`` (assets with absolute hrefs; :func:`write_catalog` makes them relative)."""
    import pystac

    assets = [_asset(a, checksums) for a in spec.assets]
    metas = [m for _, m in assets if m is not None]
    geometry = metas[0]["geometry"] if metas else spec.geometry
    bbox = _bbox(geometry) if geometry else None
    props = json.loads(json.dumps(spec.properties, default=str))
    props.update({"processing:software": software_versions(spec.software),
                  "processing:lineage": spec.lineage or f"{spec.collection} of an agb-pipeline run",
                  "start_datetime": _to_datetime(spec.start, False).isoformat().replace("+00:00", "Z"),
                  "end_datetime": _to_datetime(spec.end, True).isoformat().replace("+00:00", "Z")})
    exts = [PROCESSING, FILE] + ([PROJ, RASTER] if metas else [])
    item = pystac.Item(id=safe_id(spec.id), geometry=geometry, bbox=bbox, datetime=None, properties=props,
                       stac_extensions=exts, collection=spec.collection)
    for (asset, _), a in zip(assets, spec.assets, strict=True):
        item.add_asset(a.key, asset)
    return item


def _bbox(geometry: dict[str, Any]) -> list[float]:
    from shapely.geometry import shape

    return [round(v, 7) for v in shape(geometry).bounds]


class _AtomicIO:
    """pystac StacIO writing every JSON file atomically (temp name, then rename)."""

    @staticmethod
    def make() -> Any:
        from pystac.stac_io import DefaultStacIO

        class AtomicStacIO(DefaultStacIO):  # type: ignore[misc]
            def write_text_to_href(self, href: str, txt: str) -> None:
                with atomic_path(href) as tmp:
                    tmp.write_text(txt, encoding="utf-8")

        return AtomicStacIO()


def _open_root(root_file: Path, options: CatalogOptions) -> Any:
    import pystac

    if root_file.is_file():
        try:
            return pystac.Catalog.from_file(str(root_file))
        except Exception as exc:  # a broken catalog must not be silently replaced (it holds other runs' items)
            raise CatalogError(f"{root_file}: existing catalog cannot be read ({exc}); move it away to start anew") \
                from exc
    return pystac.Catalog(id=options.catalog_id, title=options.title, description=options.description)


def _collection(root: Any, name: str, options: CatalogOptions) -> Any:
    import pystac

    coll = root.get_child(name)
    if coll is None:
        if name not in COLLECTIONS:
            raise CatalogError(f"unknown collection {name!r}; one of {sorted(COLLECTIONS)}")
        now = datetime.now(UTC)
        coll = pystac.Collection(id=name, description=COLLECTIONS[name], license=options.license,
                                 extent=pystac.Extent(pystac.SpatialExtent([[-180.0, -90.0, 180.0, 90.0]]),
                                                      pystac.TemporalExtent([[now, now]])))
        root.add_child(coll)
    return coll


def write_catalog(*, catalog_dir: str, items: list[ItemSpec], options: CatalogOptions = CatalogOptions()
                  ) -> CatalogResult:
    """Add (or replace, by id) ``items`` in the static catalog at ``catalog_dir`` and save it self-contained."""
    import pystac

    root_dir = Path(catalog_dir).resolve()
    root = _open_root(root_dir / "catalog.json", options)
    added, updated, built = [], [], {}
    for spec in items:
        coll = _collection(root, spec.collection, options)
        item = build_item(spec, checksums=options.checksums)
        if coll.get_item(item.id) is not None:
            coll.remove_item(item.id)
            updated.append(f"{spec.collection}/{item.id}")
        else:
            added.append(f"{spec.collection}/{item.id}")
        coll.add_item(item)
        built[f"{spec.collection}/{item.id}"] = (spec, item)
    missing = _link_inputs(root, built)
    for coll in root.get_children():
        if any(True for _ in coll.get_items()):
            coll.update_extent_from_items()
            if not all(v is not None and math.isfinite(v) for v in coll.extent.spatial.bboxes[0]):  # no geometry
                coll.extent.spatial.bboxes = [[-180.0, -90.0, 180.0, 90.0]]
    root.normalize_hrefs(str(root_dir))
    root.make_all_asset_hrefs_relative()
    root.save(pystac.CatalogType.SELF_CONTAINED, stac_io=_AtomicIO.make())
    listing = {c.id: sorted(i.id for i in c.get_items()) for c in root.get_children()}
    return CatalogResult(catalog=str(root_dir / "catalog.json"), items=listing, added=added, updated=updated,
                         missing_links=missing)


def _link_inputs(root: Any, built: dict[str, tuple[ItemSpec, Any]]) -> list[str]:
    """``derived_from`` links of the new items to their inputs (new or already catalogued); missing ones listed."""
    import pystac

    missing = []
    for key, (spec, item) in built.items():
        for ref in spec.derived_from:
            coll_id, _, item_id = ref.partition("/")
            target = built.get(f"{coll_id}/{safe_id(item_id)}", (None, None))[1]
            if target is None:
                coll = root.get_child(coll_id)
                target = coll.get_item(safe_id(item_id)) if coll is not None else None
            if target is None:
                missing.append(f"{key} -> {ref}")
                continue
            item.add_link(pystac.Link(rel="derived_from", target=target, media_type=pystac.MediaType.JSON,
                                      title=ref))
    return missing


@dataclass(frozen=True)
class ResolvedRun(Contract):
    """What a catalog holds for mapping: the model checkpoint (and preset), the interval calibration, and the
    composites by year and MGRS tile (absolute paths, checked against their catalogued checksums)."""

    catalog: str
    model_item: str
    checkpoint: str
    model: str | None
    calibration: str | None
    composites: dict[str, dict[str, str]]
    verified: bool


def _asset_path(item: Any, key: str, verify: bool) -> str:
    asset = item.assets.get(key)
    if asset is None:
        raise CatalogError(f"item {item.id} has no asset {key!r} (assets: {sorted(item.assets)})")
    path = Path(asset.get_absolute_href())
    if not path.is_file():
        raise CatalogError(f"item {item.id} asset {key!r}: {path} does not exist")
    want = asset.extra_fields.get("file:checksum")
    if verify and want and multihash_sha256(path) != want:
        raise CatalogError(f"item {item.id} asset {key!r}: {path} changed since it was catalogued (SHA-256 differs)")
    return str(path)


def resolve_catalog(catalog: str, *, model_item: str | None = None, verify: bool = True) -> ResolvedRun:
    """The checkpoint, calibration and composites a ``map-biomass`` run needs, from a run's catalog.

    ``model_item``: the id in the ``models`` collection (needed when it holds several); ``verify``: check every
    resolved file against its ``file:checksum``.
    """
    import pystac

    path = Path(catalog)
    path = path / "catalog.json" if path.is_dir() else path
    if not path.is_file():
        raise CatalogError(f"no STAC catalog at {path}")
    root = pystac.Catalog.from_file(str(path))
    models = root.get_child("models")
    ids = sorted(i.id for i in models.get_items()) if models is not None else []
    if not ids or (model_item is None and len(ids) > 1) or (model_item is not None and model_item not in ids):
        raise CatalogError(f"{path}: choose a model: the models collection holds {ids or 'no item'}"
                           + (f", not {model_item!r}" if model_item else ""))
    model = models.get_item(model_item or ids[0])
    checkpoint = _asset_path(model, "checkpoint", verify)
    calibration = None
    evals = root.get_child("evaluations")
    for ev in (evals.get_items() if evals is not None else []):
        if ev.properties.get("agb:model_item") == model.id and "calibration" in ev.assets:
            calibration = _asset_path(ev, "calibration", verify)
    composites: dict[str, dict[str, str]] = {}
    comps = root.get_child("composites")
    for it in (comps.get_items() if comps is not None else []):
        year, tile = str(it.properties.get("agb:year", "")), str(it.properties.get("agb:tile", ""))
        if not year or not tile:
            raise CatalogError(f"composite item {it.id} lacks agb:year or agb:tile")
        composites.setdefault(year, {})[tile] = _asset_path(it, "data", verify)
    if not composites:
        raise CatalogError(f"{path}: the catalog holds no composite")
    return ResolvedRun(catalog=str(path), model_item=model.id, checkpoint=checkpoint,
                       model=model.properties.get("agb:model"), calibration=calibration, composites=composites,
                       verified=verify)
