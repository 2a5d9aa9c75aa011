"""A real STAC API on loopback: ``rustac serve`` over a sample world's collections and items.

``serve_stac(world_dir)`` starts ``rustac serve`` (in-memory backend) on 127.0.0.1 at a free port, waits
until the landing page answers, yields ``http://127.0.0.1:<port>`` and stops the server on exit.
rustac answers POST /search (pystac-client's default) with paging; GET /search with ``bbox`` answers 500
and ``query``/``filter``/``sortby`` are not supported (../shared/STACK.md): filter cloud cover client-side.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from core.procs import on_death

STAC_FILES = ("hls_collection.json", "gedi_collection.json", "hls_items.json", "gedi_items.json")


class StacServerError(RuntimeError):
    """The loopback STAC server could not be started or did not answer."""


def rustac_executable() -> str:
    """The ``rustac`` command: next to this Python (the venv), else on PATH."""
    cand = Path(sys.executable).parent / "rustac"
    if cand.exists():
        return str(cand)
    found = shutil.which("rustac")
    if not found:
        raise StacServerError("the 'rustac' command was not found (pip install rustac)")
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def world_stac_files(world_dir: str | os.PathLike[str]) -> list[Path]:
    """The STAC JSON files of a world (collections first), checked to exist."""
    stac = Path(world_dir) / "stac"
    files = [stac / n for n in STAC_FILES]
    missing = [str(p) for p in files if not p.exists()]
    if missing:
        raise StacServerError(f"{world_dir}: not a sample world, missing {missing}")
    return files


def _servable(files: list[Path]) -> list[str]:
    """rustac rejects an empty item collection: leave such files out (the collection is still served)."""
    out = []
    for p in files:
        doc = json.loads(p.read_text())
        if doc.get("type") == "FeatureCollection" and not doc.get("features"):
            continue
        out.append(str(p))
    return out


@contextmanager
def serve_stac(world_dir: str | os.PathLike[str], *, port: int | None = None,
               startup_timeout_s: float = 30.0) -> Iterator[str]:
    """Serve ``world_dir``'s STAC collections and items; yields the root URL ``http://127.0.0.1:<port>``."""
    files = world_stac_files(world_dir)
    exe = rustac_executable()
    with tempfile.TemporaryDirectory(prefix="sampleworld-stac-") as tmp:
        on_death(remove=tmp)
        hrefs = _servable(files)
        for attempt in range(3):
            p = port or free_port()
            url = f"http://127.0.0.1:{p}"
            log = open(Path(tmp) / f"rustac-{attempt}.log", "w+b")  # noqa: SIM115 (closed below)
            proc = subprocess.Popen([exe, "serve", *hrefs, "--addr", f"127.0.0.1:{p}"], stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            on_death(kill=proc.pid, marker="rustac")  # stopped with this process even on kill -9
            try:
                if _wait_ready(url, proc, startup_timeout_s):
                    yield url
                    return
            finally:
                _stop(proc)
                log.seek(0)
                text = log.read().decode(errors="replace")[-2000:]
                log.close()
            if port is not None:
                break
        raise StacServerError(f"rustac serve did not start on 127.0.0.1 for {world_dir}: {text}")


def _wait_ready(url: str, proc: subprocess.Popen, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url + "/", timeout=2) as r:
                if r.status == 200:
                    return True
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.05)
    return False


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
