"""A real Prefect stack on 127.0.0.1 for the deployment tests: ``prefect server start``, the ``agb-process``
work pool, ``prefect --no-prompt deploy --all`` from the repository's prefect.yaml, and a process worker
started as Prefect's docs show: from the project folder, with no project variable (no AGB_PROJECT_DIR).

One stack per pytest session, shared by test_prefect_server.py and test_browser_ui.py (``prefect_stack``);
it is stopped (SIGTERM, then SIGKILL) when the session ends. Everything runs with a temporary PREFECT_HOME.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from core.procs import forget, on_death

REPO = Path(__file__).resolve().parents[1]
PREFECT = [sys.executable, "-m", "prefect"]
POOL = "agb-process"
ON_DEMAND = "agb-on-demand"
FLOW = "biomass-pipeline"
HEALTH_TIMEOUT_S = 180.0  # ~21 s on a fresh database on 2 idle cores; much more on a loaded machine
RUN_TIMEOUT_S = 360.0
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen, grace_s: float = 15.0) -> None:
    """SIGTERM the process group, then SIGKILL what is left."""
    if proc.poll() is not None:
        return
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError as exc:
        return f"<{path}: {exc}>"


@dataclass
class PrefectStack:
    """URLs, environment and processes of the running stack."""

    root: Path
    port: int
    procs: list[subprocess.Popen] = field(default_factory=list)
    logs: dict[str, Path] = field(default_factory=dict)

    @property
    def world(self) -> Path:
        """Sample world shared by the runs of the session (generated once: generation is idempotent)."""
        return self.root / "world"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api(self) -> str:
        return f"{self.url}/api"

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(PREFECT_HOME=str(self.root / "home"), PREFECT_API_URL=self.api, PREFECT_UI_API_URL=self.api,
                   PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1",
                   PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180", PREFECT_LOGGING_LOG_PRINTS="true",
                   PREFECT_RESULTS_PERSIST_BY_DEFAULT="false", PREFECT_WORKER_QUERY_SECONDS="2",
                   PREFECT_CLI_PROMPT="false", PYTHONUNBUFFERED="1")
        env.pop("AGB_DASK_ADDRESS", None)  # composites on a local cluster in these tests
        env.pop("AGB_PROJECT_DIR", None)  # the pull step finds the project without it
        return env

    # ------------------------------------------------------------------ processes
    def spawn(self, name: str, args: list[str], cwd: Path) -> subprocess.Popen:
        log = self.root / f"{name}.log"
        self.logs[name] = log
        with open(log, "ab") as fh:
            proc = subprocess.Popen(args, cwd=cwd, env=self.env, stdout=fh, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.procs.append(proc)
        # the project's watchdog stops it when this pytest process ends in any way (a worker torn down
        # before the session's cleanups finish left whole stacks running after the suite)
        on_death(kill=proc.pid, marker="prefect")
        return proc

    def cli(self, *args: str, timeout: float = 180.0) -> str:
        """Run a ``prefect`` command from the repository root; fail with its output when it fails."""
        res = subprocess.run([*PREFECT, *args], cwd=REPO, env=self.env, capture_output=True, text=True,
                             timeout=timeout)
        if res.returncode != 0:
            pytest.fail(f"`prefect {' '.join(args)}` exited {res.returncode}:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
        return res.stdout

    def stop(self) -> None:
        """SIGTERM every process group at once, then wait (SIGKILL what is left after the grace)."""
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in reversed(self.procs):
            stop_process(proc)
            forget(kill=proc.pid)

    # ------------------------------------------------------------------ REST API
    def get(self, path: str) -> Any:
        r = httpx.get(self.api + path, timeout=30)
        r.raise_for_status()
        return r.json()

    def post(self, path: str, body: dict[str, Any]) -> Any:
        """POST to the API; a 503 (the server's database busy on a loaded machine) is retried, up to 3
        attempts, as Prefect's own client retries it."""
        for attempt in range(3):
            r = httpx.post(self.api + path, json=body, timeout=30)
            if r.status_code != 503:
                break
            time.sleep(2.0 * (attempt + 1))
        if r.status_code >= 400:
            raise AssertionError(f"POST {path} -> {r.status_code}: {r.text[:2000]}")
        return r.json()

    def deployment(self, name: str, flow: str = FLOW) -> dict[str, Any]:
        return self.get(f"/deployments/name/{flow}/{name}")

    def wait_healthy(self, timeout: float = HEALTH_TIMEOUT_S) -> float:
        t0 = time.monotonic()
        server = self.procs[0]
        while time.monotonic() - t0 < timeout:
            if server.poll() is not None:
                pytest.fail(f"prefect server exited {server.returncode}:\n{tail(self.logs['server'])}")
            try:
                if httpx.get(self.api + "/health", timeout=5).status_code == 200:
                    return time.monotonic() - t0
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        pytest.fail(f"prefect server not healthy after {timeout:.0f} s:\n{tail(self.logs['server'])}")

    def wait_run(self, run_id: str, timeout: float = RUN_TIMEOUT_S) -> dict[str, Any]:
        """Poll the flow run until it reaches a terminal state; return it."""
        t0 = time.monotonic()
        run: dict[str, Any] = {}
        while time.monotonic() - t0 < timeout:
            run = self.get(f"/flow_runs/{run_id}")
            if (run.get("state_type") or "") in TERMINAL:
                return run
            worker = self.procs[-1]
            if worker.poll() is not None:
                pytest.fail(f"the worker exited {worker.returncode}:\n{tail(self.logs['worker'])}")
            time.sleep(2)
        pytest.fail(f"flow run {run_id} not finished after {timeout:.0f} s (state {run.get('state_name')}):\n"
                    f"{self.run_logs(run_id)}\n--- worker ---\n{tail(self.logs['worker'])}")

    def run_logs(self, run_id: str, limit: int = 200) -> str:
        logs = self.post("/logs/filter", {"logs": {"flow_run_id": {"any_": [run_id]}}, "sort": "TIMESTAMP_ASC",
                                          "limit": limit})
        return "\n".join(f"{rec['level']:>3} {rec['message']}" for rec in logs)[-6000:]

    def subflow_runs(self, run_id: str) -> list[dict[str, Any]]:
        return self.post("/flow_runs/filter", {"flow_runs": {"parent_flow_run_id": {"any_": [run_id]}}})

    def artifacts(self, run_ids: list[str]) -> list[dict[str, Any]]:
        return self.post("/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": run_ids}}})


