"""Write the STAC extension JSON schemas the run catalog uses into ``core/stac_schemas/`` (offline validation).

pystac ships the STAC 1.1 core schemas but fetches extension schemas over the network when it validates;
the catalog validator (:mod:`core.stac_validate`) reads these vendored copies instead and never goes online.

Sources, per schema, in this order (``--source auto``):

1. ``web``: the schema's canonical URL (a machine with internet);
2. ``pypi``: the schema as recorded, byte for byte, in the VCR cassettes (``tests/cassettes/**.yaml``) of the
   pystac extension packages' source distributions on PyPI (``pip download --no-binary :all:``); the cassette
   records the GET of exactly that URL (a redirect is followed to its recorded target).

Every file is checked to be JSON whose ``$id`` (when present) is its URL, and listed with its SHA-256 and source
in ``core/stac_schemas/SOURCES.json``. ``--check`` only verifies the vendored files against that list.

    python scripts/vendor_stac_schemas.py [--source auto|web|pypi] [--check]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import yaml

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "core" / "stac_schemas"
# url -> the PyPI source distribution whose test cassettes recorded it
SCHEMAS = {
    "https://stac-extensions.github.io/projection/v2.0.0/schema.json": "pystac-ext-projection==2.0.1",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json": "pystac-ext-raster==1.1.1",
    "https://stac-extensions.github.io/file/v2.1.0/schema.json": "pystac-ext-file==2.1.1",
    "https://stac-extensions.github.io/processing/v1.0.0/schema.json": "pystac-ext-raster==1.1.1",
    "https://proj.org/schemas/v0.7/projjson.schema.json": "pystac-ext-projection==2.0.1",
}


def local_path(url: str) -> Path:
    u = urlparse(url)
    return OUT / u.netloc / u.path.lstrip("/")


def from_web(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as resp:  # noqa: S310 - fixed https URLs above
        return resp.read()


def _cassette_bodies(folder: Path) -> dict[str, tuple[int, str, str | None, str]]:
    """uri -> (status, body, redirect location, cassette file) of every recorded GET in ``folder``."""
    out: dict[str, tuple[int, str, str | None, str]] = {}
    for f in sorted(folder.rglob("cassettes/**/*.yaml")):
        doc = yaml.safe_load(f.read_text())
        for it in doc.get("interactions", []):
            req, resp = it["request"], it["response"]
            headers = {k.lower(): v for k, v in (resp.get("headers") or {}).items()}
            loc = headers.get("location")
            loc = loc[0] if isinstance(loc, list) else loc
            body = resp.get("body", {}).get("string") or ""
            out.setdefault(req["uri"], (int(resp["status"]["code"]), body, loc, str(f.relative_to(folder))))
    return out


def from_pypi(url: str, sdist: str, cache: dict[str, Path]) -> tuple[bytes, str]:
    if sdist not in cache:
        tmp = Path(tempfile.mkdtemp(prefix="stac-schemas-"))
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps", "-q", "-d",
                        str(tmp), sdist], check=True)
        archive = next(tmp.glob("*.tar.gz"))
        subprocess.run(["tar", "xzf", str(archive), "-C", str(tmp)], check=True)
        cache[sdist] = tmp
    bodies = _cassette_bodies(cache[sdist])
    uri, hops = url, 0
    while uri in bodies and bodies[uri][0] in (301, 302, 307, 308) and hops < 5:
        uri, hops = bodies[uri][2] or "", hops + 1
    if uri not in bodies or bodies[uri][0] != 200:
        raise SystemExit(f"{sdist}: no recorded 200 response for {url} in its cassettes")
    return bodies[uri][1].encode(), f"pypi:{sdist}:{bodies[uri][3]}"


def _check_json(url: str, data: bytes) -> None:
    doc = json.loads(data)
    sid = str(doc.get("$id", url)).rstrip("#")
    if urlparse(url).netloc == "stac-extensions.github.io" and sid != url:
        raise SystemExit(f"{url}: the schema's $id is {sid}")


def vendor(source: str) -> dict[str, dict[str, str]]:
    listing: dict[str, dict[str, str]] = {}
    cache: dict[str, Path] = {}
    try:
        _vendor_all(source, listing, cache)
    finally:
        for tmp in cache.values():
            shutil.rmtree(tmp, ignore_errors=True)
    (OUT / "SOURCES.json").write_text(json.dumps(listing, indent=2) + "\n")
    return listing


def _vendor_all(source: str, listing: dict[str, dict[str, str]], cache: dict[str, Path]) -> None:
    for url, sdist in SCHEMAS.items():
        data, origin = None, ""
        if source in ("auto", "web"):
            try:
                data, origin = from_web(url), "web"
            except OSError as exc:
                if source == "web":
                    raise SystemExit(f"{url}: {exc}") from exc
        if data is None:
            data, origin = from_pypi(url, sdist, cache)
        _check_json(url, data)
        path = local_path(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        listing[url] = {"file": str(path.relative_to(OUT)), "sha256": hashlib.sha256(data).hexdigest(),
                        "source": origin}
        print(f"{url} <- {origin}")


def check() -> int:
    listing = json.loads((OUT / "SOURCES.json").read_text())
    bad = [u for u, e in listing.items()
           if hashlib.sha256((OUT / e["file"]).read_bytes()).hexdigest() != e["sha256"]]
    missing = sorted(set(SCHEMAS) - set(listing))
    for u in bad + missing:
        print(f"stale or missing: {u}", file=sys.stderr)
    return 1 if bad or missing else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", choices=["auto", "web", "pypi"], default="auto")
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    if args.check:
        return check()
    vendor(args.source)
    return 0


if __name__ == "__main__":
    sys.exit(main())
