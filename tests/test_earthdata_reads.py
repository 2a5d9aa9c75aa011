"""HLS (GDAL) and GEDI (requests + h5py) read through the Earthdata emulator with a token, a user name and
password, and a netrc file: same pixels and shots as local reads; the signed host never receives an
Authorization header; no secret in any log line, artifact, output file or error message; a refused
signed URL gives an error naming host and status (never "truncated or corrupt"), and no process ends in
a signal."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio

from core.earthdata import close_gdal_files, gdal_files_folder
from sampleworld.emulator import Faults
from sampleworld.serve import patched_env, rewrite_hrefs, serve_world

pytestmark = pytest.mark.allow_hosts(["127.0.0.1", "127.0.0.2", "127.0.0.3"])

USER = "earth-user-7"
PASSWORD = "pw-Qx7SECRETpass-91"   # distinctive: searched for in every log, artifact and file
TOKEN = "tok-Zq81SECRETtoken-33"
SECRETS = (PASSWORD, TOKEN)
MODES = ("token", "password", "netrc")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def served(world_dir: Path) -> Iterator[Any]:
    with serve_world(world_dir, tokens=[TOKEN], users={USER: PASSWORD}, mode="thread") as s:
        yield s


def mode_env(mode: str, served: Any, tmp: Path) -> dict[str, str | None]:
    """The environment of one credential mode (only the emulator's hosts named in EARTHDATA_HOSTS)."""
    env = {**served.env, "EARTHDATA_TOKEN": None}
    if mode == "token":
        env["EARTHDATA_TOKEN"] = TOKEN
    elif mode == "password":
        env.update(EARTHDATA_USERNAME=USER, EARTHDATA_PASSWORD=PASSWORD)
    else:
        netrc = tmp / "netrc"
        netrc.write_text(f"machine 127.0.0.1 login {USER} password {PASSWORD}\n")
        netrc.chmod(0o600)
        env["NETRC"] = str(netrc)
    return env


@pytest.fixture
def run_env(request, served, tmp_path) -> Iterator[str]:
    """Credentials of the mode in ``request.param``; the emulator's counters start at zero; the GDAL
    private files are removed afterwards."""
    served.emulator.reset_stats()
    with patched_env(mode_env(request.param, served, tmp_path)):
        yield request.param
    close_gdal_files()


def hosts_after(served: Any) -> dict[str, Any]:
    assert served.emulator.wait_idle()
    return served.emulator.stats()["hosts"]


def check_credentials_went_only_where_allowed(hosts: dict[str, Any], mode: str) -> None:
    assert hosts["signed"]["requests"] > 0 and hosts["signed"]["with_authorization"] == 0
    assert hosts["signed"]["with_cookie"] == 0  # the data host's session cookie stays on the data host
    assert "400" not in hosts["signed"]["statuses"]
    if mode == "token":
        assert set(hosts["data"]["auth_schemes"]) == {"Bearer"} and hosts["login"]["requests"] == 0
    else:  # the password goes to the login host only, once per reader (requests, GDAL's seeding login)
        assert hosts["data"]["auth_schemes"] == {} and set(hosts["login"]["auth_schemes"]) == {"Basic"}


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text


def scan_files(root: Path) -> None:
    for p in root.rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            for secret in SECRETS:
                assert secret.encode() not in data, p


# ---------------------------------------------------------------------------------------------- HLS
@pytest.fixture(scope="module")
def tile_items(small_world: dict[str, Any], items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [it for it in items if ".T10TEK." in it["id"]]


@pytest.fixture(scope="module")
def local_composite(small_world, tile_items, tmp_path_factory) -> np.ndarray:
    from compositing.composite import composite_tile

    res = composite_tile(tile="10TEK", items=tile_items, aoi=small_world["aoi"], season=small_world["season"],
                         output_dir=str(tmp_path_factory.mktemp("local")))
    with rasterio.open(res.path) as ds:
        return ds.read()


@pytest.mark.parametrize("run_env", MODES, indirect=True)
def test_hls_through_earthdata(run_env, served, small_world, world_dir, tile_items, local_composite,
                               tmp_path, caplog) -> None:
    from compositing.composite import composite_tile

    remote = [rewrite_hrefs(it, served.emulator, world_dir) for it in tile_items]
    assert remote[0]["assets"]["B04"]["href"].startswith(served.emulator.data_base_url + "/lp-prod-protected/")
    with caplog.at_level(logging.DEBUG):
        res = composite_tile(tile="10TEK", items=remote, aoi=small_world["aoi"], season=small_world["season"],
                             output_dir=str(tmp_path / "out"))
    assert res.scenes_skipped == [] and len(res.scenes_used) == len(tile_items)
    with rasterio.open(res.path) as ds:
        np.testing.assert_array_equal(ds.read(), local_composite)
    check_credentials_went_only_where_allowed(hosts_after(served), run_env)
    folder = gdal_files_folder()
    assert folder is not None and oct(folder.stat().st_mode)[-3:] == "700"
    assert_no_secret(caplog.text, json.dumps(res.to_dict()))
    scan_files(tmp_path / "out")


# --------------------------------------------------------------------------------------------- GEDI
@pytest.fixture(scope="module")
def local_labels(small_world, tmp_path_factory) -> Any:
    from labels.engine import run_gedi_labels

    return run_gedi_labels(aoi=small_world["aoi"], year=small_world["year"], granules=small_world["gedi"]["granules"],
                           output_dir=str(tmp_path_factory.mktemp("glocal")))


@pytest.mark.parametrize("run_env", MODES, indirect=True)
def test_gedi_through_earthdata(run_env, served, small_world, world_dir, local_labels, tmp_path, caplog) -> None:
    import pandas as pd

    from labels.engine import run_gedi_labels

    urls = [served.data_url(g, world_dir) for g in small_world["gedi"]["granules"]]
    assert all("/protected/gedi/GEDI_L4A_AGB_Density_V2_1/data/GEDI04_A_" in u for u in urls)
    with caplog.at_level(logging.DEBUG):
        res = run_gedi_labels(aoi=small_world["aoi"], year=small_world["year"], granules=urls, output_dir=str(tmp_path / "out"))
    assert res.granules_skipped == [] and res.n_shots == local_labels.n_shots > 0
    assert res.filter_counts["total"] == local_labels.filter_counts["total"]
    a, b = pd.read_parquet(res.shots), pd.read_parquet(local_labels.shots)
    np.testing.assert_array_equal(a["agbd"].to_numpy(), b["agbd"].to_numpy())
    check_credentials_went_only_where_allowed(hosts_after(served), run_env)
    assert_no_secret(caplog.text, json.dumps(res.to_dict()))
    scan_files(tmp_path / "out")


# ------------------------------------------------------------------------------- flows, artifacts
def _artifacts_and_logs() -> str:
    from prefect.client.orchestration import get_client

    async def read() -> str:
        async with get_client() as client:
            arts = [f"{a.key} {a.data} {a.description}" for a in await client.read_artifacts()]
            logs = [lg.message for lg in await client.read_logs()]
            return "\n".join(arts + logs)

    return asyncio.run(read())


@pytest.mark.parametrize("run_env", ["password", "token"], indirect=True)
def test_flows_leave_no_secret(run_env, prefect_harness, served, small_world, tmp_path, caplog) -> None:
    """hls-composite and gedi-labels as Prefect flows reading through the emulator: every Prefect log line
    and artifact and every output file are free of the secrets (printed output: the CLI test below)."""
    from flows.params import GediLabelsParams, HlsCompositeParams
    from flows.stages import gedi_labels, hls_composite

    area = {"aoi": small_world["aoi"], "year": small_world["year"], "output_dir": str(tmp_path / "out"),
            "stac_url": served.stac_url}
    with caplog.at_level(logging.DEBUG):
        comp = hls_composite(HlsCompositeParams(**area))
        lab = gedi_labels(GediLabelsParams(**area, composites=comp.result.composites.paths))
    assert lab.result.n_shots > 0 and all(g.startswith(served.emulator.data_base_url) for g in lab.result.granules)
    check_credentials_went_only_where_allowed(hosts_after(served), run_env)
    assert_no_secret(caplog.text, _artifacts_and_logs())
    scan_files(tmp_path / "out")


# ------------------------------------------------------------------------------------------ errors
def test_refused_signed_url_names_host_and_status(world_dir, small_world, tmp_path) -> None:
    from compositing.composite import CompositeError, composite_tile
    from labels.engine import run_gedi_labels
    from labels.granule import GediReadError

    refusing = {"signed": Faults(error_5xx=1.0, statuses_5xx=(400,))}
    with serve_world(world_dir, tokens=[TOKEN], mode="thread", faults=refusing) as s, \
            patched_env({**s.env, "EARTHDATA_TOKEN": TOKEN}):
        url = s.data_url(small_world["gedi"]["granules"][0], world_dir)
        with pytest.raises(GediReadError) as e:
            run_gedi_labels(aoi=small_world["aoi"], year=small_world["year"], granules=[url], output_dir=str(tmp_path / "g"),
                            options=_fail_options())
        signed_host = s.emulator.signed_base_url.split("//")[1]
        msg = str(e.value)
        assert "signed URL rejected the request: HTTP 400" in msg and signed_host in msg
        assert "truncated or corrupt" not in msg and "X-Amz" not in msg and Path(url).name in msg
        items = [rewrite_hrefs(it, s.emulator, world_dir) for it in json.loads(
            Path(small_world["hls"]["items_json"]).read_text())["features"] if ".T10TEK." in it["id"]][:1]
        with pytest.raises(CompositeError, match="signed URL rejected the request: HTTP 400") as c:
            composite_tile(tile="10TEK", items=items, aoi=small_world["aoi"], season=small_world["season"],
                           output_dir=str(tmp_path / "h"))
        assert signed_host in str(c.value)
    close_gdal_files()


def _fail_options() -> Any:
    from labels.contracts import LabelOptions

    return LabelOptions(on_read_error="fail")


FAIL_INSIDE_H5PY = r"""
import json, sys, h5py
from sampleworld.emulator import EarthdataEmulator
from core.earthdata import HostPolicy, Credentials
from core.earthdata_http import earthdata_session
from labels.sources import HTTPRangeFile
granule = sys.argv[1]
with EarthdataEmulator({"g": str(__import__("pathlib").Path(granule).parent)}, tokens=["t-1"]) as emu:
    url = emu.data_url("g", __import__("pathlib").Path(granule).name)
    s = earthdata_session(Credentials(token="t-1", source="test"), HostPolicy.from_env(",".join(emu.hosts)))
    src = HTTPRangeFile(url, s, block_size=512)      # the probe reads the first 512 bytes only
    emu._hosts.app.auth._tokens.clear()              # the token is revoked and every session ends ...
    emu._hosts.app.auth._sessions.clear()
    emu.expire_signed_urls()                         # ... while h5py still needs the rest of the metadata
    try:
        h5py.File(src, "r")
        opened = True
    except OSError as exc:
        opened = False
        KEEP = exc                                   # kept to exit, as Prefect keeps a failed run's error
    print(json.dumps({"opened": opened, "failure": src.failure_error() and str(src.failure_error())}))
"""


def test_a_failure_inside_h5py_is_recorded_and_the_process_exits_cleanly(small_world) -> None:
    """Before: readinto raised inside HDF5 and the kept traceback crashed the interpreter at exit (139)."""
    p = subprocess.run([sys.executable, "-c", FAIL_INSIDE_H5PY, small_world["gedi"]["granules"][0]],
                       capture_output=True, text=True, cwd=REPO, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert not out["opened"] and "Earthdata Login refused the credentials: HTTP 401" in out["failure"]


def test_cli_flow_against_a_refusing_emulator_exits_1(world_dir, small_world, tmp_path) -> None:
    """``python -m flows run gedi-labels`` whose signed URLs are refused: exit status 1 (not a signal) and
    a message naming the host and the status."""
    refusing = {"signed": Faults(error_5xx=1.0, statuses_5xx=(400,))}
    with serve_world(world_dir, tokens=[TOKEN], mode="process", faults=refusing) as s:
        params = {"aoi": small_world["aoi"], "year": small_world["year"], "output_dir": str(tmp_path / "out"),
                  "on_read_error": "fail", "granules": [s.data_url(small_world["gedi"]["granules"][0], world_dir)]}
        (tmp_path / "p.json").write_text(json.dumps(params))
        env = {k: v for k, v in os.environ.items() if not k.startswith("EARTHDATA_")}
        env.update({k: v for k, v in s.env.items() if v is not None}, EARTHDATA_TOKEN=TOKEN,
                   PYTHONPATH=str(REPO))
        p = subprocess.run([sys.executable, "-m", "flows", "run", "gedi-labels", "--params", str(tmp_path / "p.json")],
                           capture_output=True, text=True, cwd=REPO, env=env, timeout=400)
    assert p.returncode == 1, (p.returncode, p.stderr[-3000:])
    assert "signed URL rejected the request: HTTP 400" in p.stderr and "truncated or corrupt" not in p.stderr
    assert_no_secret(p.stdout, p.stderr)
    scan_files(tmp_path / "out")


def test_check_earthdata_cli(served, world_dir, small_world) -> None:
    """The verdict, the credentials' kind and source, never the secret; exit 1 when refused."""
    url = served.data_url(small_world["gedi"]["granules"][0], world_dir)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EARTHDATA_")}
    env.update({k: v for k, v in served.env.items() if v is not None and k != "EARTHDATA_TOKEN"},
               PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "flows", "check-earthdata", "--url", f"gedi={url}"]
    ok = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120,
                        env={**env, "EARTHDATA_USERNAME": USER, "EARTHDATA_PASSWORD": PASSWORD})
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"user name and password for user {USER} from env:EARTHDATA_USERNAME" in ok.stdout
    assert "OK   gedi" in ok.stdout and "works for every endpoint" in ok.stdout
    bad = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120,
                         env={**env, "EARTHDATA_TOKEN": "tok-wrong-SECRET"})
    assert bad.returncode == 1 and "Earthdata Login refused the credentials: HTTP 401" in bad.stdout
    assert_no_secret(ok.stdout, ok.stderr, bad.stdout, bad.stderr)
    assert "tok-wrong-SECRET" not in bad.stdout + bad.stderr
