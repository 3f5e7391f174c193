#!/usr/bin/env bash
# Runs every test of Socle on this machine, installing what they need:
#   1. system packages (QEMU, ...) and the Python venv with osc-sdk-python;
#   2. Rust unit tests and integration tests (real `socle up`, real QEMU guests);
#   3. the end-to-end suite driving `socle up` with the official osc-sdk-python.
# Usage: scripts/test.sh            (root, Debian 12)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/install-deps.sh
scripts/python-venv.sh

echo "== building"
cargo build --locked --workspace --all-targets

echo "== Rust tests (unit + integration with real QEMU guests)"
cargo test --locked --workspace

echo "== osc-sdk-python end-to-end suite"
SOCLE_BIN="$PWD/target/debug/socle" .venv/bin/pytest tests/python -q
