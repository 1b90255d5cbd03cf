#!/usr/bin/env bash
# Fuzzes the request decoder and validation (fuzz_targets/request_body.rs):
#
#   fuzz/run.sh [seconds]     (default 60)
#
# cargo-fuzz needs a nightly toolchain (libFuzzer's coverage instrumentation
# is a nightly flag); it uses `cargo +nightly` when rustup has one, and else
# the stable toolchain with RUSTC_BOOTSTRAP=1. Install cargo-fuzz once with
# `cargo install cargo-fuzz --locked`. The sanitizer is off: the code under
# test is safe Rust, so AddressSanitizer would only slow it down (debug
# assertions, overflow checks included, stay on).
#
# The corpus grows in fuzz/corpus/request_body (git-ignored), seeded from
# fuzz/seeds/request_body; a crash is written to fuzz/artifacts/request_body
# and makes this script exit non-zero. Reproduce one with
#   cargo +nightly fuzz run request_body -s none fuzz/artifacts/request_body/<file>
set -euo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")"

seconds=${1:-60}
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  fuzz=(cargo +nightly fuzz)
else
  export RUSTC_BOOTSTRAP=1
  fuzz=(cargo fuzz)
fi
command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz missing: cargo install cargo-fuzz --locked" >&2; exit 2; }

mkdir -p corpus/request_body
# -max_len: room for bodies past the 64 KiB limit; the target also makes
# oversized bodies itself (first byte, bit 5).
"${fuzz[@]}" run request_body --sanitizer none corpus/request_body seeds/request_body -- \
  -max_total_time="$seconds" -max_len=8192 -print_final_stats=1
