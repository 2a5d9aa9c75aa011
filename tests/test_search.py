"""HLS search: loopback STAC APIs only (rustac, and a tiny scripted HTTP server for retries and paging bugs)."""

from __future__ import annotations

import csv
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from compositing.contracts import SearchOptions
from compositing.search import SearchError, keep_item, search_hls
from core.http import RetryPolicy
from core.http import parse_retry_after as _parse_retry_after

AOI = [-121.80, 40.10, -121.74, 40.16]  # overlap of 10TEK / 10TFK
SEASON = {"start": "2021-06-01", "end": "2021-09-30"}
RING = [[-122.0, 39.9], [-121.5, 39.9], [-121.5, 40.4], [-122.0, 40.4], [-122.0, 39.9]]


def make_item(k: int, tile: str = "10TEK", cloud: float | None = 10.0, when: str | None = None,
              ring: list[list[float]] | None = None) -> dict:
    doy = 152 + k % 120
    iid = f"HLS.L30.T{tile}.2021{doy:03d}T18{k % 60:02d}{k // 60:02d}.v2.0"
    dt = when or time.strftime("%Y-%m-%dT18:00:00Z", time.strptime(f"2021 {doy}", "%Y %j"))
    props = {"datetime": dt, "start_datetime": dt, "end_datetime": dt}
    if cloud is not None:
        props["eo:cloud_cover"] = cloud
    href = f"https://data.lpdaac.earthdatacloud.nasa.gov/lp-prod-protected/HLSL30.020/{iid}/{iid}"
    r = ring or RING
    return {"type": "Feature", "stac_version": "1.0.0", "id": iid, "collection": "HLSL30_2.0",
            "properties": props, "geometry": {"type": "Polygon", "coordinates": [r]},
            "bbox": [min(p[0] for p in r), min(p[1] for p in r), max(p[0] for p in r), max(p[1] for p in r)],
            "links": [], "assets": {b: {"href": f"{href}.{b}.tif", "roles": ["data"]} for b in ("B02", "Fmask")}}


# --------------------------------------------------------------------------------------- rustac (real API)
@pytest.fixture(scope="module")
def rustac_world(tmp_path_factory: pytest.TempPathFactory):
    from sampleworld.stac_server import serve_stac

    root = tmp_path_factory.mktemp("stacworld")
    stac = root / "stac"
    stac.mkdir()
    items = [make_item(k, "10TEK" if k % 2 else "10TFK", cloud=float(k % 100)) for k in range(230)]
    items.append(make_item(900, when="2021-05-01T18:00:00Z", cloud=1.0))  # outside the season
    items.append(make_item(901, cloud=1.0, ring=[[10, 10], [11, 10], [11, 11], [10, 11], [10, 10]]))  # far away
    coll = {"type": "Collection", "stac_version": "1.0.0", "id": "HLSL30_2.0", "description": "test",
            "license": "proprietary", "links": [],
            "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]},
                       "temporal": {"interval": [["2013-01-01T00:00:00Z", None]]}}}
    (stac / "hls_collection.json").write_text(json.dumps(coll))
    (stac / "gedi_collection.json").write_text(json.dumps({**coll, "id": "GEDI_L4A_AGB_Density_V2_1_2056_2.1"}))
    (stac / "hls_items.json").write_text(json.dumps({"type": "FeatureCollection", "features": items}))
    (stac / "gedi_items.json").write_text(json.dumps({"type": "FeatureCollection", "features": []}))
    with serve_stac(root) as url:
        yield url, items


