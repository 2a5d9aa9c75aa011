"""Serve a sample world the way NASA serves the real data: STAC items whose asset hrefs are protected
Earthdata URLs, behind the loopback Earthdata emulator (login host, protected data host, pre-signed URLs).

    with serve_world("out/world") as served, patched_env(served.env):
        ...  # search served.stac_url; every COG and granule is read through Earthdata Login

``serve_world(..., earthdata=False)`` serves the items with local-path hrefs instead (tests that need it).
Paths on the data host follow the DAACs' layouts: ``/lp-prod-protected/HLSL30.020/<id>/<id>.B04.tif`` and
``/protected/gedi/GEDI_L4A_AGB_Density_V2_1/data/<granule>.h5``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from core.procs import on_death
from sampleworld.stac_server import serve_stac, world_stac_files

HLS_PREFIX = "lp-prod-protected/HLSL30.020"
GEDI_PREFIX = "protected/gedi/GEDI_L4A_AGB_Density_V2_1/data"
DEMO_TOKEN = "sampleworld-demo-token"  # noqa: S105 (the emulator's demo token, not a real credential)
"""The bearer token the demo and the sample-world pipeline use with the emulator (no real credential)."""
CREDENTIAL_VARS = ("EARTHDATA_TOKEN", "EARTHDATA_USERNAME", "EARTHDATA_PASSWORD", "EARTHDATA_HOSTS", "NETRC")


@dataclass(frozen=True)
class ServedWorld:
    """A served world. ``stac_url``: the loopback STAC API; ``env``: the variables a run needs to read
    through the emulator (``EARTHDATA_HOSTS`` naming its login and data hosts, the demo token; the user's
    own credential variables unset), empty for local-path serving; ``emulator``: the running emulator
    (None for local paths)."""

    stac_url: str
    env: Mapping[str, str | None] = field(default_factory=dict)
    emulator: Any = None

    def summary(self) -> str:
        """One line: requests per emulated host, which auth schemes they carried, statuses (no secrets)."""
        if self.emulator is None:
            return "sample world served with local-path hrefs (no Earthdata emulator)"
        self.emulator.wait_idle()
        hosts = self.emulator.stats()["hosts"]
        parts = [f"{k} host {h['requests']} requests (auth {h['auth_schemes'] or 'none'}, statuses "
                 f"{h['statuses']})" for k, h in hosts.items()]
        return ("Earthdata emulator: " + "; ".join(parts)
                + f"; signed-host requests carrying Authorization: {hosts['signed']['with_authorization']}")

    def data_url(self, path: str | os.PathLike[str], world_dir: str | os.PathLike[str]) -> str:
        """The protected URL of a world file (``hls/...`` or ``gedi/...``)."""
        return _protected_url(self.emulator, Path(world_dir).resolve(), Path(path).resolve()) or str(path)


def _protected_url(emu: Any, world: Path, path: Path) -> str | None:
    for folder, prefix in (("hls", HLS_PREFIX), ("gedi", GEDI_PREFIX)):
        root = world / folder
        if root in path.parents:
            return emu.data_url(prefix, path.relative_to(root).as_posix())
    return None


def rewrite_hrefs(doc: Any, emu: Any, world: Path) -> Any:
    """``doc`` (STAC JSON) with every asset href under the world's hls/ or gedi/ folder made a protected
    URL of ``emu``; other hrefs are left alone."""
    if isinstance(doc, dict):
        out = {k: rewrite_hrefs(v, emu, world) for k, v in doc.items()}
        href = doc.get("href")
        if isinstance(href, str) and href.startswith("/"):
            out["href"] = _protected_url(emu, world, Path(href).resolve()) or href
        return out
    if isinstance(doc, list):
        return [rewrite_hrefs(v, emu, world) for v in doc]
    return doc


@contextmanager
def serve_world(world_dir: str | os.PathLike[str], *, earthdata: bool = True,
                tokens: Sequence[str] = (DEMO_TOKEN,), users: Mapping[str, str] | None = None,
                mode: Literal["thread", "process"] = "process", **emulator_options: Any) -> Iterator[ServedWorld]:
    """Serve ``world_dir``'s STAC API; with ``earthdata`` its hls/ and gedi/ folders are protected prefixes
    of an Earthdata emulator (``tokens``, ``users``; other keywords go to ``EarthdataEmulator``) and the
    items' asset hrefs are the emulator's data URLs. The emulator runs in its own process by default."""
    if not earthdata:
        with serve_stac(world_dir) as url:
            yield ServedWorld(stac_url=url)
        return
    from sampleworld.emulator import EarthdataEmulator

    world = Path(world_dir).resolve()
    files = world_stac_files(world)
    roots = {HLS_PREFIX: world / "hls", GEDI_PREFIX: world / "gedi"}
    with EarthdataEmulator(roots, tokens=tokens, users=users, mode=mode, **emulator_options) as emu, \
            tempfile.TemporaryDirectory(prefix="sampleworld-protected-") as tmp:
        on_death(remove=tmp)
        (Path(tmp) / "stac").mkdir()
        for f in files:
            doc = rewrite_hrefs(json.loads(f.read_text()), emu, world)
            (Path(tmp) / "stac" / f.name).write_text(json.dumps(doc))
        env: dict[str, str | None] = {k: None for k in CREDENTIAL_VARS}
        env.update(EARTHDATA_HOSTS=",".join(emu.hosts), EARTHDATA_TOKEN=tokens[0] if tokens else None)
        with serve_stac(tmp) as url:
            yield ServedWorld(stac_url=url, env=env, emulator=emu)


@contextmanager
def patched_env(values: Mapping[str, str | None]) -> Iterator[None]:
    """Set (str) or unset (None) environment variables for the block, then restore them."""
    old = {k: os.environ.get(k) for k in values}
    try:
        for k, v in values.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
