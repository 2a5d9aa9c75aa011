#!/usr/bin/env bash
# TerraTorch interoperability check for the chip export (issue 5). Not part of `make test`.
#
# 1. Builds (once; idempotent) its own venv at .interop-venv with torch 2.14.1 + torchvision 0.29.1 and
#    terratorch 1.2.x. The main .venv (torch 2.13) is never touched: TerraTorch's torchvision does not
#    import beside torch 2.13.
# 2. Exports a small synthetic world with the project's exporter (main .venv), or uses $INTEROP_EXPORT.
# 3. Loads the export with TerraTorch's GenericNonGeoPixelwiseRegressionDataModule (interop venv) and
#    checks shapes, dtypes, nodata -> ignore index, and the generated config YAML.
#
# Usage: bash scripts/interop.sh [--build-only]
# Env:   INTEROP_VENV (default .interop-venv), INTEROP_EXPORT (an existing export dir to check),
#        PY (python used to create the venv, default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
VENV="${INTEROP_VENV:-$ROOT/.interop-venv}"
PY="${PY:-python3}"
STAMP="$VENV/.interop-installed"

if [ ! -f "$STAMP" ]; then
    echo "[interop] building $VENV (torch 2.14.1 + torchvision 0.29.1 + terratorch 1.2.x; several GB)"
    test -x "$VENV/bin/python" || "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
    "$VENV/bin/python" -m pip install -q "terratorch>=1.2,<1.3" "torch==2.14.1" "torchvision==0.29.1"
    "$VENV/bin/python" -c 'import importlib.metadata as m, torchvision.ops, terratorch; print("[interop] terratorch", m.version("terratorch"), "torch", m.version("torch"), "torchvision", m.version("torchvision"))'
    touch "$STAMP"
else
    echo "[interop] reusing $VENV"
fi
[ "${1:-}" = "--build-only" ] && exit 0

MAINPY="$ROOT/.venv/bin/python"
if [ -n "${INTEROP_EXPORT:-}" ]; then
    echo "[interop] checking $INTEROP_EXPORT with TerraTorch"
    "$VENV/bin/python" "$ROOT/scripts/interop_check.py" "$INTEROP_EXPORT"
    exit 0
fi
WORK="$(mktemp -d "${TMPDIR:-/tmp}/interop.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
echo "[interop] 1/2 synthetic 2-tile world, default export (label nodata -9999 as the label rasters say)"
"$MAINPY" -m chips.export --demo "$WORK/world" --output-dir "$WORK/out" | tail -n 1 > "$WORK/result1.json"
"$MAINPY" -c 'import json,sys; r=json.load(open(sys.argv[1])); print("[interop] export:", r["n_chips"], "chips", r["splits"], "dropped", r["dropped"])' "$WORK/result1.json"
"$VENV/bin/python" "$ROOT/scripts/interop_check.py" "$WORK/out/chips"
echo "[interop] 2/2 same world, label_nodata -1 (granite style), extra band 'count', 2 x 2 blocks"
echo '{"label_nodata": -1, "extra_bands": ["count"], "split_block_chips": 2, "export_name": "chips_m1"}' > "$WORK/p.json"
"$MAINPY" -m chips.export --composites "$WORK/world/composites" --labels "$WORK/world/labels" \
    --output-dir "$WORK/out" --params "$WORK/p.json" | tail -n 1 > "$WORK/result2.json"
"$VENV/bin/python" "$ROOT/scripts/interop_check.py" "$WORK/out/chips_m1" --no-fit
echo "[interop] ALL PASSED"