def test_rustac_paging_and_client_side_cloud_filter(rustac_world, tmp_path):
    url, items = rustac_world
    res = search_hls(aoi=AOI, year=2021, output_dir=str(tmp_path), options=SearchOptions(max_cloud_cover=30, stac_url=url, limit=50))
    in_season = [it for it in items if it["properties"]["datetime"] < "2021-10" and it["properties"]["datetime"] >= "2021-06"]
    expected = {it["id"] for it in in_season if it["properties"]["eo:cloud_cover"] <= 30 and it["bbox"][0] < 0}
    saved = json.loads(Path(res.items_json).read_text())
    assert {f["id"] for f in saved["features"]} == expected
    assert res.n_items == len(expected) and res.pages >= 5  # 231 items answered in pages of 50
    assert res.dropped_cloud == sum(it["properties"]["eo:cloud_cover"] > 30 for it in in_season) > 0
    assert res.server_cloud_filter is False  # rustac does not declare `query`
    assert res.duplicates == 0 and set(res.ids_by_tile) == {"10TEK", "10TFK"}
    assert sorted(res.ids_by_tile["10TEK"] + res.ids_by_tile["10TFK"]) == sorted(expected)
    # items saved exactly as the server returned them (e.g. the hrefs and the properties)
    by_id = {it["id"]: it for it in items}
    for f in saved["features"]:
        assert f["assets"]["Fmask"]["href"] == by_id[f["id"]]["assets"]["Fmask"]["href"]
        assert f["properties"]["eo:cloud_cover"] == by_id[f["id"]]["properties"]["eo:cloud_cover"]
    rows = list(csv.DictReader(Path(res.items_csv).open()))
    assert [r["id"] for r in rows] == [f["id"] for f in saved["features"]]
    assert {r["tile"] for r in rows} == {"10TEK", "10TFK"} and all(float(r["eo:cloud_cover"]) <= 30 for r in rows)


def test_saved_search_is_reused_without_the_server(rustac_world, tmp_path):
    url, _ = rustac_world
    first = search_hls(aoi=AOI, season=SEASON, output_dir=str(tmp_path), options=SearchOptions(max_cloud_cover=50, stac_url=url))
    stamp = Path(first.items_json).stat().st_mtime_ns
    reused = search_hls(aoi=AOI, season=SEASON, output_dir=str(tmp_path), options=SearchOptions(max_cloud_cover=50, stac_url=url))
    assert reused.reused is True and reused.n_items == first.n_items
    assert Path(first.items_json).stat().st_mtime_ns == stamp
    other = search_hls(aoi=AOI, season=SEASON, output_dir=str(tmp_path), options=SearchOptions(max_cloud_cover=20, stac_url=url))
    assert other.reused is False and other.n_items < first.n_items


def test_max_items_bounds_the_search(rustac_world, tmp_path):
    url, _ = rustac_world
    res = search_hls(aoi=AOI, season=SEASON, output_dir=str(tmp_path), options=SearchOptions(stac_url=url, limit=20, max_items=45))
    assert res.n_items <= 45 and res.pages == 3


# --------------------------------------------------------------------------------- scripted loopback server
class Script:
    """What the scripted server answers: a list of (status, headers) failures before succeeding."""

    def __init__(self, failures: list[tuple[int, dict[str, str]]], pages: list[list[dict]], repeat_last: bool = False,
                 query_conformance: bool = False, stale_once: tuple[int, ...] = ()) -> None:
        self.stale_once = set(stale_once)  # pages whose first request answers the previous page's items
        self.failures = list(failures)
        self.pages = pages
        self.repeat_last = repeat_last
        self.query_conformance = query_conformance
        self.requests: list[tuple[str, str, dict | None]] = []
        self.lock = threading.Lock()


