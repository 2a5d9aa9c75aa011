"""The flows command line: list, parameter errors, and a real run printing JSON last."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flows", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def test_list_names_every_flow() -> None:
    res = _run("list")
    assert res.returncode == 0, res.stderr
    names = [line.split()[0] for line in res.stdout.splitlines() if line.strip()]
    assert names == ["sample-world", "hls-composite", "gedi-labels", "export-chips", "train-model",
                     "evaluate-model", "predict-map", "biomass-pipeline", "map-biomass", "yearly-biomass"]


def test_unknown_flow_and_bad_params(tmp_path) -> None:
    res = _run("run", "no-such-flow")
    assert res.returncode == 2 and "unknown flow 'no-such-flow'" in res.stderr
    bad = tmp_path / "p.json"
    bad.write_text(json.dumps({"aoi": [10, 50, 9, 51], "year": 2023, "output_dir": str(tmp_path)}))
    res = _run("run", "hls-composite", "--params", str(bad))
    assert res.returncode == 2
    assert "invalid parameters for hls-composite" in res.stderr and "not a valid lon/lat box" in res.stderr
    res = _run("run", "hls-composite", "--params", str(tmp_path / "missing.json"))
    assert res.returncode == 2 and "cannot read parameters" in res.stderr
    res = _run("run", "sample-world", "-p", "output_dir=" + str(tmp_path), "-p", "size=huge")
    assert res.returncode == 2 and "size" in res.stderr
    # no GEDI in the northern 2023 season (instrument stored on the ISS): refused before any search
    res = _run("run", "gedi-labels", "-p", "aoi=[-122.1, 44.2, -121.9, 44.35]", "-p", "year=2023",
               "-p", "output_dir=" + str(tmp_path / "g"))
    assert res.returncode == 2 and "2023-03-17..2024-04-25" in res.stderr and "2022 and 2024" in res.stderr
    assert not (tmp_path / "g").exists()


def test_run_sample_world_prints_json_last(tmp_path) -> None:
    params = tmp_path / "p.json"
    params.write_text(json.dumps({"output_dir": str(tmp_path / "w"), "seed": 0}))
    res = _run("run", "sample-world", "--params", str(params), "-p", "size=small")
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads(res.stdout.strip().splitlines()[-1])
    assert result["size"] == "small" and Path(result["hls"]["items_json"]).is_file()
    assert len(result["tiles"]) == 2
