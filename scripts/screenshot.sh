#!/usr/bin/env bash
# Renders an HTML report to PNG with headless Chromium: scripts/screenshot.sh report/report.html shot.png
set -euo pipefail
html=$(realpath "$1"); png=$(realpath -m "$2")
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
chromium --headless --no-sandbox --disable-gpu --disable-background-networking --no-first-run \
  --disable-component-update --disable-sync --user-data-dir="$profile" \
  --window-size=1200,"${HEIGHT:-6000}" --screenshot="$png" "file://$html" 2>/dev/null
echo "$png"
