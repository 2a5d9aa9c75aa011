"""Earthdata emulator throughput on loopback (unshaped, subprocess mode): is it ever the bottleneck?

Usage: python benchmarks/bench_emulator.py [--clients 2] [--seconds 3] [--size-mb 64]

Writes a random file and a 2048 x 2048 int16 COG (256 px tiles, deflate) into a temp folder, starts
``EarthdataEmulator(mode="process")`` and, from ``--clients`` client processes each holding one keep-alive
connection (http.client), times:
  * 1 MiB range GETs on a signed URL (MB/s) against a baseline of ``os.pread`` of the same ranges;
  * 16 KiB range GETs on a signed URL (requests/s);
  * 16 KiB reads resolved through the data host every time (bearer -> 307 -> 206: 2 requests per read);
  * GDAL /vsicurl/ reading the whole COG through the emulator (bearer + cookie jar) against reading the
    same file from disk (the ratio is what a local pipeline loses to the emulator).
Prints one JSON line of figures; ratios are less affected by other load on the shared machine.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import rasterio
from rasterio.transform import Affine

from core.constants import HLS_NODATA
from sampleworld.emulator import EarthdataEmulator

TOKEN = "bench-token"


def _ranges(size: int, step: int, n: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    return [int(x) for x in rng.integers(0, size - step, n)]


def client(url: str, size: int, step: int, seconds: float, via_data: bool, seed: int) -> tuple[int, int]:
    """(bytes, reads) done in ``seconds`` by one client (one keep-alive connection per host) reading random
    ``step``-byte ranges of a ``size``-byte object; ``via_data``: resolve every read through the data host."""
    conns: dict[str, http.client.HTTPConnection] = {}

    def get(u: str, headers: dict[str, str]) -> http.client.HTTPResponse:
        p = urlsplit(u)
        c = conns.setdefault(p.netloc, http.client.HTTPConnection(p.hostname, p.port, timeout=30))
        c.request("GET", p.path + ("?" + p.query if p.query else ""), headers=headers)
        return c.getresponse()

    nbytes = reads = 0
    t_end = time.perf_counter() + seconds
    for off in _ranges(size, step, 10**6, seed):
        if time.perf_counter() >= t_end:
            break
        target = url
        if via_data:
            r = get(url, {"Authorization": f"Bearer {TOKEN}"})
            r.read()
            target = r.getheader("Location")
        r = get(target, {"Range": f"bytes={off}-{off + step - 1}"})
        nbytes += len(r.read())
        reads += 1
    return nbytes, reads


def pread_baseline(path: Path, step: int, seconds: float) -> float:
    """MB/s of os.pread of random ``step``-byte ranges of ``path`` (page cache warm)."""
    size = path.stat().st_size
    fd = os.open(path, os.O_RDONLY)
    n, t0 = 0, time.perf_counter()
    for off in _ranges(size, step, 10**6, 0):
        n += len(os.pread(fd, step, off))
        if time.perf_counter() - t0 > seconds:
            break
    os.close(fd)
    return n / (time.perf_counter() - t0) / 1e6


def run_clients(url: str, size: int, step: int, seconds: float, clients: int, via_data: bool) -> dict[
        str, float]:
    with ProcessPoolExecutor(clients) as ex:
        futs = [ex.submit(client, url, size, step, seconds, via_data, i) for i in range(clients)]
        res = [f.result() for f in futs]
    nbytes, reads = sum(r[0] for r in res), sum(r[1] for r in res)
    return {"MB_s": round(nbytes / seconds / 1e6, 1), "reads_s": round(reads / seconds, 1)}


def write_inputs(folder: Path, size_mb: int) -> tuple[Path, Path]:
    blob = folder / "lp" / "bench" / "blob.bin"
    blob.parent.mkdir(parents=True)
    blob.write_bytes(os.urandom(size_mb * 1_000_000))
    tif = folder / "lp" / "bench" / "cog.tif"
    data = np.random.default_rng(0).integers(0, 10000, (2048, 2048), dtype=np.int16)
    with rasterio.open(tif, "w", driver="COG", width=2048, height=2048, count=1, dtype="int16",
                       crs="EPSG:32610", transform=Affine(30, 0, 500010, 0, -30, 4500000), nodata=HLS_NODATA,
                       blocksize=256, compress="deflate") as ds:
        ds.write(data, 1)
    return blob, tif


def gdal_read_s(path: str, opts: dict[str, str]) -> float:
    t0 = time.perf_counter()
    with rasterio.Env(**opts), rasterio.open(path) as ds:
        ds.read(1)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--size-mb", type=int, default=64)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        blob, tif = write_inputs(Path(tmp), args.size_mb)
        out: dict[str, object] = {"clients": args.clients}
        with EarthdataEmulator({"lp-prod-protected": Path(tmp) / "lp"}, tokens=[TOKEN], mode="process") as emu:
            data_url = emu.data_url("lp-prod-protected", "bench/blob.bin")
            import requests

            signed = requests.get(data_url, headers={"Authorization": f"Bearer {TOKEN}"},
                                  allow_redirects=False).headers["Location"]
            out["pread_1MiB_MB_s"] = round(pread_baseline(blob, 1 << 20, args.seconds), 1)
            size = blob.stat().st_size
            out["signed_1MiB"] = run_clients(signed, size, 1 << 20, args.seconds, args.clients, False)
            out["signed_16KiB"] = run_clients(signed, size, 16384, args.seconds, args.clients, False)
            out["via_data_16KiB"] = run_clients(data_url, size, 16384, args.seconds, args.clients, True)
            out["ratio_signed_1MiB_vs_pread"] = round(out["signed_1MiB"]["MB_s"] / out["pread_1MiB_MB_s"], 3)
            jar = str(Path(tmp) / "jar.txt")
            opts = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif",
                    "GDAL_HTTP_HEADERS": f"Authorization: Bearer {TOKEN}", "GDAL_HTTP_COOKIEFILE": jar,
                    "GDAL_HTTP_COOKIEJAR": jar}
            remote = gdal_read_s("/vsicurl/" + emu.data_url("lp-prod-protected", "bench/cog.tif"), opts)
            local = gdal_read_s(str(tif), {})
            out["gdal_cog_s"] = {"emulator": round(remote, 3), "local": round(local, 3),
                                 "ratio": round(remote / local, 2)}
            out["emulator_stats"] = {k: v["requests"] for k, v in emu.stats()["hosts"].items()}
        print(json.dumps(out))


if __name__ == "__main__":
    main()
