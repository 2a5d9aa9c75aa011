"""The loopback STAC API (rustac) serves the sample world as pystac-client expects from CMR-STAC."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from datetime import datetime
from pathlib import Path

import pytest
from pystac_client import Client

from sampleworld.stac_server import StacServerError, serve_stac


@pytest.fixture(scope="module")
def url(stac_url: str) -> str:
    """The session's loopback STAC API over the small world (tests/conftest.py, sampleworld.serve_stac)."""
    return stac_url


def _expected_ids(world: dict, bbox: list[float], start: str, end: str) -> set[str]:
    items = json.loads(Path(world["hls"]["items_json"]).read_text())["features"]
    out = set()
    for it in items:
        b = it["bbox"]
        t = it["properties"]["datetime"][:10]
        if b[0] <= bbox[2] and b[2] >= bbox[0] and b[1] <= bbox[3] and b[3] >= bbox[1] and start <= t <= end:
            out.add(it["id"])
    return out


def test_serves_both_collections_on_loopback(url: str) -> None:
    assert url.startswith("http://127.0.0.1:")
    ids = {c.id for c in Client.open(url).get_collections()}
    assert ids == {"HLSL30_2.0", "GEDI_L4A_AGB_Density_V2_1_2056_2.1"}


def test_bbox_datetime_search_with_paging(world: dict, url: str) -> None:
    aoi = world["aoi"]
    season = f"{world['season']['start']}/{world['season']['end']}"
    search = Client.open(url).search(collections=["HLSL30_2.0"], bbox=aoi, datetime=season, limit=2)
    pages = [[it.id for it in page.items] for page in search.pages()]
    ids = [i for p in pages for i in p]
    expected = _expected_ids(world, aoi, world["season"]["start"], world["season"]["end"])
    assert len(pages) >= 3, pages  # several pages at limit=2
    assert all(len(p) <= 2 for p in pages)
    assert len(ids) == len(set(ids)), "a page repeated items"
    assert set(ids) == expected
    assert len(expected) >= 6  # >= 3 leaf-on dates x 2 tiles
    for it in search.items():
        t = it.datetime.date().isoformat()
        assert world["season"]["start"] <= t <= world["season"]["end"]
        assert it.collection_id == "HLSL30_2.0"


def test_bbox_outside_world_finds_nothing(url: str) -> None:
    search = Client.open(url).search(collections=["HLSL30_2.0"], bbox=[10.0, 10.0, 10.1, 10.1], limit=5)
    assert list(search.items()) == []


def test_datetime_excludes_other_dates(world: dict, url: str) -> None:
    search = Client.open(url).search(collections=["HLSL30_2.0"], bbox=world["aoi"],
                                     datetime="2024-01-01/2024-03-31", limit=3)
    ids = [it.id for it in search.items()]
    assert ids and all(".2024" in i for i in ids)
    for i in ids:
        doy = int(i.split(".")[3][4:7])
        assert doy <= 90


def test_client_side_cloud_cover_filter(world: dict, url: str) -> None:
    items = list(Client.open(url).search(collections=["HLSL30_2.0"], bbox=world["aoi"], limit=4).items())
    covers = [it.properties["eo:cloud_cover"] for it in items]
    assert len(set(covers)) >= 3, covers  # the world has clear and cloudy scenes
    clear = [it for it in items if it.properties["eo:cloud_cover"] <= 15]
    assert 0 < len(clear) < len(items)
    assert all(it.properties["eo:cloud_cover"] <= 15 for it in clear)


def test_items_shaped_like_cmr_stac(url: str, world: dict) -> None:
    item = next(Client.open(url).search(collections=["HLSL30_2.0"], bbox=world["aoi"], limit=1).items())
    assert set(item.properties) == {"datetime", "start_datetime", "end_datetime", "eo:cloud_cover"}
    assert not any(k.startswith("proj:") for k in item.properties)
    for key in ("B02", "B05", "Fmask"):
        a = item.assets[key]
        assert a.media_type is None and a.href.endswith(f".{key}.tif") and Path(a.href).is_absolute()
        assert Path(a.href).exists()
    assert datetime.fromisoformat(item.properties["start_datetime"].replace("Z", "+00:00")) <= item.datetime


def test_gedi_granules_found_by_bbox_and_datetime(world: dict, url: str) -> None:
    search = Client.open(url).search(collections=["GEDI_L4A_AGB_Density_V2_1_2056_2.1"], bbox=world["aoi"],
                                     datetime="2024-06-01/2024-08-31", limit=1)
    items = list(search.items())
    names = sorted(Path(it.assets["data"].href).name for it in items)
    stamps = {p: Path(p).name.split("_")[2] for p in world["gedi"]["granules"]}
    expected = sorted(Path(p).name for p, s in stamps.items() if s[:4] == "2024" and s[4:7] <= "243")
    assert names == expected and len(names) == 2
    for it in items:
        assert it.assets["data"].href.endswith(".h5") and Path(it.assets["data"].href).exists()
        assert set(it.properties) == {"datetime", "start_datetime", "end_datetime"}


def test_server_stops_on_exit(world: dict) -> None:
    with serve_stac(Path(world["hls"]["items_json"]).parents[1]) as u:
        with urllib.request.urlopen(u + "/") as r:
            assert r.status == 200
    with pytest.raises(OSError):
        urllib.request.urlopen(u + "/", timeout=2)


def test_serve_command_prints_url_and_stops_on_sigterm(world: dict) -> None:
    wd = Path(world["hls"]["items_json"]).parents[1]
    with subprocess.Popen([sys.executable, "-m", "sampleworld", "serve", str(wd)], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True) as proc:
        try:
            line = proc.stdout.readline().strip()
            assert line.startswith("http://127.0.0.1:")
            with urllib.request.urlopen(line + "/collections") as r:
                ids = {c["id"] for c in json.loads(r.read())["collections"]}
            assert "HLSL30_2.0" in ids
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=20) == 0
    with pytest.raises(OSError):
        urllib.request.urlopen(line + "/", timeout=2)


def test_not_a_world_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StacServerError, match="not a sample world"):
        with serve_stac(tmp_path):
            pass
