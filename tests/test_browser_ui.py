"""The Prefect UI in headless Debian Chromium (Playwright): open the deployments page, find the on-demand
deployment, Run -> Custom run, change parameters in the form, submit, and watch the flow run page until it
shows Completed. A screenshot and the page HTML go to the test's tmp folder on failure.

Needs /usr/bin/chromium (``scripts/ensure_chromium.sh``, run by ``make test``) and the ``playwright`` Python
package (its bundled driver only: no browser download). Outside CI a missing one skips; in CI it fails.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _prefect_server import (
    ON_DEMAND,
    RUN_TIMEOUT_S,
    TERMINAL,
    PrefectStack,
    assert_pipeline_outputs,
    shared_stack,
)

CHROMIUM = os.environ.get("AGB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
UI_TIMEOUT_MS = 90_000
RUN_PAGE = re.compile(r"/runs/flow-run/([0-9a-f-]{36})")


def _missing(what: str) -> None:
    msg = f"{what} (install: bash scripts/ensure_chromium.sh; pip install -e '.[dev]')"
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


@pytest.fixture()
def prefect_stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> PrefectStack:
    return shared_stack(request, tmp_path_factory)


@pytest.fixture()
def page(tmp_path: Path) -> Iterator[Any]:
    """A Playwright page in headless Debian Chromium with a fresh profile."""
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        _missing(f"chromium not found at {CHROMIUM}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package is not installed")
    with sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1400, "height": 1000})
        try:
            pg = ctx.new_page()
            pg.set_default_timeout(UI_TIMEOUT_MS)
            yield pg
        finally:
            ctx.close()


def _field(page: Any, label: str, control: str) -> Any:
    """The ``control`` (textarea, input) of the schema-form property whose label reads exactly ``label``."""
    return page.locator(
        f"xpath=//span[contains(@class,'schema-form-property__label') and normalize-space()='{label}']"
        f"/ancestor::div[contains(concat(' ', normalize-space(@class), ' '), ' schema-form-property ')][1]"
        f"//{control}").first


def _evidence(page: Any, tmp_path: Path, name: str) -> str:
    png, html = tmp_path / f"{name}.png", tmp_path / f"{name}.html"
    try:
        page.screenshot(path=str(png), full_page=True)
        html.write_text(page.content())
    except Exception as exc:  # the report must still say what failed
        return f"(no screenshot: {exc})"
    return f"screenshot {png}, page {html}, url {page.url}"


def _watch_run_page(page: Any, stack: PrefectStack, run_id: str) -> dict[str, Any]:
    """Wait until the run is terminal (API) and the run page's state badge shows it; return the run."""
    t0 = time.monotonic()
    while True:
        run = stack.get(f"/flow_runs/{run_id}")
        if run["state_type"] in TERMINAL:
            break
        if time.monotonic() - t0 > RUN_TIMEOUT_S:
            raise AssertionError(f"run {run_id} still {run['state_name']} after {RUN_TIMEOUT_S:.0f} s")
        page.wait_for_timeout(3000)
    badge = page.locator(".page-heading-flow-run .state-badge").first  # the state in the run page's header
    for _ in range(3):  # the page polls the API; reload if it has not caught up
        try:
            badge.filter(has_text=run["state_name"]).wait_for(timeout=30_000)
            break
        except Exception:
            page.reload()
    assert run["state_name"] in badge.inner_text(), f"page shows {badge.inner_text()!r}, API {run['state_name']}"
    return run


def test_custom_run_from_the_ui(page: Any, prefect_stack: PrefectStack, tmp_path: Path) -> None:
    out = tmp_path / "on-demand-ui"
    try:
        page.goto(f"{prefect_stack.url}/deployments")
        page.get_by_text(ON_DEMAND, exact=True).first.click()
        page.wait_for_url("**/deployments/deployment/**")
        page.get_by_role("button", name="Run", exact=True).click()
        page.get_by_text("Custom run", exact=True).click()
        page.wait_for_url(re.compile(r"/deployments/deployment/[0-9a-f-]{36}/run"))
        run_name = f"ui-custom-run-{os.getpid()}-{int(time.time())}"
        page.locator("xpath=//label[normalize-space()='Run Name']/ancestor::div[contains(concat(' ', "
                     "normalize-space(@class), ' '), ' p-label ')][1]//input[@type='text']").fill(run_name)
        output_dir = _field(page, "Output Dir", "textarea")
        output_dir.fill(str(out))
        # the session's sample world (generated once): sample_world.output_dir is None -> str, then the path
        _field(page, "Output Dir (Optional)", "button[normalize-space()='str']").click()
        _field(page, "Output Dir (Optional)", "textarea").fill(str(prefect_stack.world))
        epochs = _field(page, "Epochs (Optional)", "input[@type='number']")
        epochs.fill("1")
        epochs.blur()
        page.get_by_role("button", name="Submit", exact=True).click()
        page.wait_for_url(re.compile(r"/deployments/deployment/[0-9a-f-]{36}(\?.*)?$"))  # back on the deployment
        page.get_by_role("link", name=run_name, exact=True).first.click()  # the new run in its Runs list
        page.wait_for_url(RUN_PAGE)
        run_id = RUN_PAGE.search(page.url).group(1)
        run = _watch_run_page(page, prefect_stack, run_id)
    except Exception as exc:
        raise AssertionError(f"{type(exc).__name__}: {exc}\n{_evidence(page, tmp_path, 'ui-failure')}") from exc
    shot = _evidence(page, tmp_path, "ui-run-page")
    assert run["state_type"] == "COMPLETED", (
        f"{run['state_name']}: {run['state'].get('message')}\n{prefect_stack.run_logs(run_id)}\n{shot}")
    params = run["parameters"]["params"]
    assert params["output_dir"] == str(out) and params["training"]["epochs"] == 1, params
    assert params["sample_world"]["output_dir"] == str(prefect_stack.world), params
    assert run["deployment_id"] == prefect_stack.deployment(ON_DEMAND)["id"] and run["name"] == run_name
    assert_pipeline_outputs(out)
