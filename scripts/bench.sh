#!/usr/bin/env bash
# Runs the benchmarks and rewrites docs/BENCHMARKS.md with the figures, the
# machine and the accelerator. Not a test: it asserts nothing about timings.
# Usage: scripts/bench.sh        (root, Debian 12)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/install-deps.sh
# wrk drives the API under load (the read section); benchmarks only.
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
cargo build --locked --release -p socle --bin socle --example bench
# The example runs the release `socle` it was built with (CARGO_BIN_EXE_socle).
target/release/examples/bench docs/BENCHMARKS.md
