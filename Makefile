# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv when missing.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 180
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: venv demo test lint bench interop interop-esri clean

# torch first: 2.13.0 is the CPU build on this machine's disk; the project's range (<2.14) then installs nothing more.
$(STAMP): pyproject.toml
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored: it is neither" || true
	$(VPY) -m pip install -q "torch==2.13.0" 2>&1 | grep -v "is ignored: it is neither" || true
	$(VPY) -m pip install -q -e ".[dev]" 2>&1 | grep -v "is ignored: it is neither" || true
	$(VPY) -c "import torch, rasterio, stackstac, prefect, sampleworld, flows; print('venv ok: torch', torch.__version__)"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VPY) -m flows demo --output-dir out/demo

# The suite uses about one core on average (servers starting, subprocesses, waits): 2 xdist workers use both.
TEST_WORKERS ?= 2
test: $(STAMP)
	@if [ -x scripts/ensure_chromium.sh ]; then bash scripts/ensure_chromium.sh; fi
	$(VPY) -m pytest -n $(TEST_WORKERS) --dist loadgroup

lint: $(STAMP)
	$(VPY) -m ruff check .

# Benchmarks are scripts, not tests: see README "Benchmarks" for each command and its figures.
bench: $(STAMP)
	@ls benchmarks/*.py

# Interoperability checks, not part of `make test`; each builds its own venv once. `EXPORT=path/to/chips`
# checks an existing export instead of the synthetic world's.
# TerraTorch (generated config as written) + granite drop-in (.interop-venv, torch 2.14.1 + torchvision 0.29.1).
interop: $(STAMP)
	bash scripts/interop.sh $(EXPORT)

# arcgis.learn 2.4.4 prepare_data on the Esri layout (.esri-venv; needs libgdal-dev + gdal-bin).
interop-esri: $(STAMP)
	bash scripts/interop_esri.sh $(EXPORT)

clean:
	rm -rf $(VENV) build *.egg-info out
