"""The sample world: a deterministic generator of NASA-format HLS L30 / GEDI L4A data + a loopback STAC API.

Entry points: :func:`generate_world` (writes a world, returns its manifest) and
:func:`sampleworld.stac_server.serve_stac` (serves a world's STAC JSON through rustac on 127.0.0.1).
"""

from sampleworld.spec import GediSpec, SceneSpec, WorldSpec, preset
from sampleworld.world import generate_world

__all__ = ["generate_world", "preset", "WorldSpec", "SceneSpec", "GediSpec"]
