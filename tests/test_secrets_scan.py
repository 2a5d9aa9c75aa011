"""No secret anywhere after CLI runs (issue 13 point 8): with a token, a user name/password and a netrc file
all set to known strings, a succeeding and a failing ``python -m flows run gedi-labels`` through the Earthdata
emulator; every console line, output file (the failure's log file included) and every file of the runs'
PREFECT_HOME (the Prefect SQLite database with its flow-run parameters, states, logs and artifacts) is
scanned for each secret, as bytes and as the forms a log could carry them in (Base64 of ``user:password``)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sampleworld.serve import serve_world

pytestmark = pytest.mark.allow_hosts(["127.0.0.1", "127.0.0.2", "127.0.0.3"])
REPO = Path(__file__).resolve().parents[1]
USER = "earth-user-7"
PASSWORD = "pw-Kd4SECRETpass-58"
NETRC_PASSWORD = "pw-Nn2SECRETnetrc-17"
TOKEN = "tok-Wv6SECRETtoken-40"
BAD_TOKEN = "tok-Bb9SECRETrefused-22"
SECRETS = (PASSWORD, NETRC_PASSWORD, TOKEN, BAD_TOKEN, base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode())


def _scan(root: Path) -> list[str]:
    found = []
    for p in root.rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            found += [f"{p}: {s[:6]}..." for s in SECRETS if s.encode() in data]
    return found


def test_cli_runs_leave_no_secret_in_console_files_or_the_prefect_database(world_dir, small_world, tmp_path) -> None:
    home = tmp_path / "prefect_home"
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine 127.0.0.1 login {USER} password {NETRC_PASSWORD}\n")
    netrc.chmod(0o600)
    consoles, outs = [], []
    with serve_world(world_dir, tokens=[TOKEN], users={USER: PASSWORD}, mode="thread") as s:
        granule = s.data_url(small_world["gedi"]["granules"][0], world_dir)
        base = {k: v for k, v in os.environ.items() if not k.startswith(("EARTHDATA_", "PREFECT_API"))}
        base.update({k: v for k, v in s.env.items() if v is not None and k != "EARTHDATA_TOKEN"},
                    PYTHONPATH=str(REPO), PREFECT_HOME=str(home), NETRC=str(netrc),
                    EARTHDATA_USERNAME=USER, EARTHDATA_PASSWORD=PASSWORD)
        for name, token in (("ok", TOKEN), ("refused", BAD_TOKEN)):
            out = tmp_path / name
            params = {"aoi": small_world["aoi"], "year": small_world["year"], "output_dir": str(out),
                      "on_read_error": "fail", "granules": [granule]}
            (tmp_path / f"{name}.json").write_text(json.dumps(params))
            p = subprocess.run([sys.executable, "-m", "flows", "run", "gedi-labels", "--params",
                                str(tmp_path / f"{name}.json")], capture_output=True, text=True, cwd=REPO,
                               env={**base, "EARTHDATA_TOKEN": token}, timeout=500)
            consoles.append(p.stdout + p.stderr)
            outs.append(out)
            if name == "ok":
                assert p.returncode == 0, p.stderr[-3000:]
                assert json.loads(p.stdout.strip().splitlines()[-1])["n_shots"] > 0
            else:
                assert p.returncode == 1, p.stderr[-3000:]
                assert "HTTP 401" in p.stderr and list((out / "logs").glob("gedi-labels-*.log")), p.stderr[-3000:]
    db = [p for p in home.rglob("*.db*") if p.is_file()]
    assert db and any(b"gedi-labels" in p.read_bytes() for p in db), list(home.rglob("*"))  # runs recorded there
    for text in consoles:
        assert not [sec for sec in SECRETS if sec in text], text[-3000:]
    assert not [f for root in (*outs, home) for f in _scan(root)]
