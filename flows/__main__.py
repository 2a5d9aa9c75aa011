"""Command line: ``python -m flows list`` | ``run <flow> --params FILE.json [-p key=value ...]`` | ``demo`` |
``check-earthdata [--url NAME=URL ...] [--sample-world DIR]``.

``run`` executes the flow locally (a Prefect local run) and prints its JSON result as the LAST line of
stdout; on failure it prints one paragraph to stderr (the input, what is wrong, what to do, the log file with
the traceback) and exits 1 (2 for bad parameters, 143 when stopped by SIGTERM); ``--debug`` shows tracebacks.
``run <flow> --help`` lists the flow's parameters with their defaults and descriptions.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
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


def _load_params(name: str, params_file: str | None, pairs: list[str]) -> tuple[Any, Any, Any] | int:
    """(flow, model, validated params), or the exit status after printing why not."""
    from pydantic import ValidationError

    from flows.cli_help import explain_validation
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
            print(f"error: cannot read parameters {path}: {exc}; give a JSON object of parameters, e.g. "
                  f'{{"output_dir": "out/run1"}} (see python -m flows run {name} --help)', file=sys.stderr)
            return 2
    raw = _merge(raw, _parse_kv(pairs))
    fl, model = registry[name]
    try:
        return fl, model, build_params(model, raw)
    except ValidationError as exc:
        print(explain_validation(name, model, exc), file=sys.stderr)
    except ValueError as exc:
        print(f"error: invalid parameters for {name}: {exc} (see python -m flows run {name} --help)",
              file=sys.stderr)
    return 2


def cmd_run(name: str, params_file: str | None, pairs: list[str], *, debug: bool = False) -> int:
    from flows.cli_errors import RunLog, explain, preflight
    from flows.cli_signals import STOPPED_EXIT, RunStopped, StopOnSigterm, remove_own_temp_files

    loaded = _load_params(name, params_file, pairs)
    if isinstance(loaded, int):
        return loaded
    fl, _, params = loaded
    problems = preflight(params)
    if problems:
        print(f"error: invalid parameters for {name}:\n" + "\n".join(f"  {p}" for p in problems), file=sys.stderr)
        return 2
    out_dir = getattr(params, "output_dir", None)
    with StopOnSigterm(out_dir) as stop, RunLog(name, out_dir, debug=debug) as log:
        try:
            result = fl(params)
        except (Exception, RunStopped) as exc:  # noqa: BLE001 (reported as one paragraph, traceback in the log)
            path = log.keep(exc)
            if stop.stopped or isinstance(exc, RunStopped):
                remove_own_temp_files(out_dir)
                print(f"stopped: flow {name} was stopped by SIGTERM before it finished; its temp files were "
                      f"removed and finished outputs kept; run it again to resume. Log: {path}", file=sys.stderr)
                return STOPPED_EXIT
            if debug:
                traceback.print_exception(exc, file=sys.stderr)
            print(explain(name, exc, path), file=sys.stderr)
            return 1
        log.discard()
    sys.stdout.flush()
    print(json.dumps(result.to_dict() if hasattr(result, "to_dict") else result, default=str))
    return 0


def _run_help(run: argparse.ArgumentParser, name: str | None, *, ok: bool) -> int:
    from flows.cli_help import flow_help
    from flows.registry import flows

    registry = flows()
    if name is None or name not in registry:
        run.print_help(sys.stdout if ok else sys.stderr)
        print(f"\nflows: {', '.join(registry)}", file=sys.stdout if ok else sys.stderr)
        if name is not None:
            print(f"error: unknown flow {name!r}", file=sys.stderr)
            return 2
        return 0 if ok else 2
    fl, model = registry[name]
    print(flow_help(name, fl, model))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m flows", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="list the flows")
    run = sub.add_parser("run", help="run a flow locally and print its JSON result last", add_help=False)
    run.add_argument("flow", nargs="?")
    run.add_argument("-h", "--help", action="store_true", help="list the flow's parameters and exit")
    run.add_argument("--debug", action="store_true", help="show tracebacks on the console")
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
        if args.help or not args.flow:
            return _run_help(run, args.flow, ok=bool(args.help))
        return cmd_run(args.flow, args.params, args.p, debug=args.debug)
    if args.cmd == "check-earthdata":
        from flows.earthdata_check import parse_urls, run_check

        return run_check(parse_urls(args.url), args.sample_world)
    from flows.demo import run_demo

    return run_demo(args.output_dir, args.size)


if __name__ == "__main__":
    sys.exit(main())