def start_stack(root: Path) -> PrefectStack:
    """Server, work pool, deployments from prefect.yaml, worker; the caller stops it."""
    stack = PrefectStack(root=root, port=free_port())
    (root / "home").mkdir(parents=True, exist_ok=True)
    try:
        stack.spawn("server", [*PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(stack.port)], root)
        stack.wait_healthy()
        pool = yaml.safe_load((REPO / "prefect.yaml").read_text())["definitions"]["work_pools"]["process"]["name"]
        assert pool == POOL, f"prefect.yaml names work pool {pool!r}, the tests expect {POOL!r}"
        stack.cli("work-pool", "create", POOL, "--type", "process", "--overwrite")
        stack.cli("--no-prompt", "deploy", "--all")
        stack.spawn("worker", [*PREFECT, "worker", "start", "--pool", POOL, "--type", "process"], REPO)
    except BaseException:
        stack.stop()
        raise
    return stack


_STACK: PrefectStack | None = None


def shared_stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> PrefectStack:
    """The session's stack, started on first use and stopped when the session ends."""
    global _STACK
    if _STACK is None or _STACK.procs[0].poll() is not None:
        _STACK = start_stack(tmp_path_factory.mktemp("prefect-stack"))
        stack = _STACK

        def _stop() -> None:
            global _STACK
            stack.stop()
            _STACK = None

        request.config.add_cleanup(_stop)
    return _STACK


def custom_params(stack: PrefectStack, out: Path, **training: Any) -> dict[str, Any]:
    """The on-demand deployment's parameters with a test output folder, the small world and 1 epoch."""
    params = dict(stack.deployment(ON_DEMAND)["parameters"]["params"])
    params.update(output_dir=str(out), sample_world={"size": "small", "seed": 0, "output_dir": str(stack.world)})
    params["training"] = {**params.get("training", {}), "epochs": 1, **training}
    return {"params": params}


def assert_pipeline_outputs(out: Path) -> dict[str, list[Path]]:
    """The files biomass-pipeline writes under ``out`` (docs/DESIGN.md), each non-empty."""
    found = {
        "composites": sorted(out.glob("seasons/*/composites/*/*.tif")),
        "labels": sorted(out.glob("seasons/*/labels/*/*.tif")),
        "shots": sorted(out.glob("seasons/*/labels/gedi_shots.parquet")),
        "chips": sorted(out.glob("chips/**/chips_export.json")),
        "checkpoints": sorted((out / "model").glob("*.ckpt")),
        "model record": [out / "model" / "current.json"],
        "metrics": [out / "eval" / "metrics.json"],
        "maps": sorted(out.glob("maps/*/*_agb.tif")),
    }
    for kind, paths in found.items():
        assert paths, f"no {kind} under {out}"
        for p in paths:
            assert p.is_file() and p.stat().st_size > 0, f"{kind}: {p} missing or empty"
    return found
