"""Shared helpers of the benchmarks that read through the Earthdata emulator over a shaped link.

``add_link_args`` adds ``--latency-ms`` / ``--conn-mbps`` / ``--total-mbps``; ``link_shape`` turns them into
the emulator's :class:`sampleworld.emulator.config.LinkShape` (MB = 1e6 bytes); ``traffic`` sums the
emulator's counters since its last reset.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_link_args(ap: argparse.ArgumentParser, *, latency_ms: float = 0.0, conn_mbps: float | None = None,
                  total_mbps: float | None = None) -> None:
    """The link options (defaults: unshaped loopback unless given)."""
    ap.add_argument("--latency-ms", type=float, default=latency_ms, help="added before each response (ms)")
    ap.add_argument("--conn-mbps", type=float, default=conn_mbps, help="bandwidth cap per connection (MB/s)")
    ap.add_argument("--total-mbps", type=float, default=total_mbps, help="bandwidth cap of each host (MB/s)")


def link_shape(args: argparse.Namespace) -> Any:
    """The emulator's link shape from the options (None: unshaped loopback)."""
    from sampleworld.emulator.config import LinkShape

    if not (args.latency_ms or args.conn_mbps or args.total_mbps):
        return None
    return LinkShape(latency_s=args.latency_ms / 1000.0,
                     conn_bytes_per_s=args.conn_mbps * 1e6 if args.conn_mbps else None,
                     total_bytes_per_s=args.total_mbps * 1e6 if args.total_mbps else None)


def traffic(emu: Any) -> dict[str, int]:
    """Requests and response body bytes the emulator served since its last reset (all hosts)."""
    emu.wait_idle()
    hosts = emu.stats()["hosts"]
    return {"requests": sum(h["requests"] for h in hosts.values()),
            "body_bytes": sum(h["body_bytes"] for h in hosts.values()),
            "signed_with_authorization": hosts["signed"]["with_authorization"]}
