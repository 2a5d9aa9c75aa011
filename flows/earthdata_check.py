"""``python -m flows check-earthdata``: which Earthdata credentials this process finds (never shown) and
one authenticated HEAD per data endpoint, with a verdict. Exit 0 when every endpoint answered, else 1.

    python -m flows check-earthdata                         # NASA: one HLS COG (LP DAAC), one GEDI granule (ORNL)
    python -m flows check-earthdata --url hls=https://...   # any protected file(s)
    python -m flows check-earthdata --sample-world out/world   # the sample world through the loopback emulator
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from core.earthdata_http import EarthdataCheck, check_earthdata


def print_check(res: EarthdataCheck) -> None:
    """The check as people read it (no secret is ever in ``res``)."""
    print(f"credentials      {res.credentials}")
    if res.hosts:
        print(f"EARTHDATA_HOSTS  {', '.join(res.hosts)}")
    for e in res.endpoints:
        mark = "OK  " if e.ok else "FAIL"
        print(f"{mark} {e.name}: {e.verdict}")
        print(f"     {e.url}")
        if e.hops:
            print(f"     answers: {' -> '.join(e.hops)}")
    verdict = ("Earthdata access works for every endpoint" if res.ok else
               "no credentials: nothing was tried" if not res.endpoints else
               "Earthdata access FAILED for at least one endpoint (see above)")
    print(f"verdict          {verdict}")


@contextmanager
def sample_world_endpoints(world_dir: str) -> Iterator[dict[str, str]]:
    """The sample world served through the Earthdata emulator: one HLS COG and one GEDI granule URL, with
    the emulator's hosts and demo token set for the block."""
    from sampleworld.serve import patched_env, serve_world

    world = Path(world_dir).resolve()
    manifest = json.loads((world / "world.json").read_text())
    items = json.loads(Path(manifest["hls"]["items_json"]).read_text())["features"]
    with serve_world(world, mode="thread") as served, patched_env(served.env):
        yield {"sample-world HLS COG": served.data_url(items[0]["assets"]["Fmask"]["href"], world),
               "sample-world GEDI granule": served.data_url(manifest["gedi"]["granules"][0], world)}


def run_check(urls: Mapping[str, str] | None, sample_world: str | None) -> int:
    """The CLI command: print the check, return the exit status."""
    from core.constants import EARTHDATA_CHECK_URLS

    if sample_world:
        with sample_world_endpoints(sample_world) as endpoints:
            res = check_earthdata(endpoints)
    else:
        res = check_earthdata(dict(urls) if urls else EARTHDATA_CHECK_URLS)
    print_check(res)
    return 0 if res.ok else 1


def parse_urls(pairs: list[str]) -> dict[str, str]:
    """``NAME=URL`` (or a bare URL) pairs -> {name: url}."""
    out: dict[str, str] = {}
    for i, pair in enumerate(pairs):
        name, sep, url = pair.partition("=")
        if not sep or "://" in name:
            name, url = f"endpoint {i + 1}", pair
        out[name] = url
    return out
