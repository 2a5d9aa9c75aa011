"""STAC searches under faults: the emulator's FaultProxy in front of the project's rustac STAC server.

At the stated rates (27 % of STAC requests: 5xx, 429 with Retry-After 0-1 s, resets before and during the
body, truncated bodies, answers slower than the timeout, repeated pages, HTML pages with 200 and 502) the
HLS and the GEDI search return exactly the fault-free result in each of 20 seeded trials. A permanent
outage, a refused connection and a server that never answers fail within the retry budget with an error
naming the endpoint and the last status; HTML or truncated JSON is an error naming the URL and the status.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

from compositing.contracts import SearchOptions
from compositing.search import SearchError, search_hls
from core.http import NON_JSON_ATTEMPTS, RetryPolicy
from labels.search import GediSearchError, search_granules
from sampleworld.emulator import FaultProxy, Faults
from sampleworld.stac import collection, feature_collection, gedi_item

AOI = [-121.80, 40.10, -121.74, 40.16]
SEASON = {"start": "2021-06-01", "end": "2021-09-30"}
RING = [(-122.0, 39.9), (-121.5, 39.9), (-121.5, 40.4), (-122.0, 40.4), (-122.0, 39.9)]
TRIALS = 20
# small waits for tests; read/connect timeouts well under the proxy's slow answers (1 s)
POLICY = {"max_attempts": 10, "backoff_s": 0.01, "max_backoff_s": 0.05, "budget_s": 30.0, "timeout_s": 0.5,
          "connect_timeout_s": 0.5}


def faults(seed: int) -> Faults:
    """27 % of requests faulty, every kind present; Retry-After 0 or 1 s, HTML pages as 200 or 502."""
    return Faults(seed=seed, error_5xx=0.04, statuses_5xx=(500, 502, 503, 504), throttle_429=0.03,
                  retry_after_s=seed % 2, reset_before=0.03, reset_mid=0.03, truncate=0.04, truncate_fraction=0.5,
                  slow=0.03, slow_s=1.0, repeat_page=0.04, html_error=0.03, html_status=502 if seed % 2 else 200)


def _hls_item(k: int) -> dict:
    tile = "10TEK" if k % 2 else "10TFK"
    doy = 152 + k % 110
    iid = f"HLS.L30.T{tile}.2021{doy:03d}T18{k % 60:02d}{k // 60:02d}.v2.0"
    dt = time.strftime("%Y-%m-%dT18:00:00Z", time.strptime(f"2021 {doy}", "%Y %j"))
    href = f"https://data.lpdaac.earthdatacloud.nasa.gov/lp-prod-protected/HLSL30.020/{iid}/{iid}"
    return {"type": "Feature", "stac_version": "1.0.0", "id": iid, "collection": "HLSL30_2.0",
            "properties": {"datetime": dt, "eo:cloud_cover": float(k % 100)},
            "geometry": {"type": "Polygon", "coordinates": [[list(p) for p in RING]]},
            "bbox": [-122.0, 39.9, -121.5, 40.4], "links": [],
            "assets": {b: {"href": f"{href}.{b}.tif"} for b in ("B02", "Fmask")}}


def _gedi_items() -> list[dict]:
    out = []
    for k in range(230):
        when = datetime(2021, 6, 1 + k % 28, k % 24, 0, 0)
        name = f"GEDI04_A_2021{152 + k % 28:03d}{k % 24:02d}0000_O{14000 + k:05d}_02_T0{1000 + k:04d}_02_002_02_V002.h5"
        out.append(gedi_item(name, RING, when, when, f"/data/gedi/{name}", f"G{k}-TEST"))
    return out


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory):
    """rustac serving 230 HLS items (two tiles; 10 pages of 25) and 230 GEDI items (3 pages of 100)."""
    from sampleworld.stac_server import serve_stac

    world = tmp_path_factory.mktemp("faultworld")
    (world / "stac").mkdir()
    docs = {"hls_collection.json": collection("HLSL30_2.0", "HLS", "t", [-180, -90, 180, 90],
                                              ["2013-04-11T00:00:00.000Z", None], "LPCLOUD"),
            "gedi_collection.json": collection("GEDI_L4A_AGB_Density_V2_1_2056_2.1", "GEDI", "t", [-180, -90, 180, 90],
                                               ["2019-04-18T00:00:00.000Z", None], "ORNL_CLOUD"),
            "hls_items.json": feature_collection([_hls_item(k) for k in range(230)]),
            "gedi_items.json": feature_collection(_gedi_items())}
    for name, doc in docs.items():
        (world / "stac" / name).write_text(json.dumps(doc))
    with serve_stac(world) as url:
        yield url


def _hls(url: str, out: Path, retries: dict | None = None) -> tuple[list[str], dict]:
    res = search_hls(aoi=AOI, season=SEASON, output_dir=str(out), retries=retries or POLICY,
                     options=SearchOptions(stac_url=url, limit=25))
    ids = [f["id"] for f in json.loads(Path(res.items_json).read_text())["features"]]
    return ids, {"n_items": res.n_items, "tiles": res.tiles, "ids_by_tile": res.ids_by_tile,
                 "dropped": (res.dropped_cloud, res.dropped_season, res.dropped_aoi), "repeated": res.repeated_pages}


@pytest.fixture(scope="module")
def expected(upstream: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The fault-free results, through the proxy without faults."""
    out = tmp_path_factory.mktemp("clean")
    with FaultProxy(upstream) as proxy:
        ids, summary = _hls(proxy.url, out / "hls")
        hrefs = search_granules(aoi=AOI, season=SEASON, stac_url=proxy.url, retries=POLICY)
    assert len(ids) == 230 and summary["tiles"] == ["10TEK", "10TFK"] and len(hrefs) == 230
    return {"hls": (ids, summary), "gedi": hrefs}


