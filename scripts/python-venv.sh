#!/usr/bin/env bash
# Create or update the Python virtualenv used by the end-to-end tests (tests/python).
# Idempotent and quiet: a second run with everything already installed does nothing visible.
# Usage: scripts/python-venv.sh   (then: .venv/bin/pytest tests/python)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PYTHON="${PYTHON:-python3}"

# Pinned versions. osc-sdk-python 0.42.0 bundles OSC API spec 1.42.0, the one in reference/osc-api.
# osc-sdk 1.11.0 is osc-cli, the command-line client (tests/python/test_osc_cli.py).
REQUIREMENTS=(
  "osc-sdk-python==0.42.0"
  "osc-sdk==1.11.0"
  "pytest==8.4.2"
  "pytest-timeout==2.4.0"
)

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore

# (Re)create the venv when it is missing or its interpreter no longer runs.
if ! "$VENV/bin/python" -c "" 2>/dev/null; then
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
fi

# Skip pip entirely when the pinned versions are already there (fast, works offline).
if "$VENV/bin/python" - "${REQUIREMENTS[@]}" <<'PY' 2>/dev/null; then
import sys
from importlib.metadata import version, PackageNotFoundError
for req in sys.argv[1:]:
    name, want = req.split("==")
    try:
        if version(name) != want:
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
PY
  exit 0
fi

"$VENV/bin/python" -m pip install --quiet "${REQUIREMENTS[@]}"
