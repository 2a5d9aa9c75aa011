"""The command line for people: one paragraph per failure (no traceback on the console, the traceback in a
log file whose path is printed, ``--debug`` shows it), parameter errors naming the parameter with an
example, ``run <flow> --help`` listing every parameter, and SIGTERM stopping a run within 30 s, cleanly."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from core.files import temp_sibling
from flows.cli_errors import RunLog, explain
from flows.cli_signals import remove_own_temp_files

REPO = Path(__file__).resolve().parents[1]
BOX = [-122.1, 44.2, -121.9, 44.35]
pytestmark = pytest.mark.allow_hosts(["127.0.0.1"])


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("PREFECT_API_URL", None)  # the run's own ephemeral server, as a user gets
    return env


def _run(*args: str, timeout: int = 400) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flows", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=_env())


class _Server:
    """A loopback HTTP server: ``html`` answers every GET with an HTML page (a proxy's or a portal's),
    ``slow`` accepts the request and answers nothing for 10 minutes."""

    def __init__(self, kind: str) -> None:
        self.hit = threading.Event()
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                outer.hit.set()
                if kind == "slow":
                    time.sleep(600)
                body = b"<!DOCTYPE html><html><body><h1>Sign in</h1></body></html>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/stac/LPCLOUD"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def html_stac() -> Iterator[str]:
    s = _Server("html")
    yield s.url
    s.close()


def _assert_no_traceback(text: str) -> None:
    assert "Traceback" not in text and 'File "' not in text, text[-3000:]


@pytest.mark.parametrize(("case", "expect"), [
    ("missing_aoi", ["aoi: the GeoJSON file", "does not exist", "example"]),
    ("output_dir_is_file", ["output_dir:", "is not a folder", "example"]),
    ("bad_type", ["year: Input should be a valid integer", 'got "twenty"', "example: -p year=2024"]),
])
def test_bad_inputs_fail_before_any_run_with_one_paragraph(case, expect, tmp_path, flows_main) -> None:
    out = tmp_path / "out"
    args = ["-p", f"aoi={json.dumps(BOX)}", "-p", "year=2024", "-p", f"output_dir={out}"]
    if case == "missing_aoi":
        args[1] = f'aoi="{tmp_path / "area.geojson"}"'
    elif case == "output_dir_is_file":
        out.write_text("not a folder")
    else:
        args[3] = "year=twenty"
    t0 = time.monotonic()
    res = flows_main("run", "hls-composite", *args)
    assert res.returncode == 2, res.stderr[-2000:]
    _assert_no_traceback(res.stderr + res.stdout)
    for text in expect:
        assert text in res.stderr, res.stderr
    assert "Starting temporary server" not in res.stderr  # refused before Prefect starts
    assert time.monotonic() - t0 < 60
    assert case == "output_dir_is_file" or not out.exists()


def test_a_failing_run_prints_one_paragraph_and_logs_the_traceback(html_stac, tmp_path) -> None:
    out = tmp_path / "out"
    res = _run("run", "hls-composite", "-p", f"aoi={json.dumps(BOX)}", "-p", "year=2024", "-p",
               f"stac_url={html_stac}", "-p", f"output_dir={out}")
    assert res.returncode == 1, res.stderr[-3000:]
    _assert_no_traceback(res.stderr + res.stdout)  # neither ours nor Prefect's logger's
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, res.stderr[-3000:]
    para = lines[0]
    assert "flow hls-composite failed" in para and "127.0.0.1" in para and "HTML" in para.upper(), para
    log = Path(re.search(r"full traceback is in (\S+) ", para).group(1))  # type: ignore[union-attr]
    assert log.is_file() and log.parent == out / "logs", log
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "Encountered exception" in text  # Prefect's too


def test_debug_shows_the_traceback(html_stac, tmp_path, prefect_harness, capfd) -> None:
    from flows.__main__ import main

    rc = main(["run", "hls-composite", "-p", f"aoi={json.dumps(BOX)}", "-p", "year=2024", "-p",
               f"stac_url={html_stac}", "-p", f"output_dir={tmp_path / 'out'}", "--debug"])
    err = capfd.readouterr().err
    assert rc == 1 and "Traceback (most recent call last)" in err and "error: flow hls-composite failed" in err


def test_the_log_goes_to_a_temp_folder_when_output_dir_is_unusable(tmp_path) -> None:
    bad = tmp_path / "file"
    bad.write_text("x")
    exc = NotADirectoryError(f"output_dir {bad} is a file")
    with RunLog("hls-composite", str(bad)) as log:
        path = log.keep(exc)
    assert path.parent.name == "agb-logs" and "NotADirectoryError" in path.read_text()
    msg = explain("hls-composite", exc, path)
    assert str(bad) in msg and "Choose an `output_dir`" in msg and str(path) in msg
    path.unlink()


def test_run_help_lists_every_parameter_with_defaults() -> None:
    from flows.cli_help import iter_params
    from flows.params import BiomassPipelineParams

    res = _run("run", "biomass-pipeline", "--help", timeout=120)  # the one subprocess here: the real entry point
    assert res.returncode == 0, res.stderr
    names = [name for name, *_ in iter_params(BiomassPipelineParams)]
    assert {"aoi", "output_dir", "hls.stac_url", "training.epochs", "sample_world.size"} <= set(names)
    for name in names:
        assert re.search(rf"^  {re.escape(name)} \(", res.stdout, re.M), name
    assert re.search(r"^  training\.epochs \(int, default \d+\)\n +\S", res.stdout, re.M), res.stdout
    assert "Starting temporary server" not in res.stderr


def test_parameter_errors_name_the_parameter_and_show_an_example(tmp_path, flows_main) -> None:
    res = flows_main("run", "biomass-pipeline", "-p", f"output_dir={tmp_path}", "-p", "training.epochs=abc",
                     "-p", "hls.max_cloud_cover=300")
    assert res.returncode == 2
    assert re.search(r"training\.epochs: .*integer.*example: -p training\.epochs=\d+", res.stderr), res.stderr
    assert re.search(r"hls\.max_cloud_cover: .*100.*example: -p hls\.max_cloud_cover=", res.stderr), res.stderr


def test_remove_own_temp_files_only_touches_this_process(tmp_path) -> None:
    pid = os.getpid()
    mine = tmp_path / "a" / f".x.tif.tmp-{pid}"
    suffixed = [tmp_path / "a" / f".images.npy.tmp-{pid}.npy",  # every temp name of the project, suffixes
                tmp_path / f".c.tif.tmp-{pid}.scratch.vrt",  # included (they were left on SIGTERM)
                temp_sibling(tmp_path / "q" / "map.png", ext=".png")]
    staged = tmp_path / f".d.staged-{pid}"
    others = [tmp_path / ".x.tif.tmp-1", tmp_path / f".x.tif.tmp-{pid}1", tmp_path / f"x.tif.tmp-{pid}"]
    for p in (mine, *suffixed, *others):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x")
    (staged / "inner").mkdir(parents=True)
    assert sorted(remove_own_temp_files(str(tmp_path))) == sorted([mine, *suffixed, staged])
    assert all(p.exists() for p in others) and not mine.exists() and not staged.exists()


def test_sigterm_stops_a_run_within_30_s_cleanly(tmp_path) -> None:
    slow = _Server("slow")
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "flows", "run", "hls-composite", "-p", f"aoi={json.dumps(BOX)}",
                             "-p", "year=2024", "-p", f"stac_url={slow.url}", "-p", f"output_dir={out}"],
                            cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert slow.hit.wait(300), "the flow never reached the STAC server"
        time.sleep(1.0)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
        slow.close()
    assert took < 30, took
    assert proc.returncode == 143, (proc.returncode, stderr[-3000:])
    assert "stopped: flow hls-composite was stopped by SIGTERM" in stderr, stderr[-3000:]
    _assert_no_traceback(stderr + stdout)
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name or ".staged-" in p.name]


class _Tty:
    def __init__(self, tty: bool) -> None:
        self.tty, self.text = tty, ""

    def isatty(self) -> bool:
        return self.tty

    def write(self, s: str) -> None:
        self.text += s

    def flush(self) -> None:
        pass


@pytest.mark.parametrize("tty", [True, False])
def test_progress_bars_only_on_a_terminal(tty, monkeypatch) -> None:
    from flows.artifacts import Progress

    out, err = _Tty(tty), _Tty(False)
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    p = Progress("hls-composite-progress", "MGRS tiles composited")  # outside a flow run: no artifact
    p.update(0.5)
    p.update(1.0)
    if tty:
        assert "MGRS tiles composited [" in err.text and " 50.0 %" in err.text and err.text.endswith("100.0 %\n")
    else:
        assert err.text == "" and out.text == ""
