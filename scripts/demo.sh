#!/usr/bin/env bash
# The demo command: installs build dependencies when absent, builds the `gateway` binary and the
# test bed's `demo` binary, and runs the demo: two simulated regions and the real gateway
# (`gateway run`) in front of them, on loopback. Extra arguments go to the demo (see
# `demo --help`: --listen, --admin, --control, --threads, --dir, --gateway).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh
cargo build -p gateway -p testbed --bins --locked
exec "${CARGO_TARGET_DIR:-target}/debug/demo" "$@"
