#!/usr/bin/env bash
# arcgis.learn interoperability check for the Esri "Export Tiles" chip export. Not part of `make test`.
#
# 1. Builds (once; idempotent) its own venv at .esri-venv: torch 2.14.1 + torchvision 0.29.1 (from this
#    machine's disk), arcgis 2.4.4 and what arcgis.learn imports (fastai 1.0.61, scikit-image,
#    opencv-python-headless, timm, spacy, h5py, six, ipython, tqdm, setuptools<81) and GDAL's Python
#    bindings built against the system GDAL (Debian libgdal-dev + gdal-bin; installed with apt-get when
#    missing and running as root). See ../shared/STACK.md "Heavy optional clients".
# 2. Uses the Esri folder given as the argument (or $ESRI_EXPORT), else exports the project's synthetic
#    2-tile world with the project's exporter (main venv) and takes its esri/ folder.
# 3. Runs scripts/interop_esri_check.py on it: arcgis.learn.prepare_data must detect an image-to-image
#    (Pix2Pix) dataset with images/ as input and images2/ as target, multispectral, and load a batch. Given
#    an export folder, every Export Tiles folder of it is checked: esri/ and each esri_splits/<split>/.
#
# Usage: bash scripts/interop_esri.sh [--build-only] [DIR]   (DIR: an export folder holding esri/, or one
#        Export Tiles folder)
# Env:   ESRI_VENV (default .esri-venv), ESRI_EXPORT, PY (python that creates the venv, default python3),
#        MAIN_PY (the project's python for the synthetic export, default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
VENV="${ESRI_VENV:-$ROOT/.esri-venv}"
PY="${PY:-python3}"
STAMP="$VENV/.esri-installed"
PINS=("torch==2.14.1" "torchvision==0.29.1")

BUILD_ONLY=0
EXPORT="${ESRI_EXPORT:-}"
for arg in "$@"; do
    case "$arg" in
        --build-only) BUILD_ONLY=1 ;;
        -*) echo "[esri] unknown option $arg" >&2; exit 2 ;;
        *) EXPORT="$arg" ;;
    esac
done

if ! command -v gdal-config >/dev/null 2>&1; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
        echo "[esri] installing the system GDAL (libgdal-dev gdal-bin) with apt-get"
        apt-get install -y -q libgdal-dev gdal-bin >/dev/null
    else
        echo "[esri] FAIL: gdal-config not found. arcgis.learn needs GDAL's Python bindings, built against" \
             "the system GDAL: run 'apt-get install -y libgdal-dev gdal-bin' (as root) and retry." >&2
        exit 2
    fi
fi
GDAL_VERSION="$(gdal-config --version)"

if [ ! -f "$STAMP" ]; then
    echo "[esri] building $VENV (torch 2.14.1 + torchvision 0.29.1 + arcgis 2.4.4 + arcgis.learn deps +" \
         "GDAL $GDAL_VERSION bindings; several GB)"
    t0=$SECONDS
    test -x "$VENV/bin/python" || "$PY" -m venv "$VENV"
    VPIP=("$VENV/bin/python" -m pip install -q)
    "${VPIP[@]}" --upgrade pip
    "${VPIP[@]}" "${PINS[@]}"
    "${VPIP[@]}" "arcgis==2.4.4" "fastai==1.0.61" scikit-image opencv-python-headless timm spacy h5py six \
        ipython tqdm "setuptools<81" wheel numpy "${PINS[@]}"
    # GDAL's bindings compile against the system library; no build isolation so gdal_array is built
    # against the venv's numpy.
    "${VPIP[@]}" --no-build-isolation "GDAL==$GDAL_VERSION"
    "$VENV/bin/python" - <<'EOF'
import importlib.metadata as m
import os
os.cpu_count = lambda: 4  # arcgis.learn computes num_workers = cpu_count - 4 at import on small machines
from osgeo import gdal, gdal_array  # noqa: F401
import arcgis.learn  # noqa: F401
print("[esri] arcgis", m.version("arcgis"), "fastai", m.version("fastai"), "torch", m.version("torch"),
      "torchvision", m.version("torchvision"), "GDAL", gdal.__version__)
EOF
    touch "$STAMP"
    echo "[esri] venv built in $((SECONDS - t0)) s ($(du -sh "$VENV" | cut -f1))"
else
    echo "[esri] reusing $VENV"
fi
[ "$BUILD_ONLY" = "1" ] && exit 0

check_all() {  # an export folder (esri/ + esri_splits/*: every Export Tiles folder) or one Esri folder
    local root="$1" rc=0 folders=()
    if [ -f "$root/esri/esri_model_definition.emd" ]; then
        folders=("$root/esri")
        for f in "$root"/esri_splits/*/; do [ -f "$f/esri_model_definition.emd" ] && folders+=("${f%/}"); done
    else
        folders=("$root")
    fi
    for f in "${folders[@]}"; do
        echo "[esri] == checking $f with arcgis.learn"
        "$VENV/bin/python" "$ROOT/scripts/interop_esri_check.py" "$f" || rc=1
    done
    [ "$rc" = 0 ] && echo "[esri] ALL PASSED (${#folders[@]} folder(s))" || echo "[esri] FAILED"
    return "$rc"
}
if [ -n "$EXPORT" ]; then
    check_all "$EXPORT"
    exit $?
fi
MAINPY="${MAIN_PY:-$ROOT/.venv/bin/python}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/interop-esri.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
echo "[esri] synthetic 2-tile world, default export"
"$MAINPY" -m chips.export --demo "$WORK/world" --output-dir "$WORK/out" | tail -n 1 > "$WORK/result.json"
check_all "$WORK/out/chips"
