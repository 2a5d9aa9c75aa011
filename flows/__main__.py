"""Command line: ``python -m flows list`` | ``run <flow> --params FILE.json [-p key=value ...]`` | ``demo`` |
``check-earthdata [--url NAME=URL ...] [--sample-world DIR]``.

``run`` executes the flow locally (a Prefect local run) and prints its JSON result as the LAST line of
stdout; on failure it prints a clear message to stderr and exits 1 (2 for bad parameters).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from flows import _env  # noqa: F401


def _parse_kv(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise SystemExit(f"-p expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        try:
            parsed: Any = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        node = out
        *parents, leaf = key.split(".")
        for part in parents:  # dotted keys set nested options: -p training.epochs=3
            node = node.setdefault(part, {})
        node[leaf] = parsed
    return out


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    for k, v in extra.items():
        base[k] = _merge(dict(base.get(k) or {}), v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return base


def cmd_list() -> int:
    from flows.registry import flows

    for name, (fl, _) in flows().items():
        doc = (fl.fn.__doc__ or "").strip().splitlines()[0] if fl.fn.__doc__ else ""
        print(f"{name:18s} {doc}")
    return 0


def cmd_run(name: str, params_file: str | None, pairs: list[str]) -> int:
    from pydantic import ValidationError

    from flows.registry import build_params, flows

    registry = flows()
    if name not in registry:
        print(f"error: unknown flow {name!r}; known: {', '.join(registry)}", file=sys.stderr)
        return 2
    raw: dict[str, Any] = {}
    if params_file:
        path = Path(params_file)
        try:
            raw = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            print(f"error: cannot read parameters {path}: {exc}", file=sys.stderr)
            return 2
    raw = _merge(raw, _parse_kv(pairs))
    fl, model = registry[name]
    try:
        params = build_params(model, raw)
    except (ValidationError, ValueError) as exc:
        print(f"error: invalid parameters for {name}:\n{exc}", file=sys.stderr)
        return 2
    try:
        result = fl(params)
    except Exception as exc:  # report clearly, non-zero exit; the traceback is in Prefect's log above
        print(f"error: flow {name} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    sys.stdout.flush()
    print(json.dumps(result.to_dict() if hasattr(result, "to_dict") else result, default=str))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m flows", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="list the flows")
    run = sub.add_parser("run", help="run a flow locally and print its JSON result last")
    run.add_argument("flow")
    run.add_argument("--params", help="JSON file of parameters")
    run.add_argument("-p", action="append", default=[], metavar="KEY=VALUE",
                     help="parameter (JSON value or string; dotted keys for nested options)")
    demo = sub.add_parser("demo", help="run biomass-pipeline on the embedded sample world")
    demo.add_argument("--output-dir", default="out/demo")
    demo.add_argument("--size", default="demo", choices=["small", "demo", "benchmark"])
    chk = sub.add_parser("check-earthdata", help="say which Earthdata credentials are found (never shown) and "
                         "try one authenticated HEAD per data endpoint; exit 0 when all answer")
    chk.add_argument("--url", action="append", default=[], metavar="NAME=URL",
                     help="protected file to HEAD (default: one HLS COG and one GEDI granule at NASA)")
    chk.add_argument("--sample-world", metavar="DIR", help="check a sample world through the loopback emulator")
    args = ap.parse_args(argv)
    if args.cmd == "list":
        return cmd_list()
    if args.cmd == "run":
        return cmd_run(args.flow, args.params, args.p)
    if args.cmd == "check-earthdata":
        from flows.earthdata_check import parse_urls, run_check

        return run_check(parse_urls(args.url), args.sample_world)
    from flows.demo import run_demo

    return run_demo(args.output_dir, args.size)


if __name__ == "__main__":
    sys.exit(main())
