#!/usr/bin/env bash
# The short chaos soak for CI: `loadtest soak` for SOAK_DURATION (default 60s) at SOAK_RATE
# req/s (default 100, which a debug build sustains on a loaded 2-core machine) against the
# debug binaries that scripts/test.sh builds (GATEWAY_BIN, LOADTEST_BIN or
# $CARGO_TARGET_DIR/debug). Regions fail and recover one at a time, the config is rewritten
# (valid and invalid in turn) and hostile clients attack; the soak exits non-zero, and so does
# this script, unless no request failed, nothing panicked, memory and descriptors stayed flat,
# every hostile client was answered or closed in time and every reload did what it must.
# Reports land in SOAK_OUT (default reports/soak-ci): report.json, report.md, chart.svg.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${CARGO_TARGET_DIR:-$PWD/target}/debug
gateway=${GATEWAY_BIN:-$bin/gateway}
loadtest=${LOADTEST_BIN:-$bin/loadtest}
for b in "$gateway" "$loadtest"; do
    [[ -x $b ]] || { echo "soak: no binary $b (cargo build --workspace --bins)" >&2; exit 1; }
done
"$loadtest" soak --duration "${SOAK_DURATION:-60s}" --rate "${SOAK_RATE:-100}" \
    --gateway "$gateway" --out "${SOAK_OUT:-reports/soak-ci}"
