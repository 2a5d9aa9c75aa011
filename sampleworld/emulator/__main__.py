"""``python -m sampleworld.emulator serve --config cfg.json [--stats-file F] [--parent-pid PID]``

Starts the three hosts and a control endpoint (``GET /stats``, ``GET /records``, ``POST /reset``,
``POST /expire`` on 127.0.0.1), prints ONE JSON line ``{"login_url", "data_base_url", "signed_base_url", "hosts", "stats_url",
"pid"}`` once every socket is listening, and serves until SIGTERM/SIGINT or until ``--parent-pid`` is no
longer its parent. On the way out it writes the final counters to ``--stats-file`` (JSON, atomically).
``cfg.json`` is ``EmulatorConfig.to_dict()``: at least ``{"roots": {"lp-prod-protected": "/path"}}``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path

from sampleworld.emulator.config import EmulatorConfig
from sampleworld.emulator.servers import RunningHosts, start_control


def _write_atomic(path: Path, doc: object) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, path)


def serve(config_path: Path, stats_file: Path | None, parent_pid: int | None) -> int:
    """Run the emulator until told to stop; returns the exit status."""
    try:
        cfg = EmulatorConfig.from_dict(json.loads(config_path.read_text()))
    except (OSError, ValueError, TypeError) as exc:
        print(f"emulator: bad config {config_path}: {exc}", file=sys.stderr)
        return 2
    hosts = RunningHosts(cfg)
    control, stats_url = start_control(hosts)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(json.dumps({**hosts.urls(), "stats_url": stats_url, "pid": os.getpid()}), flush=True)
    devnull = os.open(os.devnull, os.O_WRONLY)  # nothing more goes to the parent's pipe
    os.dup2(devnull, 1)
    while not stop.wait(0.25):
        if parent_pid is not None and os.getppid() != parent_pid:
            break  # the parent died: do not outlive it
    hosts.close()
    control.shutdown()
    control.server_close()
    if stats_file is not None:
        _write_atomic(stats_file, hosts.stats.snapshot())
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sampleworld.emulator",
                                 description="Earthdata Login / TEA / S3 emulator on loopback")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="serve until SIGTERM; prints one JSON line with the URLs")
    s.add_argument("--config", required=True, type=Path, help="EmulatorConfig JSON")
    s.add_argument("--stats-file", type=Path, default=None, help="write final counters here on exit")
    s.add_argument("--parent-pid", type=int, default=None, help="exit when this process is gone")
    args = ap.parse_args(argv)
    return serve(args.config, args.stats_file, args.parent_pid)


if __name__ == "__main__":
    sys.exit(main())
