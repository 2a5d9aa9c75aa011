"""The Earthdata emulator (sampleworld.emulator) as clients we did not write see it: requests (raw, with
and without redirects, with a netrc), http.client on one keep-alive connection, and the subprocess mode.
GDAL and pystac-client are in test_emulator_clients.py."""

from __future__ import annotations

import calendar
import collections
import http.client
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from sampleworld.emulator import EarthdataEmulator, EmulatorConfig, Faults, LinkShape
from sampleworld.emulator.files import ByteRange, parse_range
from sampleworld.emulator.link import FaultDraw, TokenBucket

pytestmark = pytest.mark.allow_hosts(["127.0.0.1", "127.0.0.2", "127.0.0.3"])

USER, PASSWORD, TOKEN = "alice", "pw-S3CRET-alice", "tok-S3CRET-0123"
SIZE = 3_000_000
REL = "HLSL30.020/HLS.L30.T10TEK.2023180T185919.v2.0/HLS.L30.T10TEK.2023180T185919.v2.0.B04.tif"


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two DAAC roots: an LP DAAC-like tree with one 3 MB object and an ORNL one with a small file."""
    base = tmp_path_factory.mktemp("emu")
    lp, ornl = base / "lp", base / "ornl"
    (lp / REL).parent.mkdir(parents=True)
    (lp / REL).write_bytes(os.urandom(SIZE))
    (ornl / "gedi").mkdir(parents=True)
    (ornl / "gedi" / "GEDI04_A.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"x" * 1000)
    return {"lp-prod-protected": lp, "ornl-cumulus-prod-protected": ornl}


def _emu(roots: dict[str, Path], **kw: object) -> EarthdataEmulator:
    return EarthdataEmulator(roots, users={USER: PASSWORD}, tokens=[TOKEN], **kw)


@pytest.fixture(scope="module")
def emu(roots: dict[str, Path]):
    with _emu(roots) as e:
        yield e


@pytest.fixture
def raw() -> requests.Session:
    """A requests session that ignores ~/.netrc and proxies of this machine."""
    s = requests.Session()
    s.trust_env = False
    return s


def _bearer(emu: EarthdataEmulator, raw: requests.Session, method: str = "GET") -> str:
    r = raw.request(method, emu.data_url("lp-prod-protected", REL), allow_redirects=False,
                    headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 307, r.text
    return r.headers["Location"]


def test_hosts_are_three_loopback_addresses_and_earthdata_hosts_exclude_signed(emu: EarthdataEmulator) -> None:
    hosts = {urlsplit(u).hostname for u in (emu.login_url, emu.data_base_url, emu.signed_base_url)}
    assert hosts == {"127.0.0.1", "127.0.0.2", "127.0.0.3"}
    assert emu.hosts == [urlsplit(emu.login_url).netloc, urlsplit(emu.data_base_url).netloc]


def test_unauthenticated_request_is_sent_to_login_which_challenges(emu, raw) -> None:
    url = emu.data_url("lp-prod-protected", REL)
    r = raw.get(url, allow_redirects=False)
    assert r.status_code == 302
    loc = urlsplit(r.headers["Location"])
    q = {k: v[0] for k, v in parse_qs(loc.query).items()}
    assert f"{loc.scheme}://{loc.netloc}{loc.path}" == emu.login_url + "/oauth/authorize"
    assert q["redirect_uri"] == emu.data_base_url + "/login" and q["response_type"] == "code"
    assert q["state"] == urlsplit(url).path and q["app_type"] == "401"
    followed = raw.get(url)  # requests follows to the login host, which asks for Basic credentials
    assert followed.status_code == 401 and [h.status_code for h in followed.history] == [302]
    assert followed.headers["WWW-Authenticate"].startswith("Basic realm=")
    wrong = raw.get(r.headers["Location"], auth=(USER, "wrong"), allow_redirects=False)
    assert wrong.status_code == 401


def test_basic_login_round_trip_sets_cookie_then_307_then_206(emu, roots, raw) -> None:
    url = emu.data_url("lp-prod-protected", REL)
    authorize = raw.get(url, allow_redirects=False).headers["Location"]
    r = raw.get(authorize, auth=(USER, PASSWORD), allow_redirects=False)
    assert r.status_code == 302 and r.headers["Location"].startswith(emu.data_base_url + "/login?code=")
    back = raw.get(r.headers["Location"], allow_redirects=False)
    assert back.status_code == 302 and back.headers["Location"] == urlsplit(url).path
    assert raw.cookies.get("asf-urs")
    again = raw.get(r.headers["Location"], allow_redirects=False)  # the code is single-use
    assert again.status_code == 400
    hop = raw.get(url, allow_redirects=False)
    assert hop.status_code == 307 and hop.headers["Location"].startswith(emu.signed_base_url + "/")
    part = raw.get(hop.headers["Location"], headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == (roots["lp-prod-protected"] / REL).read_bytes()[100:200]


def test_requests_with_a_netrc_follows_the_whole_chain(emu, roots, tmp_path, monkeypatch) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine 127.0.0.1 login {USER} password {PASSWORD}\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    emu.reset_stats()
    r = requests.get(emu.data_url("lp-prod-protected", REL), headers={"Range": "bytes=0-9"})
    assert r.status_code == 206 and r.content == (roots["lp-prod-protected"] / REL).read_bytes()[:10]
    assert [h.status_code for h in r.history] == [302, 302, 302, 307]
    assert emu.wait_idle()
    hosts = emu.stats()["hosts"]
    assert hosts["login"]["auth_schemes"] == {"Basic": 1}
    assert hosts["signed"]["with_authorization"] == 0 and hosts["signed"]["with_cookie"] == 0


def test_bearer_gets_307_with_cache_control_and_cookie(emu, raw, roots) -> None:
    r = raw.get(emu.data_url("lp-prod-protected", REL), headers={"Authorization": f"Bearer {TOKEN}"},
                allow_redirects=False)
    assert r.status_code == 307 and r.headers["Cache-Control"] == "private, max-age=3540"
    q = parse_qs(urlsplit(r.headers["Location"]).query)
    assert q["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"] and q["X-Amz-Expires"] == ["3600"]
    assert len(q["X-Amz-Signature"][0]) == 64 and q["X-Amz-Credential"][0].endswith("/s3/aws4_request")
    assert "asf-urs=" in r.headers["Set-Cookie"]
    emu.reset_stats()
    full = raw.get(emu.data_url("ornl-cumulus-prod-protected", "gedi/GEDI04_A.h5"),
                   headers={"Authorization": f"Bearer {TOKEN}"})  # requests drops it on the host change
    assert full.status_code == 200 and full.content.startswith(b"\x89HDF")
    assert emu.wait_idle()
    assert emu.stats()["hosts"]["signed"]["with_authorization"] == 0


@pytest.mark.parametrize("header,status", [(f"Bearer {TOKEN}x", 401), ("Bearer", 400),
                                           ("Token", 400), ("Basic YWxpY2U6eA==", 302)])
def test_data_host_refusals(emu, raw, header: str, status: int) -> None:
    r = raw.get(emu.data_url("lp-prod-protected", REL), headers={"Authorization": header},
                allow_redirects=False)
    assert r.status_code == status


def test_unknown_prefix_404_before_auth_and_missing_key_404_after(emu, raw) -> None:
    assert raw.get(emu.data_base_url + "/nope/x.tif", allow_redirects=False).status_code == 404
    missing = emu.data_url("lp-prod-protected", "HLSL30.020/none.tif")
    assert raw.get(missing, allow_redirects=False).status_code == 302
    assert raw.get(missing, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 404


def test_signed_host_rejects_any_authorization_header_with_s3_body(emu, raw) -> None:
    loc = _bearer(emu, raw)
    r = raw.get(loc, headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 400 and r.headers["Content-Type"] == "application/xml"
    assert "<Code>InvalidArgument</Code>" in r.text
    assert ("Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query "
            "string parameter or the Authorization header should be specified") in r.text
    assert TOKEN not in r.text


def test_bad_or_missing_signature_and_wrong_method_403(emu, raw) -> None:
    loc = _bearer(emu, raw)
    tampered = loc[:-1] + ("0" if loc[-1] != "0" else "1")
    r = raw.get(tampered)
    assert r.status_code == 403 and "<Code>SignatureDoesNotMatch</Code>" in r.text
    assert raw.get(loc.split("?")[0]).status_code == 403
    assert raw.head(loc).status_code == 403  # signed for GET; SigV4 signs the method
    other = loc.replace("/lp-prod-protected/", "/ornl-cumulus-prod-protected/", 1)
    assert raw.get(other).status_code == 403  # the path is signed too


def test_expired_url_403_then_reresolving_through_the_original_url_works(roots, raw) -> None:
    with _emu(roots, signed_ttl_s=2) as emu:  # X-Amz-Date has whole seconds: valid 1-2 s from now
        loc = _bearer(emu, raw)
        assert raw.get(loc, headers={"Range": "bytes=0-0"}).status_code == 206
        amz_date = parse_qs(urlsplit(loc).query)["X-Amz-Date"][0]
        expires = calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ")) + 2
        time.sleep(max(0.0, expires - time.time()) + 0.05)
        r = raw.get(loc, headers={"Range": "bytes=0-0"})
        assert r.status_code == 403 and "<Message>Request has expired</Message>" in r.text
        assert "<X-Amz-Expires>2</X-Amz-Expires>" in r.text
        assert raw.get(_bearer(emu, raw), headers={"Range": "bytes=0-0"}).status_code == 206


def test_expire_signed_urls_knob(emu, raw) -> None:
    loc = _bearer(emu, raw)
    emu.expire_signed_urls()
    assert "Request has expired" in raw.get(loc).text
    assert raw.get(_bearer(emu, raw), headers={"Range": "bytes=0-0"}).status_code == 206


def test_head_behaves_like_get(emu, raw) -> None:
    assert raw.head(emu.data_url("lp-prod-protected", REL), allow_redirects=False).status_code == 302
    loc = _bearer(emu, raw, "HEAD")
    r = raw.head(loc)
    assert r.status_code == 200 and r.content == b"" and r.headers["Content-Length"] == str(SIZE)
    assert r.headers["Accept-Ranges"] == "bytes" and r.headers["ETag"].startswith('"')
    part = raw.head(loc, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.headers["Content-Range"] == f"bytes 10-19/{SIZE}"
    assert raw.get(loc).status_code == 403  # a HEAD-signed URL does not serve GET (TEA signs HEAD apart)


@pytest.mark.parametrize("header,status,start,stop", [
    ("bytes=0-99", 206, 0, 100), ("bytes=2999990-", 206, 2999990, SIZE), ("bytes=-5", 206, SIZE - 5, SIZE),
    ("bytes=10-5", 200, 0, SIZE), ("bytes=0-1,5-6", 200, 0, SIZE), ("bytes=0-99999999", 206, 0, SIZE),
    (f"bytes={SIZE}-", 416, 0, 0), ("items=0-5", 200, 0, SIZE)])
def test_signed_host_ranges(emu, raw, roots, header: str, status: int, start: int, stop: int) -> None:
    r = raw.get(_bearer(emu, raw), headers={"Range": header})
    assert r.status_code == status
    if status == 416:
        assert r.headers["Content-Range"] == f"bytes */{SIZE}" and "<Code>InvalidRange</Code>" in r.text
        return
    assert r.content == (roots["lp-prod-protected"] / REL).read_bytes()[start:stop]
    assert int(r.headers["Content-Length"]) == stop - start


def test_data_host_answers_416_for_a_range_beyond_the_end(emu, raw) -> None:
    r = raw.get(emu.data_url("lp-prod-protected", REL), allow_redirects=False,
                headers={"Authorization": f"Bearer {TOKEN}", "Range": f"bytes={SIZE + 5}-"})
    assert r.status_code == 416


def test_many_range_reads_on_one_keep_alive_connection(emu, raw, roots) -> None:
    loc = urlsplit(_bearer(emu, raw))
    conn = http.client.HTTPConnection(loc.hostname, loc.port, timeout=10)
    chunks, step, sock = [], 256 * 1024, None
    for start in range(0, SIZE, step):
        conn.request("GET", f"{loc.path}?{loc.query}", headers={"Range": f"bytes={start}-{start + step - 1}"})
        r = conn.getresponse()
        assert r.status == 206
        chunks.append(r.read())
        sock = sock or conn.sock
        assert conn.sock is sock  # the server kept the connection open
    conn.close()
    assert b"".join(chunks) == (roots["lp-prod-protected"] / REL).read_bytes()


def test_many_concurrent_keep_alive_connections(emu, raw, roots) -> None:
    loc = urlsplit(_bearer(emu, raw))
    blob = (roots["lp-prod-protected"] / REL).read_bytes()
    bad: list[str] = []
    gate = threading.Barrier(48)

    def worker(i: int) -> None:
        conn = http.client.HTTPConnection(loc.hostname, loc.port, timeout=30)
        gate.wait()  # all 48 connections open at once
        for k in range(4):
            start = (i * 4 + k) * 10_000
            conn.request("GET", f"{loc.path}?{loc.query}", headers={"Range": f"bytes={start}-{start + 9999}"})
            r = conn.getresponse()
            if r.status != 206 or r.read() != blob[start:start + 10_000]:
                bad.append(f"{i}/{k}: {r.status}")
        conn.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(48)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert bad == []


def test_find_or_create_token_then_bearer(emu, raw) -> None:
    r = raw.post(emu.login_url + "/api/users/find_or_create_token", auth=(USER, PASSWORD))
    tok = r.json()
    assert r.status_code == 200 and tok["token_type"] == "Bearer" and tok["expiration_date"]
    hop = raw.get(emu.data_url("lp-prod-protected", REL), allow_redirects=False,
                  headers={"Authorization": f"Bearer {tok['access_token']}"})
    assert hop.status_code == 307
    assert raw.post(emu.login_url + "/api/users/find_or_create_token").status_code == 401


def test_303_and_301_variants_as_in_teas_source(roots, raw, tmp_path, monkeypatch) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine 127.0.0.1 login {USER} password {PASSWORD}\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    with _emu(roots, redirect_status=303, login_redirect_status=301) as emu:
        r = requests.get(emu.data_url("lp-prod-protected", REL), headers={"Range": "bytes=0-3"})
        assert r.status_code == 206 and [h.status_code for h in r.history] == [302, 302, 301, 303]


def test_request_log_never_holds_credentials(emu, raw) -> None:
    _bearer(emu, raw)  # sets the session cookie
    cookie = raw.cookies.get("asf-urs")
    assert cookie and raw.get(emu.data_url("lp-prod-protected", REL), allow_redirects=False).status_code == 307
    text = json.dumps([emu.stats(), emu.records()])
    assert "Bearer" in text and "asf-urs" in text and "Basic" in text
    for secret in (PASSWORD, TOKEN, cookie, "code=", "X-Amz-Signature="):
        assert secret not in text


# --- faults and link shape ------------------------------------------------------------------------

def _classify(host: str, port: int, target: str, timeout: float) -> str:
    """What a client sees for one GET: ok, 5xx, 429 (with Retry-After), reset, truncated or timeout."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", target, headers={"Range": "bytes=0-65535"})
        r = conn.getresponse()
        body = r.read()
        if r.status == 429:
            return "throttle_429" if r.getheader("Retry-After") == "2" else "429-without-retry-after"
        if r.status >= 500:
            return "error_5xx"
        return "ok" if r.status == 206 and len(body) == 65536 else f"bad-{r.status}"
    except http.client.IncompleteRead:
        return "truncate"
    except TimeoutError:
        return "slow"
    except (ConnectionError, http.client.RemoteDisconnected):
        return "reset"
    finally:
        conn.close()


