"""Static checks of prefect.yaml and deploy/ (no container engine or cluster here): every file parses, every
entrypoint resolves to the flow the registry names, every deployment's parameters validate against that flow's
pydantic model, and the compose services / Kubernetes manifests run commands and pools that exist."""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import shlex
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
PREFECT_FILES = [REPO / "prefect.yaml", DEPLOY / "k8s" / "prefect.yaml"]
PLACEHOLDER = re.compile(r"{{\s*([\w.$-]+)\s*}}")


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _deployments(path: Path) -> list[dict[str, Any]]:
    return _load(path)["deployments"]


def _entrypoint_flow(entrypoint: str) -> Any:
    """Import the flow object an entrypoint ``path/to/file.py:function`` names, as Prefect does."""
    file, _, func = entrypoint.partition(":")
    path = REPO / file
    assert path.is_file(), f"entrypoint file {file} does not exist"
    module = ".".join(Path(file).with_suffix("").parts)
    spec = importlib.util.find_spec(module)
    assert spec is not None and Path(spec.origin).resolve() == path.resolve(), f"{file} is not module {module}"
    obj = getattr(importlib.import_module(module), func, None)
    assert obj is not None, f"{entrypoint}: no {func} in {module}"
    return obj


def _registry_by_flow() -> dict[Any, tuple[str, type]]:
    from flows.registry import flows

    return {fl: (name, model) for name, (fl, model) in flows().items()}


ALL = [(p, d) for p in PREFECT_FILES for d in _deployments(p)]
IDS = [f"{p.parent.name}/{d['name']}" for p, d in ALL]


def test_prefect_files_parse_and_name_unique_deployments() -> None:
    for path in PREFECT_FILES:
        spec = _load(path)
        names = [d["name"] for d in spec["deployments"]]
        assert len(names) == len(set(names)), f"{path}: duplicate deployment names {names}"
        assert spec["pull"], f"{path}: no pull step"
        ((name, args),) = spec["pull"][0].items()
        if name == "prefect.deployments.steps.set_working_directory":
            assert args["directory"], path  # the image's fixed /opt/agb
        else:
            assert name == "flows.deploy_steps.set_project_directory" and args == {}, path
    main = {d["name"] for d in _deployments(REPO / "prefect.yaml")}
    assert {"agb-north-yearly", "agb-north-retrain", "agb-south-yearly", "agb-south-retrain", "agb-on-demand",
            "agb-demo"} <= main


@pytest.mark.parametrize(("path", "dep"), ALL, ids=IDS)
def test_entrypoint_resolves_and_parameters_validate(path: Path, dep: dict[str, Any]) -> None:
    from flows.registry import build_params

    flow = _entrypoint_flow(dep["entrypoint"])
    registry = _registry_by_flow()
    assert flow in registry, f"{dep['entrypoint']} is not a flow of flows.registry"
    name, model = registry[flow]
    assert set(dep["parameters"]) == {"params"}, "flows take one pydantic parameter named `params`"
    params = build_params(model, dep["parameters"])  # raises a ValidationError naming the bad key
    assert isinstance(params, model)
    assert flow.name == name


def test_main_pool_is_a_process_pool_with_project_root_pull_step() -> None:
    spec = _load(REPO / "prefect.yaml")
    pools = {d["work_pool"]["name"] for d in spec["deployments"]}
    assert pools == {"agb-process"}
    assert spec["pull"] == [{"flows.deploy_steps.set_project_directory": {}}]


