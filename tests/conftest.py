"""Session fixtures shared by the whole suite: the small sample world, its loopback STAC API, and one
Prefect test harness. The network is blocked except loopback (pytest-socket, see pyproject addopts)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

REPO = Path(__file__).resolve().parents[1]
REALDATA = REPO.parent / "shared" / "realdata"

# `make test` runs the suite on 2 pytest-xdist workers (--dist loadgroup): a module's tests stay on one worker
# (its module fixtures run once), the two modules sharing the real Prefect stack run on the same worker, and the
# longest modules start first so neither worker idles at the end. A plain `pytest` runs serially, unchanged.
XDIST_GROUPS = {"test_browser_ui": "prefect_stack", "test_prefect_server": "prefect_stack"}
LONGEST_FIRST = ("test_crash_trials", "test_prefect_server", "test_browser_ui", "test_pipeline", "test_cli_errors",
                 "test_data_faults", "test_mrv_sampleworld", "test_cli", "test_secrets_scan", "test_earthdata_reads")


def _module(item: pytest.Item) -> str:
    return item.module.__name__.rsplit(".", 1)[-1] if item.module else item.nodeid


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    for item in items:
        item.add_marker(pytest.mark.xdist_group(XDIST_GROUPS.get(_module(item), _module(item))))
    items.sort(key=lambda it: rank.get(_module(it), len(rank)))


@pytest.fixture(scope="session")
def realdata() -> Path:
    """../shared/realdata, or skip when it is absent."""
    if not REALDATA.is_dir():
        pytest.skip(f"real sample files not present at {REALDATA}")
    return REALDATA


@pytest.fixture(scope="session")
def small_world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Manifest of the small sample world (generated once per session)."""
    from sampleworld import generate_world

    return generate_world(str(tmp_path_factory.mktemp("world")), size="small", seed=0)


@pytest.fixture(scope="session")
def world(small_world: dict[str, Any]) -> dict[str, Any]:
    """Short name of ``small_world``."""
    return small_world


@pytest.fixture(scope="session")
def items(small_world: dict[str, Any]) -> list[dict[str, Any]]:
    """The small world's HLS STAC items (as served by the loopback STAC API)."""
    return json.loads(Path(small_world["hls"]["items_json"]).read_text())["features"]


@pytest.fixture(scope="session")
def world_dir(small_world: dict[str, Any]) -> Path:
    return Path(small_world["hls"]["items_json"]).resolve().parents[1]


@pytest.fixture(scope="session")
def stac_url(small_world: dict[str, Any], world_dir: Path) -> Iterator[str]:
    """Root URL of a real STAC API (rustac) serving the small world on 127.0.0.1."""
    from sampleworld.stac_server import serve_stac

    with serve_stac(str(world_dir)) as url:
        yield url


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One Prefect test harness (temporary database, ephemeral API) for the whole session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="session")
def harness_api(prefect_harness: None) -> str:
    """The session harness's API URL: CLI subprocesses given it as ``PREFECT_API_URL`` skip the ephemeral
    server's start-up (~10-20 s a run). Tests of the user's path (no API URL: each run starts and must stop
    its own server) leave it out on purpose."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    assert url and url.startswith("http://127.0.0.1:"), url
    return url


@pytest.fixture
def flows_main(capfd: pytest.CaptureFixture[str]) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``python -m flows ARGS`` in this process (for errors refused before any flow starts: a subprocess
    would spend its seconds importing); the same exit status and console text."""
    from flows.__main__ import main

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        rc = main(list(args))
        out, err = capfd.readouterr()
        return subprocess.CompletedProcess(["flows", *args], rc, out, err)

    return run
