"""The flows command line: list, parameter errors, and a real run printing JSON last.

``list`` and the real run go through ``python -m flows`` in a subprocess; the parameter errors call the same
``main`` in this process (each is refused before any flow or Prefect server starts, and a subprocess would
spend its seconds importing). The real run uses the session's Prefect API (tests/test_cli_errors.py keeps
the user's path, a run with its own ephemeral server)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(*args: str, timeout: int = 300, api_url: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **({"PREFECT_API_URL": api_url} if api_url else {})}
    return subprocess.run([sys.executable, "-m", "flows", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_list_names_every_flow() -> None:
    res = _run("list")
    assert res.returncode == 0, res.stderr
    names = [line.split()[0] for line in res.stdout.splitlines() if line.strip()]
    assert names == ["sample-world", "hls-composite", "gedi-labels", "export-chips", "train-model",
                     "evaluate-model", "predict-map", "biomass-pipeline", "map-biomass", "yearly-biomass"]


def _rc_err(flows_main, *args: str) -> tuple[int, str]:
    res = flows_main(*args)
    return res.returncode, res.stderr


def test_unknown_flow_and_bad_params(tmp_path, flows_main) -> None:
    rc, err = _rc_err(flows_main, "run", "no-such-flow")
    assert rc == 2 and "unknown flow 'no-such-flow'" in err
    bad = tmp_path / "p.json"
    bad.write_text(json.dumps({"aoi": [10, 50, 9, 51], "year": 2023, "output_dir": str(tmp_path)}))
    rc, err = _rc_err(flows_main, "run", "hls-composite", "--params", str(bad))
    assert rc == 2
    assert "invalid parameters for hls-composite" in err and "not a valid lon/lat box" in err
    rc, err = _rc_err(flows_main, "run", "hls-composite", "--params", str(tmp_path / "missing.json"))
    assert rc == 2 and "cannot read parameters" in err
    rc, err = _rc_err(flows_main, "run", "sample-world", "-p", "output_dir=" + str(tmp_path), "-p", "size=huge")
    assert rc == 2 and "size" in err
    # no GEDI in the northern 2023 season (instrument stored on the ISS): refused before any search
    rc, err = _rc_err(flows_main, "run", "gedi-labels", "-p", "aoi=[-122.1, 44.2, -121.9, 44.35]", "-p", "year=2023",
                    "-p", "output_dir=" + str(tmp_path / "g"))
    assert rc == 2 and "2023-03-17..2024-04-25" in err and "2022 and 2024" in err
    assert "Starting temporary server" not in err  # refused before Prefect starts
    assert not (tmp_path / "g").exists()


def test_run_sample_world_prints_json_last(tmp_path, harness_api) -> None:
    params = tmp_path / "p.json"
    params.write_text(json.dumps({"output_dir": str(tmp_path / "w"), "seed": 0}))
    res = _run("run", "sample-world", "--params", str(params), "-p", "size=small", api_url=harness_api)
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads(res.stdout.strip().splitlines()[-1])
    assert result["size"] == "small" and Path(result["hls"]["items_json"]).is_file()
    assert len(result["tiles"]) == 2