@pytest.mark.parametrize("knob,rate,n", [("error_5xx", 0.2, 100), ("throttle_429", 0.2, 100),
                                         ("reset_before", 0.2, 100), ("reset_mid", 0.2, 100),
                                         ("truncate", 0.2, 100), ("slow", 0.1, 40)])
def test_fault_knob_rate_is_seeded_and_reported(roots, raw, knob: str, rate: float, n: int) -> None:
    faults = Faults(seed=7, retry_after_s=2, slow_s=1.0, **{knob: rate})
    seen = []
    for _ in range(2):
        with _emu(roots, faults={"signed": faults}) as emu:
            loc = urlsplit(_bearer(emu, raw))
            timeout = 0.5 if knob == "slow" else 10.0
            out = [_classify(loc.hostname, loc.port, f"{loc.path}?{loc.query}", timeout) for _ in range(n)]
            counts = collections.Counter(out)
            expected = "reset" if knob.startswith("reset") else knob
            assert set(counts) <= {"ok", expected}, counts
            assert emu.wait_idle()  # slow ones finish
            assert counts[expected] == emu.stats()["hosts"]["signed"]["faults"].get(knob, 0)
            assert abs(counts[expected] - rate * n) <= 4 * (rate * (1 - rate) * n) ** 0.5 + 1
            assert emu.stats()["hosts"]["data"]["faults"] == {}  # knobs are per host
            seen.append(out)
    assert seen[0] == seen[1]  # same seed, same request sequence -> same faults