def test_hls_search_under_faults_equals_the_fault_free_result(upstream, expected, tmp_path) -> None:
    total: dict[str, int] = {}
    requests = 0
    for seed in range(TRIALS):
        with FaultProxy(upstream, faults(seed)) as proxy:
            ids, summary = _hls(proxy.url, tmp_path / f"hls{seed}")
            proxy.wait_idle()
            stats = proxy.stats()["hosts"]["stac"]
        assert ids == expected["hls"][0], f"seed {seed}"
        assert {**summary, "repeated": 0} == {**expected["hls"][1], "repeated": 0}, f"seed {seed}"
        requests += stats["requests"]
        for kind, n in stats["faults"].items():
            total[kind] = total.get(kind, 0) + n
    n_faults = sum(total.values())
    assert n_faults >= 0.15 * requests, (total, requests)  # the stated rate really hit the searches
    assert set(total) >= {"error_5xx", "throttle_429", "reset_before", "reset_mid", "truncate", "slow",
                          "repeat_page", "html_error"}, total


def test_gedi_search_under_faults_equals_the_fault_free_result(upstream, expected, tmp_path) -> None:
    total = 0
    for seed in range(TRIALS):
        with FaultProxy(upstream, faults(1000 + seed)) as proxy:
            hrefs = search_granules(aoi=AOI, season=SEASON, stac_url=proxy.url, retries=POLICY,
                                    output_dir=str(tmp_path / f"g{seed}"))
            proxy.wait_idle()
            total += sum(proxy.stats()["hosts"]["stac"]["faults"].values())
        assert hrefs == expected["gedi"], f"seed {seed}"
        saved = json.loads((tmp_path / f"g{seed}" / "search" / "gedi_items.json").read_text())
        assert len(saved["features"]) == len(expected["gedi"])
    assert total >= TRIALS  # on average more than one fault per search


# ------------------------------------------------------------------------------------ failing for good
def test_permanent_503_fails_within_the_budget_naming_endpoint_and_status(upstream, tmp_path) -> None:
    policy = {**POLICY, "max_attempts": 1000, "backoff_s": 0.2, "max_backoff_s": 0.2, "budget_s": 2.0}
    with FaultProxy(upstream, Faults(error_5xx=1.0, statuses_5xx=(503,))) as proxy:
        t0 = time.monotonic()
        with pytest.raises(SearchError, match=rf"{proxy.url}.*failed after \d+ attempts in [\d.]+ s \(retry budget "
                                              r"1000 attempts / 2 s\): last error HTTP 503"):
            search_hls(aoi=AOI, season=SEASON, output_dir=str(tmp_path), retries=policy,
                       options=SearchOptions(stac_url=proxy.url))
        assert time.monotonic() - t0 < 3.0
        with pytest.raises(GediSearchError, match=rf"{proxy.url}.*last error HTTP 503"):
            search_granules(aoi=AOI, season=SEASON, stac_url=proxy.url, retries=policy)
    assert not (tmp_path / "search").exists()


