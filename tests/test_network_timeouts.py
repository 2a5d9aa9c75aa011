"""Every network read has a connect and a read timeout: GDAL (HLS COGs) and the GEDI range reader against a
server that accepts connections and never answers."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from compositing.reader import RasterioReader
from core.earthdata import gdal_options
from core.http import RetryPolicy
from core.reads import READ_RETRY_ENV, EndpointDownError
from labels.sources import open_source

NAME = "GEDI04_A_2021200051430_O25001_02_T01234_02_004_02_V002.h5"


@pytest.fixture()
def silent() -> Iterator[str]:
    """``http://127.0.0.1:<port>``: accepts every connection and never sends a byte."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    srv.settimeout(0.1)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                pass

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{srv.getsockname()[1]}"
    stop.set()
    for c in held:
        c.close()
    srv.close()


def test_gdal_settings_carry_connect_stall_and_request_timeouts() -> None:
    for for_read in (False, True):
        opts = gdal_options("https://example.invalid/HLS.B04.tif", for_read=for_read)  # any remote href
        assert opts["GDAL_HTTP_CONNECTTIMEOUT"] == "10" and opts["GDAL_HTTP_TIMEOUT"] == "120"
        assert opts["GDAL_HTTP_LOW_SPEED_TIME"] == "30" and opts["GDAL_HTTP_LOW_SPEED_LIMIT"] == "1"


def test_gdal_gives_up_on_a_silent_server(silent: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same keys, scaled down: GDAL honours them (the defaults differ only in seconds); with one attempt
    allowed (``AGB_READ_RETRY``), the silent endpoint is reported as down, naming it and GDAL's reason."""
    monkeypatch.setenv(READ_RETRY_ENV, json.dumps({"max_attempts": 1}))
    scaled = {**gdal_options(f"{silent}/x.tif"), "GDAL_HTTP_TIMEOUT": "2", "GDAL_HTTP_LOW_SPEED_TIME": "1",
              "GDAL_HTTP_MAX_RETRY": "0"}
    reader = RasterioReader(open_options=scaled)
    href = f"{silent}/HLS.L30.T10TEK.2021182T180000.v2.0.B04.tif"
    t0 = time.monotonic()
    with pytest.raises(EndpointDownError, match=r"is not answering: .*B04\.tif: cannot open: .*(timed out|too slow)"):
        reader.info(href)
    assert time.monotonic() - t0 < 4


def test_gedi_range_reader_gives_up_on_a_silent_server(silent: str) -> None:
    session = requests.Session()
    session.trust_env = False
    t0 = time.monotonic()
    one = RetryPolicy(max_attempts=1, timeout_s=0.5, connect_timeout_s=0.5)
    with pytest.raises(EndpointDownError, match=rf"is not answering: {silent}/{NAME}: .*ReadTimeout"):
        open_source(f"{silent}/{NAME}", session, policy=one)
    assert time.monotonic() - t0 < 2
