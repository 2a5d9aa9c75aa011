"""Chip-export throughput: chips written per second (224 x 224 x 6 image + label), against a naive baseline.

Usage: python benchmarks/bench_chips.py [--composite C.tif --label L.tif] [--workers 2] [--repeat 3]

Without --composite/--label it writes a full-size 3660 x 3660 composite (7 bands) + label raster on the
real 10TEK grid (int16 like the pipeline's composite COGs, or ``--dtype float32`` for the composite-engine 1
format; zstd + predictor, 256 px tiles) into a temp folder; ``--noise 40`` adds seeded texture of 40 HLS
units so the composite compresses like a real one (the smooth synthetic field compresses ~100x). The same
process then times
  * ``chips.export.export_chips`` (both layouts: Esri real files + TerraTorch hard links + metadata), and
  * a naive baseline: for each of the same chip positions, a rasterio windowed read of the composite and
    the label and a write of each chip with default GTiff settings, one chip at a time,
and prints chips/s of each and their ratio (the ratio is less affected by other load on the machine).
Goal (issue 5): >= 500 chips/s on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import rasterio
from rasterio.windows import Window

from chips.export import export_chips
from chips.params import ChipParams
from core.constants import IMAGE_NODATA
from core.grid import mgrs_tile_grid
from sampleworld.synthetic.pairs import write_pair


def naive_baseline(composite: Path, label: Path, positions: list[tuple[int, int]], out: Path,
                   cs: int) -> tuple[float, float]:
    """(wall s, CPU s) to cut ``positions`` with one windowed read + default-GTiff write per chip and raster."""
    out.mkdir(parents=True)
    t0, c0 = time.perf_counter(), time.process_time()
    with rasterio.open(composite) as c, rasterio.open(label) as la:
        for i, (r, col) in enumerate(positions):
            win = Window(col, r, cs, cs)
            tr = c.window_transform(win)
            img = c.read([1, 2, 3, 4, 5, 6], window=win)
            lab = la.read(1, window=win)
            with rasterio.open(out / f"{i}_img.tif", "w", driver="GTiff", width=cs, height=cs, count=6,
                               dtype="float32", crs=c.crs, transform=tr, nodata=IMAGE_NODATA) as ds:
                ds.write(img)
            with rasterio.open(out / f"{i}_label.tif", "w", driver="GTiff", width=cs, height=cs, count=1,
                               dtype="float32", crs=c.crs, transform=tr, nodata=la.nodata) as ds:
                ds.write(lab, 1)
    return time.perf_counter() - t0, time.process_time() - c0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--composite", type=Path)
    ap.add_argument("--label", type=Path)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="runs of each method; the best is reported")
    ap.add_argument("--compress", default="zstd", choices=["zstd", "deflate", "none"],
                    help="compression of the generated input rasters (default zstd + predictor, as "
                    "the composite COGs)")
    ap.add_argument("--dtype", default="int16", choices=["int16", "float32"],
                    help="composite data type of the generated input (int16: the pipeline's since composite-engine 2)")
    ap.add_argument("--noise", type=float, default=0.0,
                    help="standard deviation (HLS units) of texture added to the generated composite")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_chips-"))
    try:
        if a.composite and a.label:
            comp, lab = a.composite, a.label
        else:
            t0 = time.perf_counter()
            comp, lab = write_pair(tmp / "world", mgrs_tile_grid("10TEK"), dtype=a.dtype, noise=a.noise,
                                   compress=None if a.compress == "none" else a.compress)
            print(f"wrote a 3660 x 3660 {a.dtype} composite (noise {a.noise}) + label on 10TEK ({a.compress}, "
                  f"{comp.stat().st_size / 1e6:.0f} MB) in "
                  f"{time.perf_counter() - t0:.1f} s")
        ours: list[tuple[float, float]] = []
        result: dict = {}
        for i in range(a.repeat):
            out = tmp / f"export{i}"
            t0, c0 = time.perf_counter(), time.process_time()
            result = export_chips(composites=[comp], labels=[lab], output_dir=out,
                                  params=ChipParams(workers=a.workers))
            ours.append((time.perf_counter() - t0, time.process_time() - c0))
            if i < a.repeat - 1:
                shutil.rmtree(out)
        n = result.n_chips
        chips = json.loads(Path(result.split_file).read_text())["chips"]
        positions = [(c["row"], c["col"]) for c in chips]
        naive = [naive_baseline(comp, lab, positions, tmp / f"naive{i}", 224) for i in range(a.repeat)]
        (ow, oc), (nw, nc) = min(ours), min(naive)
        print(f"chips: {n} (224 x 224 x 6 + label), splits {result.splits}, workers {a.workers}")
        print(f"export_chips (both layouts + metadata): {ow:.2f} s wall {oc:.2f} s CPU  "
              f"{n / ow:.0f} chips/s  {n / oc:.0f} chips per CPU-s")
        print(f"naive windowed read + write per chip:   {nw:.2f} s wall {nc:.2f} s CPU  "
              f"{n / nw:.0f} chips/s  {n / nc:.0f} chips per CPU-s")
        print(f"ratio export_chips / naive: {nw / ow:.2f}x wall, {nc / oc:.2f}x CPU   "
              f"goal >= 500 chips/s: {'met' if n / ow >= 500 else 'NOT met'} (wall, shared machine)")
        rates = sorted(n / w for w, _ in ours)
        print(f"export_chips over {a.repeat} runs: median {statistics.median(rates):.0f} chips/s "
              f"[{rates[0]:.0f}-{rates[-1]:.0f}] (the lines above are the best run of each method)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
