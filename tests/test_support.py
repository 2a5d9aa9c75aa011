"""Earthdata credentials (never shown), atomic writes, and the flows' stage cache."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pytest

from core.contracts import Contract
from core.earthdata import earthdata_credentials
from core.files import atomic_path, read_json, write_json_atomic
from flows.cache import load_cached, stage_key, store


@pytest.fixture
def no_env(monkeypatch, tmp_path):
    for k in ("EARTHDATA_TOKEN", "EARTHDATA_USERNAME", "EARTHDATA_PASSWORD", "EARTHDATA_HOSTS"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def test_credentials_order_and_redaction(no_env, monkeypatch, caplog) -> None:
    assert earthdata_credentials() is None
    netrc = no_env / ".netrc"
    netrc.write_text("machine urs.earthdata.nasa.gov login alice password s3cret-pw\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    c = earthdata_credentials()
    assert c.username == "alice" and c.password == "s3cret-pw" and c.source == f"netrc:{netrc}"
    monkeypatch.setenv("EARTHDATA_USERNAME", "bob")
    monkeypatch.setenv("EARTHDATA_PASSWORD", "pw-from-env")
    assert earthdata_credentials().username == "bob"
    monkeypatch.setenv("EARTHDATA_TOKEN", "tok-123")
    c = earthdata_credentials()
    assert c.token == "tok-123"
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("t").info("using %s / %r", c, c)
    for secret in ("tok-123", "pw-from-env", "s3cret-pw"):
        assert secret not in caplog.text and secret not in repr(c) and secret not in str(c)


def test_atomic_path_success_and_failure(tmp_path) -> None:
    final = tmp_path / "sub" / "out.txt"
    with atomic_path(final) as tmp:
        tmp.write_text("new")
        assert not final.exists()
    assert final.read_text() == "new"
    with pytest.raises(RuntimeError), atomic_path(final) as tmp:
        tmp.write_text("half-written")
        raise RuntimeError("boom")
    assert final.read_text() == "new"  # the old output is untouched
    assert [p.name for p in final.parent.iterdir()] == ["out.txt"]  # no temp left behind


def test_json_roundtrip_and_bad_json(tmp_path) -> None:
    write_json_atomic(tmp_path / "a.json", {"x": [1, 2]})
    assert read_json(tmp_path / "a.json") == {"x": [1, 2]}
    (tmp_path / "b.json").write_text("{not json")
    with pytest.raises(ValueError, match="b.json: not valid JSON"):
        read_json(tmp_path / "b.json")


@dataclass(frozen=True)
class _Out(Contract):
    path: str
    n: int


def test_stage_cache_keys_on_parameters_and_input_files(tmp_path) -> None:
    params = {"aoi": [0, 0, 1, 1], "stac_url": "http://127.0.0.1:4321/", "force": False}
    inp = tmp_path / "input.tif"
    inp.write_text("a")
    key = stage_key("s", params, [inp])
    assert key == stage_key("s", {**params, "force": True, "stac_url": "http://127.0.0.1:9999/"}, [inp])
    assert key != stage_key("s", {**params, "aoi": [0, 0, 2, 2]}, [inp])
    assert key != stage_key("other", params, [inp])
    inp.write_text("bb")  # the input file changed: another key
    assert key != stage_key("s", params, [inp])


def test_stage_cache_checks_its_outputs(tmp_path) -> None:
    out = tmp_path / "result.tif"
    out.write_text("x")
    store(str(tmp_path), "s", "k", _Out(str(out), 3))
    assert load_cached(str(tmp_path), "s", "k", _Out) == _Out(str(out), 3)
    out.write_text("rewritten by another run")
    assert load_cached(str(tmp_path), "s", "k", _Out) is None  # an output changed: re-run
    store(str(tmp_path), "s", "k", _Out(str(out), 3))
    out.unlink()
    assert load_cached(str(tmp_path), "s", "k", _Out) is None  # an output went missing: re-run
