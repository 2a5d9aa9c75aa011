"""Try earthaccess's Earthdata session against the loopback emulator (the measurement behind README
"Why not earthaccess"). earthaccess is not a dependency: give a Python that has it.

    python -m venv /tmp/ea && /tmp/ea/bin/pip install earthaccess==0.17.0    # newest for Python 3.11
    .venv/bin/python scripts/earthaccess_check.py --python /tmp/ea/bin/python --world out/demo/world

Prints what earthaccess's token session got for the protected URL and for the pre-signed URL it was
redirected to, what its user/password login did, and how many signed-host requests carried Authorization.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CLIENT = r"""
import json, os, sys
from earthaccess.auth import Auth
from earthaccess.system import System
url, login_host = sys.argv[1], sys.argv[2]
os.environ["EARTHDATA_TOKEN"] = "tok-EA"
a = Auth(); a.login(strategy="environment")
s = a.get_session()
r = s.get(url, headers={"Range": "bytes=0-99"})
out = {"token_protected_url": r.status_code, "redirects": [h.status_code for h in r.history]}
out["token_signed_url_again"] = s.get(r.url, headers={"Range": "bytes=100-199"}).status_code
del os.environ["EARTHDATA_TOKEN"]
b = Auth()
b._set_earthdata_system(System("x", "x", "x", login_host))
try:
    b._get_credentials("user", "pw-EA", None)
    out["password_login"] = "ok"
except Exception as e:
    out["password_login"] = type(e).__name__
print(json.dumps(out))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python", required=True, help="a Python with earthaccess installed")
    ap.add_argument("--world", required=True, help="a sample world (its first GEDI granule is read)")
    args = ap.parse_args()
    from sampleworld.emulator import EarthdataEmulator

    granule = Path(json.loads((Path(args.world) / "world.json").read_text())["gedi"]["granules"][0])
    with EarthdataEmulator({"gedi": granule.parent}, tokens=["tok-EA"], users={"user": "pw-EA"},
                           mode="process") as emu:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",) and not k.startswith("EARTHDATA_")}
        p = subprocess.run([args.python, "-c", CLIENT, emu.data_url("gedi", granule.name), emu.hosts[0]],
                           capture_output=True, text=True, env=env, timeout=120)
        emu.wait_idle()
        signed = emu.stats()["hosts"]["signed"]
    print(p.stdout.strip() or p.stderr[-2000:])
    print(json.dumps({"signed_statuses": signed["statuses"], "signed_with_authorization": signed["with_authorization"]}))


if __name__ == "__main__":
    main()
