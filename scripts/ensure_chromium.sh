#!/usr/bin/env bash
# Make sure Debian's Chromium and ChromeDriver are installed (for tests/test_browser_ui.py), installing them
# with apt-get when missing. Idempotent and quiet when they are already there. Needs root (CI and the dev
# machines run as root; otherwise it uses sudo when available).
#
# Usage: bash scripts/ensure_chromium.sh        Env: CHROMIUM (default /usr/bin/chromium)
set -euo pipefail
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"

if [ -x "$CHROMIUM" ] && command -v chromedriver >/dev/null 2>&1; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure_chromium: $CHROMIUM missing and no apt-get here; install Chromium yourself" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        echo "ensure_chromium: need root to apt-get install chromium" >&2
        exit 1
    fi
fi
echo "ensure_chromium: installing chromium and chromium-driver with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
"$CHROMIUM" --version >&2
