#!/usr/bin/env bash
# A longer soak of the data-fault harness (tests/test_data_faults.py): TRIALS seeded trials (default 200) of
# the whole small-world season (1 tile x 3 scenes x 7 COGs, 3 GEDI granules) read through the Earthdata
# emulator with 20 % of data-host and signed-host requests faulty; every trial's composite, label raster and
# shots must equal the fault-free run's. Prints the fault counts and the seconds per trial.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
AGB_FAULT_TRIALS=${TRIALS:-200} AGB_FAULT_SCENES=3 AGB_FAULT_GRANULES=3 \
  "$PY" -m pytest -q -s -p no:cacheprovider tests/test_data_faults.py -k under_faults "$@"
