"""A real ``prefect server`` on 127.0.0.1: ``prefect deploy`` from prefect.yaml, a process worker, and a run of
the on-demand deployment created through the REST API with custom parameters (what the UI's "Custom run"
posts). The run must complete, write the pipeline's outputs and publish its markdown artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from _prefect_server import (
    FLOW,
    ON_DEMAND,
    PrefectStack,
    assert_pipeline_outputs,
    custom_params,
    shared_stack,
)

REPO = Path(__file__).resolve().parents[1]


def _flow_name(entrypoint: str) -> str:
    """``flows/pipeline.py:yearly_biomass`` -> ``yearly-biomass`` (the flow's name)."""
    return entrypoint.rsplit(":", 1)[1].replace("_", "-")


@pytest.fixture()
def prefect_stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> PrefectStack:
    return shared_stack(request, tmp_path_factory)


def test_prefect_yaml_deployments_registered(prefect_stack: PrefectStack) -> None:
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    for dep in spec["deployments"]:
        got = prefect_stack.deployment(dep["name"], _flow_name(dep["entrypoint"]))
        assert got["entrypoint"] == dep["entrypoint"]
        assert got["work_pool_name"] == dep["work_pool"]["name"]
        assert got["parameters"] == dep["parameters"], dep["name"]
        assert got["pull_steps"] == spec["pull"]  # flows.deploy_steps: finds the project on the worker at run time
        crons = sorted(s["schedule"]["cron"] for s in got["schedules"])
        assert crons == sorted(s["cron"] for s in dep.get("schedules") or []), dep["name"]


def test_on_demand_custom_run_completes(prefect_stack: PrefectStack, tmp_path: Path) -> None:
    dep = prefect_stack.deployment(ON_DEMAND)
    out = tmp_path / "on-demand-api"
    parameters = custom_params(prefect_stack, out)
    created = prefect_stack.post(f"/deployments/{dep['id']}/create_flow_run",
                                 {"parameters": parameters, "name": "api-custom-run", "tags": ["pytest"]})
    run = prefect_stack.wait_run(created["id"])
    assert run["state_type"] == "COMPLETED", (
        f"run ended {run['state_name']}: {run['state'].get('message')}\n{prefect_stack.run_logs(run['id'])}")
    assert run["parameters"] == parameters  # the custom values were used, not the deployment defaults
    assert run["deployment_id"] == dep["id"]

    found = assert_pipeline_outputs(out)
    assert len(found["maps"]) == len(found["composites"])

    subflows = prefect_stack.subflow_runs(run["id"])
    names = {prefect_stack.get(f"/flows/{r['flow_id']}")["name"] for r in subflows}
    assert {"hls-composite", "gedi-labels", "export-chips", "train-model", "evaluate-model"} <= names
    assert all(r["state_type"] == "COMPLETED" for r in subflows)

    arts = prefect_stack.artifacts([run["id"], *(r["id"] for r in subflows)])
    markdown = {a["key"]: a for a in arts if a["type"] == "markdown"}
    assert {"biomass-pipeline-summary", "hls-composite-summary", "gedi-labels-summary", "export-chips-summary",
            "train-model-summary", "evaluate-model-summary"} <= set(markdown), sorted(markdown)
    summary = markdown["biomass-pipeline-summary"]["data"]
    assert str(found["composites"][0]) in summary and str(found["maps"][0]) in summary
    assert markdown["biomass-pipeline-summary"]["flow_run_id"] == run["id"]
    assert prefect_stack.get(f"/flows/{run['flow_id']}")["name"] == FLOW


def test_kubernetes_pool_template_and_deployments_accepted(prefect_stack: PrefectStack) -> None:
    """The server validates deploy/k8s/base-job-template.json (every placeholder a variable) and the k8s
    deployments' job variables against it; nothing runs them here (no cluster)."""
    template = REPO / "deploy" / "k8s" / "base-job-template.json"
    prefect_stack.cli("work-pool", "create", "agb-kubernetes", "--type", "kubernetes", "--base-job-template",
                      str(template), "--overwrite")
    pool = prefect_stack.get("/work_pools/agb-kubernetes")
    assert pool["type"] == "kubernetes"
    assert pool["base_job_template"] == yaml.safe_load(template.read_text())
    prefect_stack.cli("--no-prompt", "deploy", "--all", "--prefect-file", "deploy/k8s/prefect.yaml")
    spec = yaml.safe_load((REPO / "deploy" / "k8s" / "prefect.yaml").read_text())
    for dep in spec["deployments"]:
        got = prefect_stack.deployment(dep["name"], _flow_name(dep["entrypoint"]))
        assert got["work_pool_name"] == "agb-kubernetes"
        assert got["job_variables"] == dep["work_pool"]["job_variables"]
        assert got["pull_steps"] == spec["pull"]


def test_yearly_deployment_after_the_gedi_record_completes(prefect_stack: PrefectStack, tmp_path: Path) -> None:
    """agb-north-yearly on a "today" after GEDI's last shot (2024-11-27): the run maps the season just
    finished (2025, no GEDI) and the year before, training the area's model first on the seasons GEDI covers
    (the small world has 2022 and 2024); the worker was started without AGB_PROJECT_DIR."""
    dep = prefect_stack.deployment("agb-north-yearly", "yearly-biomass")
    params = {**dep["parameters"]["params"], "aoi": None, "output_dir": str(tmp_path / "north"),
              "as_of": "2025-10-15",
              "sample_world": {"size": "small", "seed": 0, "output_dir": str(prefect_stack.world)},
              "chips": {"chip_size": 48, "split_block_m": 2000, "split_fractions": [0.6, 0.2, 0.2]}}
    params["training"] = {**params["training"], "epochs": 1, "batch_size": 4}
    created = prefect_stack.post(f"/deployments/{dep['id']}/create_flow_run",
                                 {"parameters": {"params": params}, "name": "yearly-after-gedi", "tags": ["pytest"]})
    run = prefect_stack.wait_run(created["id"])
    assert run["state_type"] == "COMPLETED", (
        f"run ended {run['state_name']}: {run['state'].get('message')}\n{prefect_stack.run_logs(run['id'])}")
    out = tmp_path / "north"
    record = json.loads((out / "model" / "current.json").read_text())
    assert record["training_years"] == [2022, 2024]
    assert sorted(p.parent.name for p in out.glob("maps/*/*_agb.tif")) == ["2024", "2024", "2025", "2025"]
    assert (out / "change" / "2024_2025" / "change.csv").is_file()
    subflows = prefect_stack.subflow_runs(run["id"])
    names = {prefect_stack.get(f"/flows/{r['flow_id']}")["name"] for r in subflows}
    assert names == {"biomass-pipeline"}  # no model yet: trained first
    inner = prefect_stack.subflow_runs(subflows[0]["id"])
    arts = prefect_stack.artifacts([run["id"], subflows[0]["id"], *(r["id"] for r in inner)])
    markdown = {a["key"]: a["data"] for a in arts if a["type"] == "markdown"}
    assert "nearest GEDI seasons" in markdown["run-plan"] and "no shots in the 2025 season" in markdown["run-plan"]
    assert "| 2024 | 2025 | area |" in markdown["biomass-change"]
