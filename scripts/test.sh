#!/usr/bin/env bash
# The test command: installs build dependencies when absent, builds the binaries the
# integration tests start, and runs every test in the workspace. Extra arguments go to
# `cargo test`. The last line sums up all test binaries: "tests: N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
cargo build --workspace --bins --locked

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --locked "$@" 2>&1 | tee "$log" || status=$?
# The vendored pingora-http is not a workspace member; its header-name spelling is patched
# (vendor/README.md), so its own tests run too.
cargo test -p pingora-http --lib --locked 2>&1 | tee -a "$log" || status=$?
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
