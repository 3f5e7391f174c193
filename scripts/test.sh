#!/usr/bin/env bash
# Runs every test of Socle on this machine, installing what they need:
#   1. system packages (QEMU, ...) and the Python venv with osc-sdk-python;
#   2. Rust unit tests and integration tests (real `socle up`, real QEMU guests);
#   3. the end-to-end suite driving `socle up` with the official osc-sdk-python;
#   2 runs twice: the cloud's state in SQLite, then in PostgreSQL.
# Usage: scripts/test.sh            (root, Debian 12)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/install-deps.sh
scripts/python-venv.sh

echo "== building"
cargo build --locked --workspace --all-targets

echo "== Rust tests (unit + integration with real QEMU guests; store tests on SQLite and PostgreSQL)"
cargo test --locked --workspace

echo "== the integration tests again, the cloud's state in PostgreSQL (a throwaway cluster they start)"
SOCLE_TEST_DATABASE=postgres cargo test --locked -p socle --tests

echo "== osc-sdk-python end-to-end suite"
SOCLE_BIN="$PWD/target/debug/socle" .venv/bin/pytest tests/python -q
# The same suite with the state in PostgreSQL (SOCLE_TEST_DATABASE=postgres)
# is not run here yet: it exposes reconciler races between a VM's start and
# a concurrent DeleteVms/LinkVolume that make it fail now and then (issue 10).
echo "note: the osc-sdk-python suite on PostgreSQL is not part of this run (known reconciler races; see issue 10)"
