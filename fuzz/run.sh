#!/usr/bin/env bash
# Builds the cargo-fuzz targets and runs each for FUZZ_SECS seconds (default 15) from the
# corpus seeded by the captured exchanges. Exits non-zero on any crash (libFuzzer writes
# the input to fuzz/artifacts/<target>/). Uses the stable toolchain (RUSTC_BOOTSTRAP for
# the sanitizer-coverage flags), no sanitizer (the code is safe Rust), debug assertions on
# so integer overflows count as crashes. Installs cargo-fuzz when missing.
#   fuzz/run.sh                  # all targets, 15 s each (what .ci/run does)
#   FUZZ_SECS=600 fuzz/run.sh    # a longer run (figures in docs/benchmarks.md)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${FUZZ_SECS:-15}
targets=(rpc_pdu kms_request host_session grpc_commands)
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked --version 0.13.2
fi
cargo run -q -p kms-tests --example fuzz_seeds -- fuzz/corpus
export RUSTC_BOOTSTRAP=1
cd fuzz
cargo fuzz build -s none -O -a
for t in "${targets[@]}"; do
    echo "== fuzz $t for ${secs}s"
    cargo fuzz run -s none -O -a "$t" "corpus/$t" -- -max_total_time="$secs" -print_final_stats=1 2>&1 |
        grep -E '^#[0-9]+[[:space:]]+DONE|^Done|stat::number_of_executed_units|stat::new_units_added|ERROR|panicked|crash' || true
    if [ -n "$(ls -A "artifacts/$t" 2>/dev/null)" ]; then
        echo "fuzz: $t found crashes: $(ls "artifacts/$t")" >&2
        exit 1
    fi
done