def test_fault_draw_table() -> None:
    f = Faults(seed=3, error_5xx=0.3, throttle_429=0.3)
    a, b = FaultDraw(f, "signed"), FaultDraw(f, "signed")
    seq = [a.draw()[0] for _ in range(1000)]
    assert seq == [b.draw()[0] for _ in range(1000)]
    c = collections.Counter(seq)
    assert 250 < c["error_5xx"] < 350 and 250 < c["throttle_429"] < 350 and 330 < c[None] < 470
    assert FaultDraw(f, "data").draw()[0] == FaultDraw(f, "data").draw()[0]
    with pytest.raises(ValueError, match="sum <= 1"):
        Faults(error_5xx=0.6, truncate=0.6)


def _min_get_s(raw: requests.Session, url: str, n: int = 8) -> float:
    """The fastest of ``n`` small range GETs (load on the machine only adds time, so the minimum is the
    request's own cost; a median failed this test under a loaded CI machine)."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        assert raw.get(url, headers={"Range": "bytes=0-9"}).status_code == 206
        times.append(time.perf_counter() - t0)
    return min(times)


def test_latency_per_request(emu, roots, raw) -> None:
    base = _min_get_s(raw, _bearer(emu, raw))
    with _emu(roots, link={"signed": LinkShape(latency_s=0.08)}) as shaped:
        added = _min_get_s(raw, _bearer(shaped, raw)) - base
    assert 0.075 <= added <= 0.12  # once per request, not per hop or per write


def test_bandwidth_caps_per_connection_and_aggregate(roots, raw) -> None:
    link = LinkShape(conn_bytes_per_s=20e6, total_bytes_per_s=30e6, burst_bytes=64 * 1024)
    with _emu(roots, link={"signed": link}) as emu:
        loc = _bearer(emu, raw)
        t0 = time.perf_counter()
        assert len(raw.get(loc).content) == SIZE
        one = SIZE / (time.perf_counter() - t0)
        assert 0.6 * 20e6 < one < 1.1 * 20e6  # the cap holds; a loaded machine may lag behind it
        got: list[int] = []

        def pull() -> None:
            s = requests.Session()
            s.trust_env = False
            got.append(len(s.get(loc).content))

        threads = [threading.Thread(target=pull) for _ in range(4)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        agg = sum(got) / (time.perf_counter() - t0)
        assert sum(got) == 4 * SIZE and 0.6 * 30e6 < agg < 1.1 * 30e6


def test_token_bucket_table() -> None:
    b = TokenBucket(rate=1e6, burst=100_000)
    t0 = time.perf_counter()
    b.take(100_000)  # the burst passes at once
    assert time.perf_counter() - t0 < 0.02
    b.take(200_000)  # then 1 MB/s
    assert 0.18 < time.perf_counter() - t0 < 0.3


@pytest.mark.parametrize("header,expected", [
    (None, None), ("bytes=0-9", ByteRange(0, 9, 100)), ("bytes=90-", ByteRange(90, 99, 100)),
    ("bytes=-10", ByteRange(90, 99, 100)), ("bytes=-200", ByteRange(0, 99, 100)),
    ("bytes=50-500", ByteRange(50, 99, 100)), ("bytes=100-", "unsatisfiable"), ("bytes=-0", "unsatisfiable"),
    ("bytes=9-0", None), ("bytes=0-1,4-5", None), ("bytes=x-y", None)])
def test_parse_range_table(header: str | None, expected: object) -> None:
    assert parse_range(header, 100) == expected


def test_config_round_trips_through_json_and_rejects_typos(roots) -> None:
    cfg = EmulatorConfig(roots={k: str(v) for k, v in roots.items()}, faults={"data": Faults(error_5xx=0.1)},
                         link={"signed": LinkShape(latency_s=0.01)})
    assert EmulatorConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="unknown keys"):
        EmulatorConfig.from_dict({"roots": {"a": "/tmp"}, "signed_tll_s": 3})
    with pytest.raises(ValueError, match="unknown host kinds"):
        EmulatorConfig(roots={"a": "/tmp"}, faults={"s3": Faults()})


def test_subprocess_mode_serves_counts_and_leaves_nothing_behind(roots, raw, tmp_path) -> None:
    stats_file = tmp_path / "stats.json"
    with _emu(roots, mode="process", stats_file=stats_file) as emu:
        pid = emu.pid
        assert pid and pid != os.getpid()
        r = raw.get(emu.data_url("lp-prod-protected", REL), headers={"Authorization": f"Bearer {TOKEN}",
                                                                      "Range": "bytes=0-999"})
        assert r.status_code == 206 and len(r.content) == 1000
        assert emu.wait_idle()
        hosts = emu.stats()["hosts"]
        assert hosts["signed"]["statuses"] == {"206": 1} and hosts["signed"]["with_authorization"] == 0
        assert hosts["signed"]["body_bytes"] == 1000 and hosts["data"]["auth_schemes"] == {"Bearer": 1}
        assert [r["status"] for r in emu.records("data")] == [307]
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    final = json.loads(stats_file.read_text())
    assert final["hosts"]["signed"]["requests"] == 1


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie left for a non-reaping init counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def test_cli_child_exits_when_its_parent_dies_and_rejects_bad_config(roots, tmp_path) -> None:
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(EmulatorConfig(roots={k: str(v) for k, v in roots.items()}).to_dict()))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    launcher = ("import os, subprocess, sys\n"
                "p = subprocess.Popen([sys.executable, '-m', 'sampleworld.emulator', 'serve', '--config', "
                f"{str(cfg)!r}, '--parent-pid', str(os.getpid())], stdout=subprocess.PIPE)\n"
                "print(p.stdout.readline().decode().strip(), flush=True)\n")
    out = subprocess.run([sys.executable, "-c", launcher], capture_output=True, text=True, env=env, timeout=60)
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info["data_base_url"].startswith("http://127.0.0.2:")
    deadline = time.monotonic() + 10
    while _alive(info["pid"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(info["pid"])  # orphaned: it noticed and stopped
    cfg.write_text(json.dumps({"roots": {"a": "/tmp"}, "signed_tll_s": 3}))
    bad = subprocess.run([sys.executable, "-m", "sampleworld.emulator", "serve", "--config", str(cfg)],
                         capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 2 and "signed_tll_s" in bad.stderr and bad.stdout == ""
