"""An Earthdata emulator on loopback: Earthdata Login (login host), TEA (protected data host) and S3
(signed host) as three servers on 127.0.0.1 / 127.0.0.2 / 127.0.0.3, with seeded fault knobs, link
shaping, a request log without credentials, and a STAC fault proxy. See docs/emulator.md.

    from sampleworld.emulator import EarthdataEmulator, Faults, LinkShape
    with EarthdataEmulator({"lp-prod-protected": hls_dir}, tokens=["tok"]) as emu:
        url = emu.data_url("lp-prod-protected", "HLSL30.020/<id>/<id>.B04.tif")
"""

from sampleworld.emulator.config import EmulatorConfig, Faults, LinkShape
from sampleworld.emulator.emulator import EarthdataEmulator, EmulatorError
from sampleworld.emulator.stac_proxy import FaultProxy

__all__ = ["EarthdataEmulator", "EmulatorConfig", "EmulatorError", "Faults", "FaultProxy", "LinkShape"]
