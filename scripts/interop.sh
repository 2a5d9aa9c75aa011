#!/usr/bin/env bash
# TerraTorch interoperability check for the chip export (issue 5). Not part of `make test`.
#
# 1. Builds (once; idempotent) its own venv at .interop-venv with torch 2.14.1 + torchvision 0.29.1 and
#    terratorch 1.2.x. The main .venv (torch 2.13) is never touched: TerraTorch's torchvision does not
#    import beside torch 2.13.
# 2. Exports a small synthetic world with the project's exporter (main .venv) twice: the default export
#    (band_layout "model": B02..B07) and a granite-layout one (band_layout "granite": B01,B02..B07,B09,B10,
#    B11 + count, label nodata -1), and writes granite-layout composites of one tile with
#    `python -m compositing.granite`; or uses $INTEROP_EXPORT.
# 3. scripts/interop_check.py (every export): loads the export with TerraTorch's
#    GenericNonGeoPixelwiseRegressionDataModule from the GENERATED terratorch_config.yaml as written (batch
#    size, workers, drop_last) and runs `terratorch fit --trainer.fast_dev_run=1` on it unchanged: one
#    training step must happen.
# 4. scripts/interop_granite_check.py (granite-layout exports; a "model"-layout export is reported and
#    skipped: granite's config reads 6-band chips with an IndexError): granite-geospatial-biomass drop-in.
#    granite's published config (../shared/reference/granite_config.yaml, read in place, only its data
#    roots replaced; batch size 2 for the CPU fit) must load the export's chips, run a fast_dev_run fit and
#    LightningInferenceModel.inference_on_dir with a checkpoint of this project's model, on the val chips
#    and on the folder of granite-layout composites.
# Every check runs; the script exits 1 at the end when any failed.
#
# Usage: bash scripts/interop.sh [--build-only] [EXPORT_DIR]
# Env:   INTEROP_VENV (default .interop-venv), INTEROP_EXPORT (same as EXPORT_DIR),
#        GRANITE_COMPOSITES (a folder of granite-layout composites for inference_on_dir),
#        PY (python used to create the venv, default python3), MAIN_PY (the project's python for the
#        synthetic exports, default .venv/bin/python).
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
BUILD_ONLY=0
EXPORT="${INTEROP_EXPORT:-}"
for arg in "$@"; do
    case "$arg" in
        --build-only) BUILD_ONLY=1 ;;
        -*) echo "[interop] unknown option $arg" >&2; exit 2 ;;
        *) EXPORT="$arg" ;;
    esac
done
[ "$BUILD_ONLY" = "1" ] && exit 0

FAILED=()
run_check() {  # label, then the command; records a failure and goes on
    local label="$1"; shift
    echo "[interop] == $label"
    if ! "$@"; then FAILED+=("$label"); fi
}
GRANITE_ARGS=()
[ -n "${GRANITE_COMPOSITES:-}" ] && GRANITE_ARGS+=(--composites "$GRANITE_COMPOSITES")
band_layout() {  # "granite" when the export's image chips have granite's 10-band layout, else "model"
    "$VENV/bin/python" -c 'import json,sys,pathlib as p; d=p.Path(sys.argv[1]); m=d/"chips_export.json"
b=json.loads(m.read_text())["bands"] if m.is_file() else []
print("granite" if b[:1]==["B01"] or not m.is_file() else "model")' "$1"
}
check_export() {  # export dir, then extra args for both checks (e.g. --no-fit)
    local export="$1"; shift
    run_check "TerraTorch, generated config: $export" "$VENV/bin/python" "$ROOT/scripts/interop_check.py" "$export" "$@"
    if [ "$(band_layout "$export")" = "granite" ]; then
        run_check "granite drop-in: $export" "$VENV/bin/python" "$ROOT/scripts/interop_granite_check.py" "$export" \
            "${GRANITE_ARGS[@]}" "$@"
    else
        echo "[interop] granite drop-in: skipped for $export (band_layout 'model', B02..B07: granite's config" \
             "selects bands by position from 10-band chips; export with band_layout 'granite' for it)"
    fi
}
finish() {
    if [ "${#FAILED[@]}" -gt 0 ]; then
        echo "[interop] FAILED: ${#FAILED[@]} check(s):"; printf '[interop]   - %s\n' "${FAILED[@]}"; exit 1
    fi
    echo "[interop] ALL PASSED"
}

if [ -n "$EXPORT" ]; then
    check_export "$EXPORT"
    finish
    exit 0
fi
MAINPY="${MAIN_PY:-$ROOT/.venv/bin/python}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/interop.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
SUMMARY='import json,sys; r=json.load(open(sys.argv[1])); print("[interop] export:", r["n_chips"], "chips", r["splits"], "dropped", r["dropped"])'
echo "[interop] 1/2 synthetic 2-tile world, default export (band_layout model, label nodata -9999 as the label rasters say)"
"$MAINPY" -m chips.export --demo "$WORK/world" --output-dir "$WORK/out" | tail -n 1 > "$WORK/result1.json"
"$MAINPY" -c "$SUMMARY" "$WORK/result1.json"
check_export "$WORK/out/chips"
echo "[interop] 2/2 same world, band_layout granite, label_nodata -1 (granite style), extra band 'count', 3 km split blocks"
echo '{"band_layout": "granite", "label_nodata": -1, "extra_bands": ["count"], "split_block_m": 3000, "export_name": "chips_granite"}' > "$WORK/p.json"
"$MAINPY" -m chips.export --composites "$WORK/world/composites" --labels "$WORK/world/labels" \
    --output-dir "$WORK/out" --params "$WORK/p.json" | tail -n 1 > "$WORK/result2.json"
"$MAINPY" -c "$SUMMARY" "$WORK/result2.json"
if [ -z "${GRANITE_COMPOSITES:-}" ]; then
    echo "[interop] granite-layout composites of tile 10TEK (python -m compositing.granite)"
    "$MAINPY" -m compositing.granite --output-dir "$WORK/gc" "$WORK/world/composites/10TEK/"*.tif | tail -n 1
    GRANITE_ARGS=(--composites "$WORK/gc/composites_granite/10TEK")
fi
check_export "$WORK/out/chips_granite"
finish
