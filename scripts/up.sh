#!/usr/bin/env bash
# Brings up an all-in-one Socle cloud on this machine, in the foreground:
# installs what it needs (QEMU), builds `socle`, then runs `socle up`.
# Extra arguments go to `socle up` (e.g. --data-dir DIR --listen ADDR).
# Usage: scripts/up.sh [socle up options]      (root, Debian 12)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/install-deps.sh
cargo build --locked --release -p socle
exec target/release/socle up "$@"
