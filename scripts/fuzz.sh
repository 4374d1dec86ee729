#!/usr/bin/env bash
# Runs every cargo-fuzz target of gateway/fuzz for a bounded time (FUZZ_SECONDS each, default
# 60) from the corpus kept in gateway/fuzz/corpus/<target>/. A crash fails the script and
# leaves its input in gateway/fuzz/artifacts/<target>/; make it a regression test (copy it into
# the corpus) once fixed. Needs the nightly toolchain; installs cargo-fuzz when it is missing.
set -euo pipefail
cd "$(dirname "$0")/../gateway"

seconds="${FUZZ_SECONDS:-60}"
if ! rustup toolchain list | grep -q '^nightly'; then
    echo "fuzz: installing the nightly toolchain" >&2
    if ! rustup toolchain install nightly --profile minimal >&2; then
        # cargo-fuzz needs nightly; without a way to get it, say so loudly and do not fail
        # the rest of CI.
        echo "fuzz: SKIPPED: no nightly toolchain and none could be installed" >&2
        exit 0
    fi
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz" >&2
    cargo install --locked cargo-fuzz >&2
fi

# No sanitizer: the code is safe Rust, and without ASan the build takes minutes, not tens of
# minutes, on a 2-core CI machine; libFuzzer still catches panics, overflows and timeouts.
build=(cargo +nightly fuzz build --sanitizer none --debug-assertions)
"${build[@]}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for target in $(cargo +nightly fuzz list); do
    # New inputs go to a scratch corpus; the kept one (the seeds) is only read.
    corpus="fuzz/corpus/$target"
    mkdir -p "$corpus" "$work/$target"
    echo "fuzz: $target for ${seconds}s" >&2
    if ! cargo +nightly fuzz run --sanitizer none --debug-assertions "$target" \
        "$work/$target" "$corpus" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$work/$target.log" 2>&1; then
        tail -40 "$work/$target.log" >&2
        echo "fuzz: $target FAILED (input in gateway/fuzz/artifacts/$target/)" >&2
        exit 1
    fi
    grep -E "^(stat::number_of_executed_units|stat::new_units_added|#[0-9]+ +DONE)" \
        "$work/$target.log" >&2 || true
done
echo "fuzz: all targets ran ${seconds}s without a crash" >&2