def test_pull_step_finds_the_project_without_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker started without AGB_PROJECT_DIR: the flow run (in a temporary folder) still finds the project
    (where its flows package is installed from); a wrong AGB_PROJECT_DIR fails at once saying what to set."""
    import os

    from flows.deploy_steps import PROJECT_ENV, ProjectDirError, find_project_dir, set_project_directory

    monkeypatch.delenv(PROJECT_ENV, raising=False)
    monkeypatch.chdir(tmp_path)  # what a process worker does: a new temporary folder per run
    assert set_project_directory() == {"directory": str(REPO)} and Path(os.getcwd()) == REPO
    monkeypatch.setenv(PROJECT_ENV, str(REPO))
    assert find_project_dir() == REPO
    monkeypatch.setenv(PROJECT_ENV, str(tmp_path))
    assert find_project_dir() == REPO  # a folder without the project is skipped (and listed if nothing fits)
    import flows.deploy_steps as steps

    monkeypatch.setattr(steps, "__file__", str(tmp_path / "site-packages" / "flows" / "deploy_steps.py"))
    with pytest.raises(ProjectDirError, match=f"set {PROJECT_ENV}=/path/to/the/project") as err:
        find_project_dir()
    assert str(tmp_path) in str(err.value)


def test_yearly_schedules_run_after_each_area_season() -> None:
    """Each scheduled deployment runs within a month after the window of the year it maps has ended (the
    hemisphere's leaf-on season; in the tropics the whole calendar year whose scenes choose the window),
    runs yearly-biomass (map with the area's current model, train first when there is none) into an area
    folder, and has a retrain deployment of its own."""
    from core.area import is_tropical, parse_aoi
    from core.timeline import last_finished_year, season_for_year
    from flows.params import YearlyBiomassParams

    for path in PREFECT_FILES:
        deps = _deployments(path)
        names = {d["name"] for d in deps}
        for dep in deps:
            if not dep.get("schedules"):
                assert any(w in dep["name"] for w in ("on-demand", "demo", "retrain")), dep["name"]
                continue
            (sched,) = dep["schedules"]
            minute, hour, day, month, weekday = sched["cron"].split()
            assert weekday == "*" and sched["timezone"] == "UTC"
            assert dep["entrypoint"] == "flows/pipeline.py:yearly_biomass"
            assert dep["name"].replace("yearly", "retrain") in names
            run_day = date(2026, int(month), int(day))
            raw = dep["parameters"]["params"]
            assert raw["year"] is None, "a static year in a yearly schedule would re-run the same season"
            assert "{year}" not in raw["output_dir"], "the area folder keeps its model across years"
            year = last_finished_year(raw["aoi"], run_day)
            window = season_for_year(raw["aoi"], year)
            assert window.end < run_day, f"{dep['name']}: runs {run_day} before its window ends {window.end}"
            assert (run_day - window.end).days <= 31, "run within a month of the window's end"
            geom = parse_aoi(raw["aoi"])
            assert ("north" if geom.centroid.y >= 0 else "south") in dep["name"]
            assert ("tropics" in dep["tags"]) == is_tropical(geom)
            p = YearlyBiomassParams.model_validate({**raw, "as_of": run_day.isoformat()})
            assert p.year == year and p.previous_year


def test_year_defaults_to_last_finished_season() -> None:
    from flows.params import last_finished_season_year

    north, tropics = [-122.1, 44.2, -121.9, 44.35], [-69.3, -12.65, -69.1, -12.5]
    south = [-72.0, -40.2, -71.8, -40.0]
    table = [  # (aoi, today, year of the last season that has ended)
        (north, date(2026, 10, 15), 2026), (north, date(2026, 9, 30), 2025), (north, date(2027, 1, 5), 2026),
        (south, date(2026, 4, 15), 2026), (south, date(2026, 3, 31), 2025), (south, date(2026, 12, 24), 2026),
        (tropics, date(2026, 1, 15), 2025), (tropics, date(2026, 12, 31), 2025),
    ]
    for aoi, today, year in table:
        assert last_finished_season_year(aoi, today) == year, (aoi, today)


def test_no_credentials_in_prefect_files() -> None:
    for path in PREFECT_FILES:
        text = json.dumps(_load(path)).lower()  # the content, not the comments that explain where they go
        for word in ("earthdata", "password", "token", "secret"):
            assert word not in text, f"{path} mentions {word}: credentials belong in the worker's environment"


# --------------------------------------------------------------------------------------------- compose
def _compose() -> dict[str, Any]:
    return _load(DEPLOY / "docker-compose.yml")


def _command(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command", [])
    return shlex.split(cmd) if isinstance(cmd, str) else list(cmd)


def test_compose_services_and_commands() -> None:
    services = _compose()["services"]
    assert {"postgres", "prefect-server", "deploy", "worker", "dask-scheduler", "dask-worker"} <= set(services)
    image = services["worker"]["image"]
    for name in ("prefect-server", "deploy", "worker", "dask-scheduler", "dask-worker"):
        assert services[name]["image"] == image, f"{name} must run the pipeline image"
        build = services[name]["build"]
        assert (REPO / "deploy" / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    server = services["prefect-server"]
    assert _command(server)[:3] == ["prefect", "server", "start"]
    assert server["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"].startswith("postgresql+asyncpg://")
    assert "@postgres:5432/" in server["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    pool = _deployments(REPO / "prefect.yaml")[0]["work_pool"]["name"]
    worker = _command(services["worker"])
    assert worker[:3] == ["prefect", "worker", "start"] and worker[worker.index("--pool") + 1] == pool
    deploy = " ".join(_command(services["deploy"]))
    assert f"work-pool create {pool} --type process" in deploy and "prefect --no-prompt deploy --all" in deploy
    env = services["worker"]["environment"]
    assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    assert env["AGB_PROJECT_DIR"] == "/opt/agb"
    assert env["AGB_DASK_ADDRESS"] == "tcp://dask-scheduler:8786"
    assert _command(services["dask-scheduler"])[:2] == ["dask", "scheduler"]
    assert "8786" in _command(services["dask-scheduler"])
    dw = _command(services["dask-worker"])
    assert dw[:3] == ["dask", "worker", "tcp://dask-scheduler:8786"]
    assert services["dask-worker"]["deploy"]["replicas"] == 2
    assert "agb-out:/opt/agb/out" in services["dask-worker"]["volumes"]
    assert "agb-out:/opt/agb/out" in services["worker"]["volumes"]
    assert services["postgres"]["image"].startswith("postgres:")


def test_compose_commands_exist_in_the_environment() -> None:
    """The CLIs the services run are installed here (the image installs the same pyproject)."""
    import shutil
    import sys

    bindir = Path(sys.executable).parent
    for exe in ("prefect", "dask"):
        assert (bindir / exe).exists() or shutil.which(exe), f"{exe} CLI not installed"
    from flows.__main__ import main

    assert main(["list"]) == 0  # the Dockerfile's smoke check and default command


def test_dockerfile() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:\$\{PYTHON_VERSION\}-slim AS runtime$", text, re.M)
    assert 'ARG PYTHON_VERSION=3.11' in text
    assert re.search(r"^ARG TORCH_VERSION=2\.13\.0$", text, re.M)
    assert re.search(r"pip install --no-deps \.", text) and "python -m flows list" in text
    assert not re.search(r"apt-get install[^\n]*gdal", text, re.I), "rasterio's wheel bundles GDAL"
    for copied in re.findall(r"^COPY (\S+) \./", text, re.M):
        assert (REPO / copied).exists(), f"Dockerfile copies {copied}, which does not exist"
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text()
    for copied in re.findall(r"^COPY (\S+) \./", text, re.M):
        assert f"!{copied}" in ignore or f"!{copied}/**" in ignore, f"{copied} excluded from the build context"


# --------------------------------------------------------------------------------------------- kubernetes
def _manifests() -> dict[str, list[dict[str, Any]]]:
    out = {}
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        if path.name == "prefect.yaml":
            continue
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        assert docs, f"{path} is empty"
        out[path.name] = docs
    return out


def test_k8s_manifests_parse_with_expected_kinds() -> None:
    manifests = _manifests()
    kinds = {name: sorted(d["kind"] for d in docs) for name, docs in manifests.items()}
    assert kinds["prefect-worker.yaml"] == ["ConfigMap", "Deployment", "Role", "RoleBinding", "ServiceAccount",
                                            "ServiceAccount"]
    assert kinds["dask-cluster.yaml"] == ["Deployment", "Deployment", "Service"]
    assert kinds["dask-operator-cluster.yaml"] == ["DaskCluster"]
    assert kinds["namespace.yaml"] == ["Namespace"]
    assert kinds["storage.yaml"] == ["PersistentVolumeClaim"]
    for docs in manifests.values():
        for d in docs:
            if d["kind"] == "Kustomization":
                continue
            assert d.get("apiVersion") and d["metadata"].get("name"), d
            if d["kind"] != "Namespace":
                assert d["metadata"].get("namespace") == "agb", d["metadata"]
    kust = manifests["kustomization.yaml"][0]
    for res in kust["resources"]:
        assert (DEPLOY / "k8s" / res).is_file(), res


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return doc["spec"]["template"]["spec"]["containers"]


def test_k8s_worker_and_dask_cluster_wiring() -> None:
    m = _manifests()
    k8s_pools = {d["work_pool"]["name"] for d in _deployments(DEPLOY / "k8s" / "prefect.yaml")}
    (worker,) = [d for d in m["prefect-worker.yaml"] if d["kind"] == "Deployment"]
    args = _containers(worker)[0]["args"]
    assert args[:3] == ["prefect", "worker", "start"] and args[args.index("--type") + 1] == "kubernetes"
    assert {args[args.index("--pool") + 1]} == k8s_pools
    role = next(d for d in m["prefect-worker.yaml"] if d["kind"] == "Role")
    assert any("jobs" in r["resources"] and "create" in r["verbs"] for r in role["rules"])
    sched_svc = next(d for d in m["dask-cluster.yaml"] if d["kind"] == "Service")
    deps = {d["metadata"]["name"]: d for d in m["dask-cluster.yaml"] if d["kind"] == "Deployment"}
    pod_labels = deps["dask-scheduler"]["spec"]["template"]["metadata"]["labels"]
    assert set(sched_svc["spec"]["selector"].items()) <= set(pod_labels.items())
    assert {p["port"] for p in sched_svc["spec"]["ports"]} >= {8786}
    address = f"tcp://{sched_svc['metadata']['name']}.agb.svc.cluster.local:8786"
    assert _containers(deps["dask-worker"])[0]["args"][:3] == ["dask", "worker", address]
    assert deps["dask-worker"]["spec"]["replicas"] == 2
    template = json.loads((DEPLOY / "k8s" / "base-job-template.json").read_text())
    env_default = template["variables"]["properties"]["env"]["default"]
    assert env_default["AGB_DASK_ADDRESS"] == address
    assert env_default["AGB_PROJECT_DIR"] == "/opt/agb"


def test_k8s_base_job_template_placeholders_are_variables() -> None:
    template = json.loads((DEPLOY / "k8s" / "base-job-template.json").read_text())
    assert set(template) == {"job_configuration", "variables"}
    names = set(PLACEHOLDER.findall(json.dumps(template["job_configuration"])))
    variables = set(template["variables"]["properties"])
    assert names <= variables, f"placeholders without a variable: {sorted(names - variables)}"
    job = template["job_configuration"]["job_manifest"]
    assert job["kind"] == "Job" and job["apiVersion"] == "batch/v1"
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["name"] == "prefect-job" and container["args"] == "{{ command }}"
    claim = job["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
    assert claim == "{{ output_claim }}"
    storage = _manifests()["storage.yaml"][0]
    assert template["variables"]["properties"]["output_claim"]["default"] == storage["metadata"]["name"]
    assert "ReadWriteMany" in storage["spec"]["accessModes"]


def test_deploy_readme_explains_each_file() -> None:
    readme = (DEPLOY / "README.md").read_text()
    files = ["Dockerfile", "docker-compose.yml", *(f"k8s/{p.name}" for p in sorted((DEPLOY / "k8s").iterdir()))]
    for name in files:
        assert name in readme, f"deploy/README.md does not explain {name}"


def test_worker_environment_checked_up_front(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run of a real area on a worker without Earthdata credentials fails before any search, saying what to
    set; loopback data needs none; a malformed Dask address is named."""
    from flows.deploy_steps import ProjectDirError, check_worker_environment

    for var in ("EARTHDATA_TOKEN", "EARTHDATA_USERNAME", "EARTHDATA_PASSWORD"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    nasa = ["https://cmr.earthdata.nasa.gov/stac/LPCLOUD"]
    with pytest.raises(ProjectDirError, match="set EARTHDATA_TOKEN, or EARTHDATA_USERNAME and EARTHDATA_PASSWORD"):
        check_worker_environment(nasa, None)
    check_worker_environment(["http://127.0.0.1:8080"], None)
    monkeypatch.setenv("EARTHDATA_TOKEN", "x")
    check_worker_environment(nasa, "tcp://dask:8786")
    with pytest.raises(ProjectDirError, match="not an address like tcp://host:8786"):
        check_worker_environment(nasa, "dask:8786")