def test_refused_connection_fails_within_the_budget(tmp_path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: connections are refused
    url = f"http://127.0.0.1:{port}"
    t0 = time.monotonic()
    with pytest.raises(SearchError, match=rf"{url}.*retry budget .* 1.5 s\): last error ConnectionError"):
        search_hls(aoi=AOI, season=SEASON, output_dir=str(tmp_path), options=SearchOptions(stac_url=url),
                   retries={**POLICY, "max_attempts": 1000, "backoff_s": 0.1, "max_backoff_s": 0.1, "budget_s": 1.5})
    assert time.monotonic() - t0 < 2.5


def test_a_server_that_never_answers_fails_within_the_budget(tmp_path) -> None:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])  # accepted, never answered
            except OSError:
                pass

    threading.Thread(target=accept, daemon=True).start()
    url = f"http://127.0.0.1:{srv.getsockname()[1]}"
    try:
        for search in ("hls", "gedi"):
            t0 = time.monotonic()
            # a read timeout (5 s) longer than the budget (1.5 s): the budget still bounds the request
            policy = {**POLICY, "timeout_s": 5.0, "budget_s": 1.5, "max_attempts": 100}
            err = SearchError if search == "hls" else GediSearchError
            with pytest.raises(err, match=rf"{url}.*last error (ReadTimeout|ConnectionError).*timed out"):
                if search == "hls":
                    search_hls(aoi=AOI, season=SEASON, output_dir=str(tmp_path), retries=policy,
                               options=SearchOptions(stac_url=url))
                else:
                    search_granules(aoi=AOI, season=SEASON, stac_url=url, retries=policy)
            assert time.monotonic() - t0 < 2.5, search
    finally:
        stop.set()
        for c in held:
            c.close()
        srv.close()


@pytest.mark.parametrize(("fault", "message"), [
    (Faults(html_error=1.0, html_status=200), r"last error HTTP 200 with a body that is not JSON \(text/html"),
    (Faults(html_error=1.0, html_status=502), r"last error HTTP 502: '<html>"),
    (Faults(truncate=1.0), r"last error HTTP 200 with a truncated body \(\d+ bytes announced"),
])
def test_html_or_truncated_json_names_the_url_and_the_status(upstream, tmp_path, fault, message) -> None:
    with FaultProxy(upstream, fault) as proxy:
        with pytest.raises(SearchError, match=rf"GET {proxy.url}/? failed after 3 attempts.*{message}"):
            search_hls(aoi=AOI, season=SEASON, output_dir=str(tmp_path), retries={**POLICY, "max_attempts": 3},
                       options=SearchOptions(stac_url=proxy.url))


@pytest.mark.parametrize(("fault", "attempts"), [
    (Faults(html_error=1.0, html_status=200), NON_JSON_ATTEMPTS),  # a portal's page: a few tries, not the budget
    (Faults(html_error=1.0, html_status=502), 6),  # a 5xx is transient: every attempt of the policy
])
def test_a_2xx_page_that_is_not_json_gets_fewer_attempts(upstream, tmp_path, fault, attempts) -> None:
    with FaultProxy(upstream, fault) as proxy:
        with pytest.raises(SearchError, match=rf"GET {proxy.url}/? failed after {attempts} attempts"):
            search_hls(aoi=AOI, season=SEASON, output_dir=str(tmp_path), retries={**POLICY, "max_attempts": 6},
                       options=SearchOptions(stac_url=proxy.url))


def test_the_default_budget_bounds_a_dead_endpoint_to_two_minutes() -> None:
    p = RetryPolicy()
    assert p.budget_s <= 120 and p.connect_timeout_s > 0 and p.timeout_s > 0


def test_a_failed_search_leaves_the_previous_record(upstream, expected, tmp_path) -> None:
    ids, _ = _hls(upstream, tmp_path)
    before = {p.name: p.read_bytes() for p in (tmp_path / "search").iterdir()}
    with FaultProxy(upstream, Faults(error_5xx=1.0)) as proxy, pytest.raises(SearchError):
        search_hls(aoi=AOI, season=SEASON, output_dir=str(tmp_path), refresh=True,
                   retries={**POLICY, "max_attempts": 2}, options=SearchOptions(stac_url=proxy.url, limit=25))
    with pytest.raises(SearchError, match=r"found no usable item .* in 2020-06-01_2020-09-30: 0 returned"):
        search_hls(aoi=AOI, season={"start": "2020-06-01", "end": "2020-09-30"}, output_dir=str(tmp_path),
                   retries=POLICY, options=SearchOptions(stac_url=upstream, limit=25))  # an empty result is no result
    assert {p.name: p.read_bytes() for p in (tmp_path / "search").iterdir()} == before
    assert ids == expected["hls"][0]
