"""Read the shots of one GEDI L4A granule that fall in an area, without reading the whole granule.

Per beam: read ``lat_lowestmode``, then ``lon_lowestmode`` only where the latitude lies in the area's band
(an orbit crosses the band once: a few chunks of the beam), select the shots inside the area, group the
selected indices into contiguous runs (runs closer than one HDF5 chunk are merged), and read only those
slices of the other datasets. Then the filters of :mod:`labels.filters` run on the selection.
A source with a ``prefetch`` method (HTTP) is first told the byte ranges of the chunks those reads will
touch (from the HDF5 chunk index), so it can fetch them in a few merged range requests. Over HTTP every
request is a round trip, so the reader works on all beams at once, in four batches: the object headers
of the datasets it will open (``prefetch_blocks``: their addresses come from the beams' symbol tables),
then every beam's latitude chunks, then the longitude chunks of the band, then every beam's selected
chunks. The lat/lon chunks are inflated here (:mod:`labels.h5chunks`: deflate and
shuffle), not by h5py, which decodes under one lock for all files.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from core.earthdata_http import EarthdataHttpError
from core.reads import EndpointDownError
from labels.filters import (
    OPTIONAL_DATASETS,
    ShotFilters,
    add_counts,
    apply_filters,
    empty_counts,
)
from labels.granule import (
    GediReadError,
    GranuleName,
    basename_of,
    check_l4a_structure,
    metadata_file_name,
    parse_granule_name,
    product_of,
)
from labels.h5chunks import Prefetched, chunk_byte_ranges, decode_at, decode_whole
from labels.h5meta import Spec, warm_metadata
from labels.sources import open_source

UINT8_NA = 255


@dataclass
class GranuleShots:
    """The kept shots of one granule (``columns``: equal-length arrays) and what happened to the rest.

    ``counts``: ``input`` (all shots of all beams), one removed-count per filter, ``kept``.
    ``bytes_read``: bytes fetched from the file/server; ``file_size``: the whole file, bytes.
    """

    granule_id: str
    href: str
    production_version: str
    columns: dict[str, np.ndarray]
    counts: dict[str, int]
    per_beam: dict[str, dict[str, int]]
    warnings: list[str] = field(default_factory=list)
    bytes_read: int = 0
    file_size: int = 0


def area_mask(geom: BaseGeometry, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """True for finite lon/lat points inside or on the boundary of ``geom`` (EPSG:4326)."""
    minx, miny, maxx, maxy = geom.bounds
    mask = (lon >= minx) & (lon <= maxx) & (lat >= miny) & (lat <= maxy)  # NaN compares False
    if mask.any() and not _is_box(geom):
        idx = np.flatnonzero(mask)
        mask[idx] = shapely.intersects_xy(geom, lon[idx], lat[idx])
    return mask


def _is_box(geom: BaseGeometry) -> bool:
    return geom.geom_type == "Polygon" and abs(geom.area - shapely.box(*geom.bounds).area) <= 1e-12 * max(
        1.0, geom.area) and len(geom.exterior.coords) == 5 and not geom.interiors


def index_runs(idx: np.ndarray, merge_gap: int = 0) -> list[tuple[int, int]]:
    """Half-open ``(start, stop)`` ranges covering the sorted indices ``idx``.

    Runs separated by at most ``merge_gap`` unselected indices are merged into one range.
    """
    if idx.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(idx) > merge_gap + 1)
    starts = np.concatenate([idx[:1], idx[breaks + 1]])
    stops = np.concatenate([idx[breaks] + 1, idx[-1:] + 1])
    return [(int(a), int(b)) for a, b in zip(starts, stops, strict=True)]


Prefetch = Callable[[list[tuple[int, int]]], None]


class _Beam:
    """A beam group whose datasets are opened once: the reader asks for the same ones in every phase
    (ranges, reads), and h5py opens a new object (an HDF5 call under its global lock) per ``group[name]``.
    Lazy, so a dataset is opened (and can fail) exactly where it was opened before."""

    def __init__(self, group: h5py.Group) -> None:
        self.group = group
        self.id = group.id
        self._ds: dict[str, Any] = {}
        self._has: dict[str, bool] = {}

    def __contains__(self, name: str) -> bool:
        has = self._has.get(name)
        if has is None:
            has = self._has[name] = name in self.group
        return has

    def __getitem__(self, name: str) -> Any:
        ds = self._ds.get(name)
        if ds is None:
            ds = self._ds[name] = self.group[name]
        return ds


GroupLike = h5py.Group | _Beam
"""A beam group, or the same wrapped so its datasets are opened once."""


def _prefetch(prefetch: Prefetch | None, datasets: list[h5py.Dataset], runs: list[tuple[int, int]]) -> None:
    """Hand the byte ranges the coming reads need to the source (HTTP: few merged range requests)."""
    if prefetch is None:
        return
    ranges = [r for ds in datasets if ds.dtype.kind != "O" for r in chunk_byte_ranges(ds, runs)]
    prefetch(ranges)


def _data_datasets(group: GroupLike, names: tuple[str, ...]) -> list[h5py.Dataset]:
    """The datasets of ``names`` other than lat/lon that the beam has."""
    return [group[n] for n in names if n not in ("lat_lowestmode", "lon_lowestmode") and n in group]


def _read_runs(ds: h5py.Dataset, runs: list[tuple[int, int]], pos: np.ndarray) -> np.ndarray:
    parts = [ds[a:b] for a, b in runs]
    data = parts[0] if len(parts) == 1 else np.concatenate(parts)
    return data[pos]


def _fill_column(name: str, n: int) -> np.ndarray:
    if name in ("agbd_se", "sensitivity"):
        return np.full(n, np.nan, dtype=np.float32)
    return np.full(n, UINT8_NA, dtype=np.uint8)


def _beam_runs(group: GroupLike, sel: np.ndarray) -> list[tuple[int, int]]:
    """Index ranges covering the selected indices ``sel`` (runs closer than one chunk merged)."""
    return _chunk_runs(group["agbd"], sel)


def _chunk_runs(ds: h5py.Dataset, idx: np.ndarray) -> list[tuple[int, int]]:
    """Index ranges covering the sorted indices ``idx``, runs closer than one chunk of ``ds`` merged."""
    return index_runs(idx, merge_gap=int(ds.chunks[0]) if ds.chunks else 0)


def _runs_and_positions(ds: h5py.Dataset, idx: np.ndarray) -> tuple[list[tuple[int, int]], np.ndarray]:
    """(:func:`_chunk_runs` of ``idx``, the positions of ``idx`` in the ranges' concatenation): what
    :func:`_read_runs` takes."""
    runs = _chunk_runs(ds, idx)
    covered = np.concatenate([np.arange(a, b) for a, b in runs])
    return runs, np.searchsorted(covered, idx)


def _read_beam(group: GroupLike, lat_sel: np.ndarray, lon_sel: np.ndarray, sel: np.ndarray,
               names: tuple[str, ...], prefetch: Prefetch | None = None) -> dict[str, np.ndarray]:
    """Columns ``names`` for the selected indices ``sel`` of one beam (missing optional -> fill);
    ``lat_sel``/``lon_sel``: lat/lon already read at ``sel``. With ``prefetch``, the chunks are
    prefetched first (else the caller has done so)."""
    runs, pos = _runs_and_positions(group["agbd"], sel)
    cols: dict[str, np.ndarray] = {"lat_lowestmode": lat_sel, "lon_lowestmode": lon_sel}
    _prefetch(prefetch, _data_datasets(group, names), runs)
    for name in names:
        if name in cols:
            continue
        cols[name] = _read_runs(group[name], runs, pos) if name in group else _fill_column(name, sel.size)
    return cols


def _resolve_name(href: str, h5: h5py.File | None) -> GranuleName:
    """Parse the file name; if it is not a GEDI name, fall back to the METADATA ``fileName``."""
    name = basename_of(href)
    try:
        return parse_granule_name(name)
    except GediReadError:
        if product_of(name) is not None or h5 is None:
            raise
        meta = metadata_file_name(h5)
        if meta is None:
            raise
        return parse_granule_name(meta)


def read_granule_shots(href: str, geom: BaseGeometry, filters: ShotFilters, *,
                       session: Any = None) -> GranuleShots:
    """Kept shots of granule ``href`` (local path or http(s) URL) inside ``geom`` (EPSG:4326 polygon).

    Raises :class:`GediReadError` naming the file for a wrong product, a missing dataset, or a truncated
    or corrupt file.
    """
    name = basename_of(href)
    if product_of(name) not in (None, "L4A"):
        _resolve_name(href, None)  # raises: wrong product by file name, nothing is opened
    try:
        src = open_source(href, session)
    except GediReadError:
        raise
    except OSError as exc:  # HTTP status errors (EarthdataHttpError), unreadable local file
        raise GediReadError(f"{name}: cannot read: {exc}") from exc
    except Exception as exc:  # requests' connection errors and the like: name the file, keep the cause
        if type(exc).__module__.startswith(("requests", "urllib3")):
            raise GediReadError(f"{name}: cannot read {href}: {type(exc).__name__}: {exc}") from exc
        raise
    try:
        out, failed = _read_h5(src, href, name, filters, geom)
    finally:
        src.close()
    outage = getattr(src, "failure_error", lambda: None)()
    if isinstance(outage, EndpointDownError):  # the endpoint is down: fail the stage, never skip the file
        raise outage from None
    if failed is not None:  # raised here, outside every except block: no h5py frame in its context
        raise GediReadError(f"{name}: cannot read: {failed}") from None
    out.href, out.bytes_read, out.file_size = href, src.bytes_read, src.size
    return out


def _read_h5(src: Any, href: str, name: str, filters: ShotFilters,
             geom: BaseGeometry) -> tuple[GranuleShots, str | None]:
    """(shots, None), or (None, message) when the source recorded an HTTP failure while h5py read it: an
    HTTP failure is reported as such, never as a corrupt file (h5py, fed the zeros a failed read answers,
    may raise OSError, RuntimeError, KeyError or ValueError: whichever it is, the recorded failure wins)."""
    failure = getattr(src, "failure_error", lambda: None)
    read_ranges = getattr(src, "read_ranges", None)
    try:
        if read_ranges is not None:  # remote: fetch the metadata h5py will read in a few waves, outside h5py
            warm_metadata(read_ranges, metadata_spec(filters))
        try:
            h5 = h5py.File(src, "r")
        except OSError as exc:
            if failure() is None:
                raise GediReadError(f"{name}: cannot open as HDF5 (truncated or corrupt file?): {exc}") from exc
            h5 = None
        if h5 is not None:
            with h5:
                gname = _resolve_name(href, h5)
                out = _read_open_granule(h5, name, gname, filters, geom, getattr(src, "prefetch", None),
                                         getattr(src, "prefetch_blocks", None), getattr(src, "prefetched", None))
    except EndpointDownError as exc:  # from a prefetch (outside h5py): recorded as one inside it would be,
        if getattr(src, "failure", None) is None:  # so the caller raises a fresh error, no h5py frame in it
            src.failure = (str(exc), exc.host, None, "outage")
        return None, str(exc)  # type: ignore[return-value]
    except Exception as exc:  # noqa: BLE001 (h5py answers the zeros of a failed read with any error type)
        if failure() is None and not isinstance(exc, EarthdataHttpError):
            raise  # no HTTP failure recorded: the file itself is bad (or a bug): as before
        err = failure() or exc
        return None, str(err)  # type: ignore[return-value]
    err = failure()
    return (None, str(err)) if err is not None else (out, None)  # type: ignore[return-value]


@contextmanager
def _beam_errors(name: str, beam: str) -> Iterator[None]:
    """Name the file and beam of a read failure; HTTP failures and outages pass as they are."""
    try:
        yield
    except (EarthdataHttpError, EndpointDownError):
        raise  # an HTTP failure of a prefetch: reported as such, not as corrupt data
    except (OSError, RuntimeError, ValueError) as exc:
        raise GediReadError(f"{name}: {beam}: reading failed (corrupt or truncated data?): {exc}") from exc


def metadata_spec(filters: ShotFilters) -> Spec:
    """The groups and datasets the reader opens (:func:`labels.h5meta.warm_metadata`'s ``spec``)."""
    beam: Spec = {}
    for n in dict.fromkeys(filters.required_datasets() + OPTIONAL_DATASETS):
        head, _, tail = n.partition("/")
        if tail:
            beam.setdefault(head, {})[tail] = None
        else:
            beam[head] = None
    return {"BEAM*": beam, "METADATA": {"DatasetIdentification": {}}}


def _read_open_granule(h5: h5py.File, name: str, gname: GranuleName, filters: ShotFilters,
                       geom: BaseGeometry, prefetch: Prefetch | None = None,
                       prefetch_blocks: Callable[[list[tuple[int, int]]], None] | None = None,
                       stored: Prefetched | None = None) -> GranuleShots:
    required = filters.required_datasets()
    beams = check_l4a_structure(h5, name, required)
    notes = _version_notes(h5, name, gname)
    names = tuple(dict.fromkeys(required + OPTIONAL_DATASETS))
    counts = empty_counts()
    per_beam: dict[str, dict[str, int]] = {}
    kept_parts: list[dict[str, np.ndarray]] = []
    missing_optional: set[str] = set()
    groups: dict[str, GroupLike] = {beam: _Beam(h5[beam]) for beam in beams}
    for group in groups.values():
        missing_optional.update(n for n in OPTIONAL_DATASETS if n not in group)
    if prefetch_blocks is not None:
        _prefetch_headers(groups, names, name, prefetch_blocks)
    selected = _select_all(groups, names, name, geom, per_beam, prefetch, stored)
    for beam, group in groups.items():  # 3. read the selection (from the prefetched chunks) and filter
        bc = per_beam[beam]
        if beam in selected:
            lat, lon, sel = selected[beam]
            with _beam_errors(name, beam):
                cols = _read_beam(group, lat, lon, sel, names)
            keep, removed = apply_filters(cols, filters)
            bc.update(removed)
            bc["kept"] = int(keep.sum())
            cols = {k: v[keep] for k, v in cols.items()}
            if len(cols["agbd"]):
                cols["beam"] = np.full(len(cols["agbd"]), beam)
                kept_parts.append(cols)
        add_counts(counts, bc)
    if missing_optional:
        notes.append(f"{name}: optional dataset(s) absent, stored as fill: {', '.join(sorted(missing_optional))}")
    columns = {k: np.concatenate([p[k] for p in kept_parts]) for k in kept_parts[0]} if kept_parts else {}
    if gname.production_version == "01" and columns:
        n10 = int((columns.get("selected_algorithm", np.zeros(0)) == 10).sum())
        notes.append(f"{name}: {n10} kept shot(s) use selected_algorithm 10 (wrong AGBD in version 01)")
    return GranuleShots(granule_id=gname.granule_id, href="", production_version=gname.production_version,
                        columns=columns, counts=counts, per_beam=per_beam, warnings=notes)


def _prefetch_headers(groups: dict[str, GroupLike], names: tuple[str, ...], name: str,
                      prefetch_blocks: Callable[[list[tuple[int, int]]], None]) -> None:
    """The object headers of ``names`` in every beam, in two batches ("a" of "a/b" first); after the
    metadata walk (:mod:`labels.h5meta`) they are cached and this costs no request."""
    top = list(dict.fromkeys(n.split("/")[0] for n in names))
    for level in (top, [n for n in names if "/" in n]):
        offsets = []
        for beam, group in groups.items():
            with _beam_errors(name, beam):
                offsets += _header_offsets(group, level)
        prefetch_blocks([(off, 1024) for off in offsets])


def _select_all(groups: dict[str, GroupLike], names: tuple[str, ...], name: str, geom: BaseGeometry,
                per_beam: dict[str, dict[str, int]], prefetch: Prefetch | None,
                stored: Prefetched | None = None) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``{beam: (lat, lon, indices)}`` of the shots in ``geom`` of every beam that has any; fills
    ``per_beam`` with each beam's input/outside-area counts. Longitudes are read only for the shots in
    the area's latitude band (a granule crosses an area's band once per beam: a few of its chunks). With
    ``prefetch``: every beam's latitude chunks in one batch, then the band's longitude chunks in one
    batch, then every beam's selected chunks of the other datasets in one batch."""
    selected: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    ranges: list[tuple[int, int]] = []
    for beam, group in groups.items():  # 1. every beam's latitudes in one prefetch
        with _beam_errors(name, beam):
            ranges += _lat_ranges(group) if prefetch is not None else []
    if prefetch is not None:
        prefetch(ranges)
    bands: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    ranges = []
    for beam, group in groups.items():  # 2. the shots in the latitude band; their longitude chunks
        with _beam_errors(name, beam):
            lat, cand = _lat_band(group, geom, stored)
            bands[beam] = (lat, cand)
            if prefetch is not None and cand.size:
                ranges += chunk_byte_ranges(group["lon_lowestmode"], index_runs(cand))
    if prefetch is not None and ranges:
        prefetch(ranges)
    ranges = []
    for beam, group in groups.items():  # 3. the area's shots of every beam, their chunks in one prefetch
        lat, cand = bands[beam]
        with _beam_errors(name, beam):
            lon = _values_at(group["lon_lowestmode"], cand, stored)
        inside = area_mask(geom, lon, lat[cand])
        sel = cand[inside]
        bc = empty_counts()
        bc["input"] = int(lat.size)
        bc["outside_area"] = int(lat.size - sel.size)
        per_beam[beam] = bc
        if sel.size:
            selected[beam] = (lat[sel], lon[inside], sel)  # not the whole lat: 8 beams x 1.2 MB each
            if prefetch is not None:
                with _beam_errors(name, beam):
                    ranges += _data_ranges(group, names, _beam_runs(group, sel))
    if prefetch is not None and ranges:
        prefetch(ranges)
    return selected


def _header_offsets(group: GroupLike, names: list[str]) -> list[int]:
    """File offsets of the object headers of ``names`` in ``group`` (hard links found; others skipped),
    read from the group's symbol table without opening the objects."""
    out = []
    for n in names:
        if n not in group:
            continue
        info = group.id.links.get_info(n.encode())
        if info.type == h5py.h5l.TYPE_HARD:
            out.append(int(info.u))
    return out


def _lat_ranges(group: GroupLike) -> list[tuple[int, int]]:
    """Byte ranges of a beam's whole latitude dataset (empty for a beam without 1-D lat)."""
    lat = group["lat_lowestmode"]
    n = lat.shape[0] if lat.ndim == 1 else 0
    return chunk_byte_ranges(lat, [(0, n)]) if n else []


def _data_ranges(group: GroupLike, names: tuple[str, ...], runs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Byte ranges of the chunks of ``runs`` of the beam's other datasets (object datasets skipped)."""
    return [r for ds in _data_datasets(group, names) if ds.dtype.kind != "O" for r in chunk_byte_ranges(ds, runs)]


def _whole(ds: h5py.Dataset, stored: Prefetched | None) -> np.ndarray:
    """``ds[()]``, decoded outside h5py from the prefetched chunks when it can be (:func:`decode_whole`)."""
    got = decode_whole(ds, stored) if stored is not None else None
    return ds[()] if got is None else got


def _lat_band(group: GroupLike, geom: BaseGeometry, stored: Prefetched | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """(lat, indices of the shots whose latitude lies in ``geom``'s band, sorted) of one beam; raises
    ValueError when lat/lon are not 1-D datasets of one length."""
    lat_ds, lon_ds = group["lat_lowestmode"], group["lon_lowestmode"]
    if lat_ds.shape != lon_ds.shape or lat_ds.ndim != 1:
        raise ValueError(f"lat/lon shapes differ or are not 1-D: {lat_ds.shape} vs {lon_ds.shape}")
    lat = _whole(lat_ds, stored)
    _, miny, _, maxy = geom.bounds
    return lat, np.flatnonzero((lat >= miny) & (lat <= maxy))  # NaN compares False


def _values_at(ds: h5py.Dataset, idx: np.ndarray, stored: Prefetched | None) -> np.ndarray:
    """``ds[idx]`` (sorted indices), decoded outside h5py from the prefetched chunks when it can be."""
    if idx.size == 0:
        return np.empty(0, dtype=ds.dtype)
    got = decode_at(ds, idx, stored) if stored is not None else None
    if got is not None:
        return got
    return _read_runs(ds, *_runs_and_positions(ds, idx))


def _version_notes(h5: h5py.File, name: str, gname: GranuleName) -> list[str]:
    notes: list[str] = []
    meta = metadata_file_name(h5)
    if meta is not None and meta != name:
        try:
            mver = parse_granule_name(meta).production_version
        except GediReadError:
            mver = None
        if mver is not None and mver != gname.production_version:
            notes.append(f"{name}: METADATA fileName {meta} says production version {mver}, "
                         f"the file name says {gname.production_version}; using the file name")
    if gname.production_version == "01":
        notes.append(f"{name}: production version 01 (AGBD wrong for selected_algorithm 10; "
                     "prefer the 02 reprocessing)")
    elif gname.production_version != "02":
        notes.append(f"{name}: unknown production version {gname.production_version}")
    return notes

