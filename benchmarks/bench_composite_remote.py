"""Composite read through the Earthdata emulator: time and peak RSS at 10 and 40 scenes (a script, not a test).

    python benchmarks/bench_composite_remote.py --world DIR [--tile 10TEK] [--threads 2] [--scenes 10,40]
    python benchmarks/bench_composite_remote.py --world DIR --latency-ms 80 --conn-mbps 25 --total-mbps 100 --naive

DIR is a sample world (``--size benchmark``: full 3660 x 3660 tile, 25 scenes). The emulator runs in its
own process (``sampleworld.emulator``, bearer token, unshaped loopback); each variant runs in a fresh
subprocess (its own peak RSS) that composites the tile with every COG read through ``/vsicurl/`` with this
project's Earthdata settings (``core.earthdata.gdal_options``). Scenes beyond the world's are hard-linked
copies under new ids and names, so 40 scenes are 280 distinct remote files (none shared). Printed:

* ``remote`` at each scene count: wall and CPU time, peak RSS; the goal is RSS(40) / RSS(10) <= 1.2;
* ``remote+vsicache`` (``--old``): the same with ``VSI_CACHE=TRUE`` (the previous setting), for the ratio;
* ``local`` at the largest count: the same composite from local paths, the baseline of the time ratio.

With ``--latency-ms`` / ``--conn-mbps`` / ``--total-mbps`` every emulator host gets that link shape
(``sampleworld.emulator.LinkShape``: latency added before each response's first byte, a token bucket per
connection and one per host; MB = 1e6 bytes). Then each remote run also reports the bytes and requests
the emulator served, and its ratio to the physical limit = max(bytes / aggregate bandwidth, local decode
time of the same scenes: ``decode`` of ``bench_composite``); ``--naive`` adds stackstac's float64
``.where(clear).mean("time")`` recipe with stackstac's default GDAL settings (plus only the credentials)
over the same link at the smallest scene count, the baseline of the ">= 3x faster" ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_composite import ASSETS, cpu_s, peak_rss_mb, tile_aoi  # noqa: E402
from emulated_link import add_link_args, link_shape, traffic  # noqa: E402

TOKEN = "bench-token"


def linked_items(world: Path, tile: str, n: int, root: Path) -> list[dict[str, Any]]:
    """``n`` items of ``tile`` whose assets are hard links under ``root/<id>/`` (distinct names for the
    reused scenes), hrefs = local paths under ``root``."""
    manifest = json.loads((world / "world.json").read_text())
    items = json.loads((world / "stac" / "hls_items.json").read_text())["features"]
    src_world = Path(manifest["hls"]["items_json"]).parents[1]  # where the hrefs were written
    items = sorted((it for it in items if f".T{tile}." in it["id"]), key=lambda it: it["properties"]["datetime"])
    out = []
    for k in range(n):
        it = json.loads(json.dumps(items[k % len(items)]))
        old_id = it["id"]
        if k >= len(items):
            parts = old_id.split(".")
            parts[3] = parts[3][:7] + "T" + f"{k:06d}"
            it["id"] = ".".join(parts)
        (root / it["id"]).mkdir(parents=True, exist_ok=True)
        for a in ASSETS:
            src = world / Path(it["assets"][a]["href"]).relative_to(src_world)
            dst = root / it["id"] / f"{it['id']}.{a}.tif"
            if not dst.exists():
                os.link(src, dst)
            it["assets"][a]["href"] = str(dst)
        it["assets"] = {a: it["assets"][a] for a in ASSETS}
        out.append(it)
    return out


def credentials_only_env(href: str) -> None:
    """Put only the Earthdata credentials of ``href`` (no tuning of this project) into GDAL's process
    environment, so stackstac's own default GDAL settings decide everything else."""
    from core.earthdata import REMOTE_OPTIONS, gdal_options

    for k, v in gdal_options(href).items():
        if k not in REMOTE_OPTIONS:
            os.environ[k] = v


def other_worker(args: argparse.Namespace, items: list[dict[str, Any]]) -> dict[str, Any]:
    """``decode`` (local decode limit) and ``naive-remote`` (stackstac recipe over the link)."""
    from bench_composite import run_decode, run_naive

    if args.worker == "naive-remote":
        credentials_only_env(items[0]["assets"]["B02"]["href"])
        return run_naive(items, args.tile, args.threads, 1024)
    return run_decode(items, args.tile, args.threads, 1024)


