"""Command line: ``python -m sampleworld generate OUT [--size demo] [--seed 0]`` and
``python -m sampleworld serve WORLD_DIR [--port N]`` (serves until Ctrl-C / SIGTERM)."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time

from sampleworld.spec import SIZES


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sampleworld", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate", help="write a sample world; prints its manifest as JSON")
    g.add_argument("output_dir")
    g.add_argument("--size", choices=SIZES, default="small")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--cloud", default=None, help="scene target cloud fractions (0-1): one value for every "
                   "scene or a comma list cycling over the scenes, e.g. 0.97,0.9,0.3,0.95,0.15 (a cloudy season)")
    s = sub.add_parser("serve", help="serve a world's STAC API on 127.0.0.1 (prints the URL)")
    s.add_argument("world_dir")
    s.add_argument("--port", type=int, default=None)
    args = ap.parse_args(argv)
    if args.cmd == "generate":
        from sampleworld.world import generate_world

        t0 = time.perf_counter()
        overrides = {}
        if args.cloud is not None:
            from sampleworld.spec import cloudy_scenes, preset

            overrides["scenes"] = cloudy_scenes(preset(args.size), [float(c) for c in args.cloud.split(",")])
        manifest = generate_world(args.output_dir, size=args.size, seed=args.seed, **overrides)
        print(f"generated {args.size} world in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        print(json.dumps({k: v for k, v in manifest.items() if k != "spec"}))
        return 0
    from sampleworld.stac_server import serve_stac

    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        with serve_stac(args.world_dir, port=args.port) as url:  # stops rustac however the block ends
            print(url, flush=True)
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        pass
    return 0


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


if __name__ == "__main__":
    sys.exit(main())