def _handler(script: Script, base: list[str]):
    class H(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def _send(self, status: int, body: dict | None, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body or {"code": "error"}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def _answer(self, body_in: dict | None) -> None:
            with script.lock:
                script.requests.append((self.command, self.path, body_in))
                if script.failures:
                    status, headers = script.failures.pop(0)
                    return self._send(status, None, headers)
            if self.path == "/" or self.path == "":
                conf = ["https://api.stacspec.org/v1.0.0/core", "https://api.stacspec.org/v1.0.0/item-search"]
                if script.query_conformance:
                    conf.append("https://api.stacspec.org/v1.0.0/item-search#query")
                return self._send(200, {"type": "Catalog", "id": "t", "description": "t", "stac_version": "1.0.0",
                                        "conformsTo": conf, "links": [
                                            {"rel": "self", "href": base[0] + "/"},
                                            {"rel": "root", "href": base[0] + "/"},
                                            {"rel": "search", "href": base[0] + "/search", "method": "POST",
                                             "type": "application/geo+json"}]})
            page = int((body_in or {}).get("page", 0))
            n = len(script.pages)
            feats = script.pages[min(page, n - 1)] if page < n or script.repeat_last else []
            with script.lock:
                if page in script.stale_once:
                    script.stale_once.discard(page)
                    feats = script.pages[page - 1]
            links = []
            if page + 1 < n or script.repeat_last:
                links.append({"rel": "next", "href": base[0] + "/search", "method": "POST",
                              "body": {"page": page + 1}, "merge": True})
            return self._send(200, {"type": "FeatureCollection", "features": feats, "links": links})

        def do_GET(self):
            self._answer(None)

        def do_POST(self):
            n = int(self.headers.get("Content-Length") or 0)
            self._answer(json.loads(self.rfile.read(n) or b"{}"))

    return H


@pytest.fixture
def scripted():
    servers = []

    def start(script: Script) -> str:
        base: list[str] = []
        srv = ThreadingHTTPServer(("127.0.0.1", 0), _handler(script, base))
        base.append(f"http://127.0.0.1:{srv.server_address[1]}")
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return base[0]

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


FAST = {"backoff_s": 0.01, "max_backoff_s": 0.05, "timeout_s": 5}


def test_retries_503_and_429_honouring_retry_after_then_succeeds(scripted, tmp_path):
    script = Script([(503, {"Retry-After": "0"}), (429, {"Retry-After": "1"}), (502, {})],
                    [[make_item(1), make_item(2)]])
    url = scripted(script)
    t0 = time.monotonic()
    res = search_hls(aoi=AOI, season=SEASON, output_dir=str(tmp_path), retries=FAST, options=SearchOptions(stac_url=url))
    elapsed = time.monotonic() - t0
    assert res.n_items == 2 and res.retries == 3
    assert elapsed >= 1.0  # the 429's Retry-After: 1 was honoured
    assert res.retry_wait_s >= 1.0
    assert not script.failures and [r[:2] for r in script.requests].count(("POST", "/search")) == 1


def test_retry_budget_exhausted_is_a_clear_error(scripted, tmp_path):
    url = scripted(Script([(503, {"Retry-After": "0"})] * 50, [[make_item(1)]]))
    with pytest.raises(SearchError, match=r"failed after 4 attempts.*HTTP 503"):
        search_hls(aoi=AOI, season=SEASON, output_dir=str(tmp_path), retries={**FAST, "max_attempts": 4}, options=SearchOptions(stac_url=url))
    url2 = scripted(Script([(503, {"Retry-After": "30"})] * 50, [[make_item(1)]]))
    t0 = time.monotonic()
    with pytest.raises(SearchError, match=r"retry budget .* 5 s"):
        search_hls(aoi=AOI, season=SEASON, output_dir=str(tmp_path), retries={**FAST, "budget_s": 5}, options=SearchOptions(stac_url=url2))
    assert time.monotonic() - t0 < 5  # a Retry-After beyond the budget fails at once
    assert not (tmp_path / "search" / "hls_items.json").exists()


def test_client_errors_are_not_retried(scripted, tmp_path):
    script = Script([(400, {})], [[make_item(1)]])
    url = scripted(script)
    with pytest.raises(SearchError, match="HTTP 400"):
        search_hls(aoi=AOI, season=SEASON, output_dir=str(tmp_path), retries=FAST, options=SearchOptions(stac_url=url))
    assert len(script.requests) == 1


def test_a_stuck_cursor_fails_clearly_instead_of_truncating(scripted, tmp_path):
    a, b, c = make_item(1), make_item(2), make_item(3)
    script = Script([], [[a, b], [b, c, c]], repeat_last=True)  # the cursor keeps answering the last page
    url = scripted(script)
    with pytest.raises(SearchError, match=r"/search: page 3 repeated items already seen 3 times"):
        search_hls(aoi=AOI, season=SEASON, output_dir=str(tmp_path), retries=FAST, options=SearchOptions(stac_url=url))
    assert not (tmp_path / "search" / "hls_items.json").exists()


def test_a_repeated_page_is_re_requested_and_duplicate_ids_dropped(scripted, tmp_path):
    a, b, c, d = make_item(1), make_item(2), make_item(3), make_item(4)
    script = Script([], [[a, b], [b, c, c], [d]], stale_once=(2,))  # page 3 first answers page 2 again
    url = scripted(script)
    res = search_hls(aoi=AOI, season=SEASON, output_dir=str(tmp_path), retries=FAST, options=SearchOptions(stac_url=url))
    ids = [f["id"] for f in json.loads(Path(res.items_json).read_text())["features"]]
    assert ids == [a["id"], b["id"], c["id"], d["id"]]
    assert res.duplicates == 2 and res.repeated_pages == 1 and res.pages == 3


def test_server_query_used_when_declared_and_client_filter_still_applies(scripted, tmp_path):
    items = [make_item(1, cloud=5), make_item(2, cloud=30), make_item(3, cloud=30.5), make_item(4, cloud=None)]
    script = Script([], [items], query_conformance=True)  # declares `query` but ignores it
    url = scripted(script)
    res = search_hls(aoi=AOI, season=SEASON, output_dir=str(tmp_path), retries=FAST, options=SearchOptions(stac_url=url, max_cloud_cover=30))
    body = script.requests[-1][2]
    assert body["query"] == {"eo:cloud_cover": {"lte": 30}} and body["collections"] == ["HLSL30_2.0"]
    assert body["datetime"] == "2021-06-01T00:00:00Z/2021-09-30T23:59:59Z" and body["limit"] == 100
    assert res.server_cloud_filter is True and res.dropped_cloud == 1 and res.n_items == 3


KEEP_CASES = [  # (item, max cloud, expected reason)
    (make_item(1, cloud=30.0), 30, None),  # inclusive
    (make_item(1, cloud=30.01), 30, "cloud"),
    (make_item(1, cloud=None), 30, None),  # unknown cloud cover: kept, Fmask decides per pixel
    (make_item(1, cloud=90.0), None, None),
    (make_item(1, when="2021-10-01T00:00:01Z"), None, "season"),
    (make_item(1, when="2021-09-30T23:59:59Z"), None, None),
    (make_item(1, ring=[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]), None, "aoi"),
    ({**make_item(1), "collection": "HLSS30_2.0"}, None, "collection"),
]


@pytest.mark.parametrize("item,max_cc,expected", KEEP_CASES)
def test_keep_item_table(item, max_cc, expected):
    from core.area import Season, parse_aoi

    assert keep_item(item, max_cc, Season.from_any(SEASON), parse_aoi(AOI), "HLSL30_2.0") == expected


@pytest.mark.parametrize("value,expected", [("0", 0.0), ("2", 2.0), (None, None), ("soon", None)])
def test_parse_retry_after(value, expected):
    assert _parse_retry_after(value) == expected


def test_retry_after_http_date_and_backoff():
    assert 50 < _parse_retry_after(time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 60))) <= 60
    p = RetryPolicy(backoff_s=1, max_backoff_s=3)
    assert 1 <= p.delay(1, None) <= 1.1 and 2 <= p.delay(2, None) <= 2.2 and 3 <= p.delay(5, None) <= 3.3
    with pytest.raises(ValueError, match="unknown retry options"):
        RetryPolicy.from_any({"tries": 3})


def test_bad_parameters_are_clear(tmp_path):
    with pytest.raises(ValueError, match="max_cloud_cover"):
        search_hls(aoi=AOI, year=2021, output_dir=str(tmp_path), options=SearchOptions(max_cloud_cover=150))
    with pytest.raises(ValueError, match="year"):
        search_hls(aoi=AOI, output_dir=str(tmp_path))