def worker(args: argparse.Namespace) -> None:
    from compositing.composite import composite_tile
    from compositing.contracts import CompositeOptions
    from compositing.reader import RasterioReader

    items = json.loads(Path(args.items).read_text())
    if args.worker in ("decode", "naive-remote"):
        base, c0 = peak_rss_mb(), cpu_s()
        res = other_worker(args, items)
        print(json.dumps({**res, "variant": args.worker, "scenes": len(items), "used": len(items),
                          "cpu_s": cpu_s() - c0, "peak_rss_mb": peak_rss_mb(), "rss_after_imports_mb": base}))
        return
    extra = {"VSI_CACHE": "TRUE", "VSI_CACHE_SIZE": str(25 << 20)} if args.worker == "remote+vsicache" else {}
    reader = RasterioReader(open_options=extra, read_options=extra)
    base, c0 = peak_rss_mb(), cpu_s()
    with tempfile.TemporaryDirectory(prefix="bench-remote-") as tmp:
        t0 = time.perf_counter()
        res = composite_tile(tile=args.tile, items=items, aoi=tile_aoi(args.tile), output_dir=tmp,
                             season={"start": "2000-01-01", "end": "2100-01-01"}, threads=args.threads,
                             options=CompositeOptions(chunk_size=1024), reader=reader)
        dt = time.perf_counter() - t0
    print(json.dumps({"variant": args.worker, "scenes": len(items), "used": len(res.scenes_used),
                      "skipped": len(res.scenes_skipped), "time_s": dt, "cpu_s": cpu_s() - c0,
                      "peak_rss_mb": peak_rss_mb(), "rss_after_imports_mb": base}))


def spawn(variant: str, items: list[dict[str, Any]], args: argparse.Namespace, env: dict[str, str]) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(items, fh)
    cmd = [sys.executable, __file__, "--worker", variant, "--items", fh.name, "--tile", args.tile,
           "--threads", str(args.threads), "--world", args.world]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**env, "PYTHONWARNINGS": "ignore"})
    os.unlink(fh.name)
    if proc.returncode:
        raise SystemExit(f"{variant} failed:\n{proc.stderr[-3000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"  {variant:<16} scenes={res['scenes']:>3} used={res['used']:>3} time={res['time_s']:7.2f} s "
          f"cpu={res['cpu_s']:7.2f} s peak RSS={res['peak_rss_mb']:7.1f} MB", flush=True)
    return res


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", required=True)
    ap.add_argument("--tile", default=None)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--scenes", default="10,40")
    ap.add_argument("--old", action="store_true", help="also run with VSI_CACHE=TRUE (the previous setting)")
    add_link_args(ap)
    ap.add_argument("--naive", action="store_true", help="also run the naive stackstac recipe over the link")
    ap.add_argument("--json", default=None)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--items", help=argparse.SUPPRESS)
    return ap.parse_args()


def run_remote(variant: str, items: list[dict[str, Any]], emu: Any, args: argparse.Namespace,
               env: dict[str, str]) -> dict[str, Any]:
    """One remote run with the emulator's counters of that run only."""
    emu.reset_stats()
    res = spawn(variant, items, args, env)
    res.update(traffic(emu))
    print(f"  {'':<16} {res['requests']} requests, {res['body_bytes'] / 1e6:.1f} MB served", flush=True)
    return res


def main() -> None:
    args = parse_args()
    world = Path(args.world).resolve()
    args.tile = args.tile or json.loads((world / "world.json").read_text())["tiles"][0]
    if args.worker:
        return worker(args)
    fig = measure(args, world)
    print_figures(fig, args)
    if args.json:
        Path(args.json).write_text(json.dumps(fig, indent=2))
    print(json.dumps(fig))


