#!/usr/bin/env bash
# The demo command: installs build dependencies when absent, builds the gateway and runs
# `gateway demo` (two simulated regions and a gateway on loopback). Extra arguments go to
# `gateway demo` (see `gateway demo --help`).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh
cargo build -p gateway --bin gateway --locked
exec target/debug/gateway demo "$@"
