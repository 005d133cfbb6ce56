#!/usr/bin/env bash
# Real X screenshots of `aed monitor` under Xvfb: the window's own grab (--screenshot) and an
# X-level grab of the whole screen (ImageMagick's `import`), taken while the monitor is running.
# Usage: benchmarks/monitor_xvfb.sh SOURCE.wav OUT_DIR [extra aed monitor args...]
set -euo pipefail
cd "$(dirname "$0")/.."
src=${1:?usage: $0 SOURCE.wav OUT_DIR [aed monitor args]}; out=${2:?OUT_DIR}; shift 2
mkdir -p "$out"
Xvfb :99 -screen 0 1440x900x24 -nolisten tcp >"$out/xvfb.log" 2>&1 &
xpid=$!
trap 'kill $xpid 2>/dev/null || true' EXIT
sleep 1.5
export DISPLAY=:99 QT_QPA_PLATFORM=xcb
.venv/bin/aed monitor --source "$src" --duration 8 --screenshot "$out/monitor_xvfb.png" "$@" &
apid=$!
sleep 7.5
import -window root "$out/xroot.png"
wait $apid
echo "screenshots in $out"