def measure(args: argparse.Namespace, world: Path) -> dict[str, Any]:
    from sampleworld.emulator import EarthdataEmulator
    from sampleworld.serve import HLS_PREFIX

    counts = [int(c) for c in args.scenes.split(",")]
    link = link_shape(args)
    fig: dict[str, Any] = {"threads": args.threads, "tile": args.tile, "counts": counts,
                           "link": None if link is None else {"latency_ms": args.latency_ms,
                                                              "conn_mbps": args.conn_mbps,
                                                              "total_mbps": args.total_mbps}}
    with tempfile.TemporaryDirectory(prefix="bench-remote-links-", dir=world) as links, \
            EarthdataEmulator({HLS_PREFIX: links}, tokens=[TOKEN], mode="process", link=link) as emu:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EARTHDATA_") and k != "NETRC"}
        env.update(EARTHDATA_TOKEN=TOKEN, EARTHDATA_HOSTS=",".join(emu.hosts), PYTHONPATH=str(REPO))
        items = linked_items(world, args.tile, max(counts), Path(links))
        print(f"world {world} tile {args.tile}: up to {max(counts)} scenes x {len(ASSETS)} assets through "
              f"the Earthdata emulator (process mode, bearer token), {args.threads} threads, link {fig['link']}",
              flush=True)

        def remote(k: int) -> list[dict[str, Any]]:
            out = json.loads(json.dumps(items[:k]))
            for it in out:
                for a in it["assets"].values():
                    a["href"] = emu.data_url(HLS_PREFIX, Path(a["href"]).relative_to(links).as_posix())
            return out

        for k in counts:
            fig[f"remote_{k}"] = run_remote("remote", remote(k), emu, args, env)
            if link is not None:
                fig[f"decode_{k}"] = spawn("decode", items[:k], args, env)
        if args.old:
            for k in counts:
                fig[f"vsicache_{k}"] = run_remote("remote+vsicache", remote(k), emu, args, env)
        if args.naive:
            fig[f"naive_{min(counts)}"] = run_remote("naive-remote", remote(min(counts)), emu, args, env)
        fig["local"] = spawn("local", items[:max(counts)], args, env)
    return add_ratios(fig, counts, args)


def add_ratios(fig: dict[str, Any], counts: list[int], args: argparse.Namespace) -> dict[str, Any]:
    """RSS and time ratios; with a shaped link the physical limit of every remote run and the naive ratio."""
    lo, hi = min(counts), max(counts)
    fig["rss_ratio"] = fig[f"remote_{hi}"]["peak_rss_mb"] / fig[f"remote_{lo}"]["peak_rss_mb"]
    fig["remote_over_local_time"] = fig[f"remote_{hi}"]["time_s"] / fig["local"]["time_s"]
    fig["signed_with_authorization"] = fig[f"remote_{hi}"]["signed_with_authorization"]
    if args.old:
        fig["vsicache_rss_ratio"] = fig[f"vsicache_{hi}"]["peak_rss_mb"] / fig[f"vsicache_{lo}"]["peak_rss_mb"]
    if fig["link"] is not None:
        bw = (args.total_mbps or args.conn_mbps or float("inf")) * 1e6
        for k in counts:
            r = fig[f"remote_{k}"]
            r["limit_s"] = max(r["body_bytes"] / bw, fig[f"decode_{k}"]["time_s"])
            r["over_limit"] = r["time_s"] / r["limit_s"]
    if f"naive_{lo}" in fig:
        fig["naive_over_remote_time"] = fig[f"naive_{lo}"]["time_s"] / fig[f"remote_{lo}"]["time_s"]
    return fig


def print_figures(fig: dict[str, Any], args: argparse.Namespace) -> None:
    lo, hi = min(fig["counts"]), max(fig["counts"])
    print(f"\n  RSS {hi} / {lo} scenes through the emulator  {fig['rss_ratio']:.2f}  [<= 1.2]  "
          f"({fig[f'remote_{hi}']['peak_rss_mb']:.0f} / {fig[f'remote_{lo}']['peak_rss_mb']:.0f} MB)")
    if args.old:
        print(f"  same with VSI_CACHE=TRUE (before)          {fig['vsicache_rss_ratio']:.2f}  "
              f"({fig[f'vsicache_{hi}']['peak_rss_mb']:.0f} / {fig[f'vsicache_{lo}']['peak_rss_mb']:.0f} MB)")
    print(f"  remote / local time at {hi} scenes           {fig['remote_over_local_time']:.2f}")
    for k in fig["counts"]:
        r = fig[f"remote_{k}"]
        if "over_limit" in r:
            print(f"  {k:>3} scenes: {r['body_bytes'] / 1e6:.0f} MB in {r['requests']} requests, "
                  f"{r['time_s']:.1f} s = {r['over_limit']:.2f} x the limit {r['limit_s']:.1f} s  [<= 1.3]  "
                  f"(decode {fig[f'decode_{k}']['time_s']:.1f} s)")
    if "naive_over_remote_time" in fig:
        print(f"  naive stackstac / ours over the link at {lo} scenes  {fig['naive_over_remote_time']:.2f}  [>= 3]")
    print(f"  signed-host requests with Authorization     {fig['signed_with_authorization']}")


if __name__ == "__main__":
    main()
