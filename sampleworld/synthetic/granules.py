"""Small GEDI L4A-layout HDF5 files for tests and benchmarks (not real data).

The layout mirrors the real granules in ../shared/realdata: root attribute ``short_name = GEDI_L4A``,
``BEAMxxxx`` groups with 1-D gzip-chunked datasets (chunk 14200 shots, like the real files) and a
``land_cover_data`` subgroup, ``METADATA/DatasetIdentification`` with ``fileName``, and ``ANCILLARY``.
``filler`` adds extra float32 datasets per beam (``agbd_prediction/...``) so a file reaches the size of
a real one (about 180 datasets per beam there) for the read benchmark.
"""

from __future__ import annotations

import http.server
from pathlib import Path

import h5py
import numpy as np

from core.constants import AGBD_FILL
from labels.granule import BEAM_NAMES

_UNITS = {"agbd": "Mg / ha", "agbd_se": "Mg / ha", "lat_lowestmode": "degrees", "lon_lowestmode": "degrees",
          "delta_time": "s"}


def synthetic_beam(n: int, lon: tuple[float, float], lat: tuple[float, float], rng: np.random.Generator, *,
                   delta_time0: float = 1.74e8, fill_frac: float = 0.1, bad_quality_frac: float = 0.2,
                   degraded_frac: float = 0.05, beam_index: int = 0) -> dict[str, np.ndarray]:
    """Arrays of one beam: ``n`` shots along the straight line ``lon[0],lat[0] -> lon[1],lat[1]``."""
    t = np.linspace(0.0, 1.0, n)
    agbd = rng.gamma(2.0, 40.0, n).astype(np.float32)
    fill = rng.random(n) < fill_frac
    agbd[fill] = AGBD_FILL
    se = np.where(fill, np.float32(AGBD_FILL), agbd * np.float32(0.1) + np.float32(2.0)).astype(np.float32)
    q = ((rng.random(n) >= bad_quality_frac) & ~fill).astype(np.uint8)
    deg = np.where(rng.random(n) < degraded_frac, rng.choice(np.array([4, 34, 74], np.uint8), n), 0)
    return {
        "lat_lowestmode": lat[0] + (lat[1] - lat[0]) * t,
        "lon_lowestmode": lon[0] + (lon[1] - lon[0]) * t,
        "agbd": agbd,
        "agbd_se": se,
        "l4_quality_flag": q,
        "l2_quality_flag": q.copy(),
        "degrade_flag": deg.astype(np.uint8),
        "sensitivity": rng.uniform(0.8, 1.0, n).astype(np.float32),
        "shot_number": (np.uint64(10**15) * np.uint64(beam_index + 1) + np.arange(1, n + 1, dtype=np.uint64)),
        "delta_time": delta_time0 + np.arange(n) * 0.00826,
        "selected_algorithm": rng.choice(np.array([1, 2, 10], np.uint8), n),
        "beam": np.full(n, beam_index, np.uint16),
        "land_cover_data/pft_class": rng.choice(np.array([1, 2, 4, 6, 11], np.uint8), n),
        "land_cover_data/leaf_off_flag": rng.choice(np.array([0, 0, 0, 1, 255], np.uint8), n),
    }


def write_l4a_granule(path: str | Path, beams: dict[str, dict[str, np.ndarray]], *,
                      omit: tuple[str, ...] = (), filler: int = 0, chunk: int = 14200,
                      metadata_name: str | None = None, seed: int = 0) -> Path:
    """Write an L4A-layout file; ``omit`` drops those datasets from every beam (missing-dataset tests)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as h5:
        h5.attrs["short_name"] = "GEDI_L4A"
        for beam, cols in beams.items():
            if beam not in BEAM_NAMES:
                raise ValueError(f"unknown beam group {beam}")
            g = h5.create_group(beam)
            for name, arr in cols.items():
                if name in omit:
                    continue
                ds = g.create_dataset(name, data=arr, chunks=(min(chunk, max(1, arr.size)),),
                                      compression="gzip", compression_opts=6)
                if name in _UNITS:
                    ds.attrs["units"] = _UNITS[name]
            n = len(next(iter(cols.values())))
            for k in range(filler):
                data = rng.normal(100.0, 30.0, n).astype(np.float32)
                g.create_dataset(f"agbd_prediction/filler_{k:03d}", data=data,
                                 chunks=(min(chunk, max(1, n)),), compression="gzip", compression_opts=1)
        meta = h5.create_group("METADATA/DatasetIdentification")
        meta.attrs["fileName"] = metadata_name or path.name
        meta.attrs["shortName"] = "GEDI_L4A"
        anc = h5.create_group("ANCILLARY")
        anc.create_dataset("pft_lut", data=np.array([(1, b"ENT"), (2, b"EBT"), (4, b"DBT"), (6, b"GSW")],
                                                    dtype=[("pft_class", "u1"), ("pft_name", "S3")]))
    return path


class RangeFileHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with single-range GET (python's http.server has none), for loopback HTTP tests and
    benchmarks of the partial granule reader. Served ranges are appended to ``ranges`` (a class list)."""

    ranges: list[str] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        self.send_range(Path(self.translate_path(self.path)), self.headers.get("Range"))

    def send_range(self, path: Path, rng: str | None) -> None:
        """Answer 206 with bytes ``rng`` (``bytes=START-END``) of ``path``; 404 / 400 when missing."""
        if not path.is_file():
            self.send_error(404)
            return
        if not rng:
            self.send_error(400, "range required")
            return
        size = path.stat().st_size
        start, end = (int(v) for v in rng.removeprefix("bytes=").split("-"))
        end = min(end, size - 1)
        type(self).ranges.append(rng)
        with open(path, "rb") as fh:
            fh.seek(start)
            body = fh.read(end - start + 1)
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
