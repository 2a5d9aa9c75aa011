"""Does writing labels and maps through rioxarray cost anything? (a script, not a test)

    python benchmarks/bench_xr_write.py [--reps 5] [--size 3660]

Writes the same full-tile label COG (``agbd`` + ``shot_count``, 2 % of pixels labelled) and biomass map COG
(``agb``) with the pipeline's writers (``labels.rasterize.write_label_cog``, ``training.mapping._write_cog``)
and through rioxarray's ``.rio.to_raster(driver="COG", ...)`` with the same creation options, interleaved
``--reps`` times in this process; prints wall and CPU seconds (min / median), the ratios, and whether the
files have the same pixels, profile, overviews and nodata.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core.constants import IMAGE_NODATA, LABEL_NODATA  # noqa: E402
from core.grid import Grid, mgrs_tile_grid  # noqa: E402


def cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def inputs(grid: Grid) -> tuple[Any, np.ndarray]:
    from labels.rasterize import LabelRaster

    rng = np.random.default_rng(0)
    count = (rng.random(grid.shape) < 0.02).astype(np.int32) * rng.integers(1, 3, grid.shape, dtype=np.int32)
    agbd = np.where(count > 0, rng.gamma(2.0, 60.0, grid.shape), LABEL_NODATA).astype(np.float32)
    yy, xx = np.mgrid[0:grid.height, 0:grid.width]
    agb = (150 + 80 * np.sin(xx / 97.0) * np.cos(yy / 131.0) + rng.normal(0, 5, grid.shape)).astype(np.float32)
    agb[:200] = IMAGE_NODATA
    return LabelRaster(agbd, count, LABEL_NODATA), agb


def labels_rio(path: Path, raster: Any, grid: Grid, tags: dict[str, str]) -> None:
    """The label COG of ``write_label_cog`` (bands, descriptions, tags, nodata) through rioxarray."""
    import rioxarray  # noqa: F401
    import xarray as xr

    from core.files import atomic_path
    from core.xr import spatial_coords

    y, x = spatial_coords(grid.transform, grid.width, grid.height)
    band = {"agbd": ("Mg/ha", "mean of GEDI L4A agbd of the shots in the pixel", raster.agbd),
            "shot_count": ("shots", "number of shots averaged", raster.count.astype(np.float32))}
    ds = xr.Dataset({k: (("y", "x"), a, {"long_name": k, "BAND_NAME": k, "UNITS": u, "STATISTIC": st})
                     for k, (u, st, a) in band.items()}, coords={"y": y, "x": x})
    ds = ds.rio.write_crs(grid.crs).rio.write_transform(grid.affine)
    for v in ds.data_vars:
        ds[v].rio.write_nodata(raster.nodata, inplace=True)
    all_tags = {"UNITS": "Mg/ha", "PRODUCT": "GEDI L4A agbd mean per pixel", "NODATA": str(raster.nodata),
                "MGRS_TILE": grid.tile, "GRID": json.dumps(grid.to_dict()), **tags}
    with atomic_path(path) as tmp:
        ds.rio.to_raster(tmp, driver="COG", compress="deflate", predictor=2, blocksize=256,
                         overview_resampling="average", BIGTIFF="IF_SAFER", tags=all_tags)


def map_rio(path: Path, agb: np.ndarray, grid: Grid, tags: dict[str, str]) -> None:
    """The map COG of ``training.mapping._write_cog`` through rioxarray."""
    import rioxarray  # noqa: F401
    import xarray as xr

    from core.files import atomic_path
    from core.xr import spatial_coords

    y, x = spatial_coords(grid.transform, grid.width, grid.height)
    da = xr.DataArray(agb, dims=("y", "x"), coords={"y": y, "x": x}, attrs={"long_name": "agb"})
    da = da.rio.write_crs(grid.crs).rio.write_transform(grid.affine).rio.write_nodata(IMAGE_NODATA)
    with atomic_path(path) as tmp:
        da.rio.to_raster(tmp, driver="COG", COMPRESS="DEFLATE", PREDICTOR="YES", BLOCKSIZE=256,
                         OVERVIEW_RESAMPLING="AVERAGE", tags=tags)


def compare(a: Path, b: Path) -> dict[str, Any]:
    import rasterio

    with rasterio.open(a) as x, rasterio.open(b) as y:
        keys = ("driver", "dtype", "nodata", "width", "height", "count", "crs", "transform", "blockxsize",
                "blockysize", "tiled", "compress")
        return {"same_pixels": bool(np.array_equal(x.read(), y.read())),
                "same_profile": all(x.profile.get(k) == y.profile.get(k) for k in keys),
                "same_overviews": x.overviews(1) == y.overviews(1), "same_descriptions": x.descriptions == y.descriptions}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--size", type=int, default=3660, help="raster edge in pixels (3660: a full HLS tile)")
    args = ap.parse_args()
    from labels.rasterize import write_label_cog
    from training.mapping import _write_cog

    grid = mgrs_tile_grid("10TEK").window_bounds(0, 0, args.size, args.size)
    raster, agb = inputs(grid)
    profile = {"width": grid.width, "height": grid.height, "crs": grid.crs, "transform": grid.affine}
    out = Path(tempfile.mkdtemp(prefix="bench-xr-write-"))
    cases = {"label/current": lambda p: write_label_cog(p, raster, grid, {"SEASON": "s"}),
             "label/rioxarray": lambda p: labels_rio(p, raster, grid, {"SEASON": "s"}),
             "map/current": lambda p: _write_cog(p, agb, profile, {"UNITS": "Mg/ha"}),
             "map/rioxarray": lambda p: map_rio(p, agb, grid, {"UNITS": "Mg/ha"})}
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in cases}
    for _ in range(args.reps):
        for name, fn in cases.items():
            t0, c0 = time.perf_counter(), cpu_s()
            fn(out / (name.replace("/", "_") + ".tif"))
            times[name].append((time.perf_counter() - t0, cpu_s() - c0))
    report(times, out)


def report(times: dict[str, list[tuple[float, float]]], out: Path) -> None:
    def stats(name: str, i: int) -> tuple[float, float]:
        v = sorted(t[i] for t in times[name])
        return v[0], v[len(v) // 2]

    fig: dict[str, Any] = {}
    for name in times:
        (wmin, wmed), (cmin, cmed) = stats(name, 0), stats(name, 1)
        print(f"  {name:<16} wall {wmin:6.3f} / {wmed:6.3f} s   cpu {cmin:6.3f} / {cmed:6.3f} s  (min / median)")
        fig[name] = {"wall_min": wmin, "wall_median": wmed, "cpu_min": cmin, "cpu_median": cmed}
    for kind in ("label", "map"):
        cur, rio = fig[f"{kind}/current"], fig[f"{kind}/rioxarray"]
        same = compare(out / f"{kind}_current.tif", out / f"{kind}_rioxarray.tif")
        print(f"  {kind}: rioxarray / current CPU {rio['cpu_min'] / cur['cpu_min']:.2f} (min), "
              f"{rio['cpu_median'] / cur['cpu_median']:.2f} (median); wall {rio['wall_min'] / cur['wall_min']:.2f} "
              f"(min); {same}")
        fig[kind] = same
    print(json.dumps(fig))


if __name__ == "__main__":
    main()
