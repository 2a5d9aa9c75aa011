"""What a worker must provide, checked up front: the project folder (prefect.yaml's ``pull`` step) and the
environment a run needs (:func:`check_worker_environment`).

A process worker starts every flow run in a new temporary folder; the deployments' entrypoints
(``flows/pipeline.py:...``) and relative ``output_dir`` values must resolve against the project folder.
:func:`set_project_directory` finds it without any variable when the project is installed from its
folder (``pip install -e .``, what ``make`` does): the folder holding this ``flows`` package; else
``$AGB_PROJECT_DIR`` (the container image sets it). It checks the folder holds the entrypoints and says
what to set when it cannot find one.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ENV = "AGB_PROJECT_DIR"
MARKERS = ("prefect.yaml", str(Path("flows") / "pipeline.py"))  # an installed copy in site-packages has no prefect.yaml


class ProjectDirError(RuntimeError):
    """The flow run lacks something the worker must provide (the project folder, credentials); says what
    to set."""


def find_project_dir(directory: str | None = None) -> Path:
    """``directory``, else ``$AGB_PROJECT_DIR``, else the source folder of the installed ``flows`` package."""
    candidates = [("the step's `directory`", directory), (f"${PROJECT_ENV}", os.environ.get(PROJECT_ENV)),
                  ("the installed flows package", str(Path(__file__).resolve().parents[1]))]
    tried = []
    for what, value in candidates:
        if not value:
            continue
        path = Path(value).expanduser().resolve()
        if all((path / m).is_file() for m in MARKERS):
            return path
        tried.append(f"{what} = {path}")
    raise ProjectDirError(
        f"cannot find the agb-pipeline project folder (the one holding {' and '.join(MARKERS)}); tried: "
        f"{'; '.join(tried) or 'nothing'}. Start the worker where the project is installed from its folder "
        f"(`pip install -e .` or `make venv` there), or set {PROJECT_ENV}=/path/to/the/project in the "
        "worker's environment (or the work pool's `env` job variable).")


def set_project_directory(directory: str | None = None) -> dict[str, str]:
    """Pull step: change into the project folder; returns ``{"directory": path}`` (Prefect's contract)."""
    path = find_project_dir(directory)
    os.chdir(path)
    return {"directory": str(path)}


NASA_HOST_SUFFIX = "nasa.gov"


def check_worker_environment(stac_urls: list[str], dask_address: str | None) -> None:
    """What a worker must be given, checked when a run starts (before any search), with what to set:
    Earthdata Login credentials when the data comes from NASA, and a well-formed Dask scheduler address."""
    from urllib.parse import urlparse

    from core.earthdata import earthdata_credentials

    if any((urlparse(u).hostname or "").endswith(NASA_HOST_SUFFIX) for u in stac_urls):
        try:
            creds = earthdata_credentials()
        except ValueError as exc:  # an unreadable netrc
            raise ProjectDirError(f"Earthdata credentials: {exc}") from None
        if creds is None:
            raise ProjectDirError(
                "no Earthdata Login credentials in this worker's environment, and the run reads NASA data "
                f"({', '.join(sorted(set(stac_urls)))}): set EARTHDATA_TOKEN, or EARTHDATA_USERNAME and "
                "EARTHDATA_PASSWORD, or a ~/.netrc line `machine urs.earthdata.nasa.gov login USER password "
                "PASS` for the user the worker runs as (docs/deploy.md, 'Earthdata credentials').")
    if dask_address and not dask_address.startswith(("tcp://", "tls://", "inproc://", "ucx://")):
        raise ProjectDirError(f"Dask scheduler address {dask_address!r} (dask_address or $AGB_DASK_ADDRESS) is "
                              "not an address like tcp://host:8786")
