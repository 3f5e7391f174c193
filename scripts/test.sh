#!/usr/bin/env bash
# Runs the tests of Socle on this machine, installing what they need (root,
# Debian 12): system packages (QEMU, PostgreSQL, ...) and a Python venv with
# osc-sdk-python.
#
#   scripts/test.sh               the full suite (what .ci/run runs):
#                                 Rust unit and integration tests (real
#                                 `socle up`, real QEMU guests) with the
#                                 cloud's state in SQLite, the integration
#                                 tests again on PostgreSQL, a check that a
#                                 hung test is ended, and the osc-sdk-python
#                                 suite against `socle up` (state in SQLite)
#   scripts/test.sh --quick       unit tests (store tests on SQLite and
#                                 PostgreSQL) and one end-to-end smoke test
#                                 through osc-sdk-python (a VM boots, a
#                                 volume, a Net)
#   scripts/test.sh --sweep-only  remove what earlier runs left, and stop
#
# Every Rust test runs under cargo-nextest with a time bound
# (.config/nextest.toml), every Python test under pytest-timeout
# (tests/python/pytest.ini). A run first sweeps what killed runs left
# (scripts/sweep.sh: only what carries a test marker), and prints each
# phase's duration and the ten slowest tests at the end.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

mode=full
case "${1:-}" in
  "") ;;
  --quick) mode=quick ;;
  --sweep-only) mode=sweep ;;
  *) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac

export SOCLE_TEST_ROOT="${SOCLE_TEST_ROOT:-/tmp/socle-tests}"
mkdir -p "$SOCLE_TEST_ROOT"

phases=()
started=$SECONDS
# Runs a phase, timed: phase NAME COMMAND...
phase() {
  local name=$1 t0=$SECONDS rc=0
  shift
  echo "== $name"
  "$@" || rc=$?
  phases+=("$(printf '%5d s  %s%s' $((SECONDS - t0)) "$name" "$([[ $rc == 0 ]] || echo ": FAILED")")")
  return $rc
}

summary() {
  local rc=$?
  [[ ${#phases[@]} -gt 0 ]] || exit $rc
  echo "== phases"
  printf '%s\n' "${phases[@]}"
  printf '%5d s  total (%s)\n' $((SECONDS - started)) "$mode"
  if [[ -n ${RUN:-} ]] && compgen -G "$RUN/junit-*.xml" >/dev/null; then
    echo "== the ten slowest tests"
    python3 scripts/slowest-tests.py "$RUN"/junit-*.xml
  fi
  [[ $rc == 0 ]] || echo "FAILED (exit status $rc)"
  exit $rc
}
trap summary EXIT

phase "sweep what earlier runs left" scripts/sweep.sh --stale
[[ $mode == sweep ]] && exit 0

# This run's marker: its temp files (and so the command lines of what its
# tests start with them) are under $RUN, held by a lock while it runs; the
# next run's sweep removes them if this one is killed.
RUN="$SOCLE_TEST_ROOT/run-$(date +%Y%m%d-%H%M%S)-$$"
mkdir -p "$RUN"
exec 7>"$RUN.lock"
flock 7
export TMPDIR="$RUN"

phase "install dependencies" bash -c 'scripts/install-deps.sh && scripts/python-venv.sh'

# Runs nextest and keeps its JUnit report for the summary: nextest NAME ARGS...
nextest() {
  local name=$1
  shift
  local rc=0
  cargo nextest run --locked --no-fail-fast "$@" || rc=$?
  [[ -f target/nextest/default/junit.xml ]] && mv target/nextest/default/junit.xml "$RUN/junit-$name.xml"
  return $rc
}

pytest_suite() {
  local name=$1
  shift
  SOCLE_BIN="$PWD/target/debug/socle" .venv/bin/pytest tests/python -q --durations=10 \
    --junitxml="$RUN/junit-$name.xml" "$@"
}

# The integration tests whose subject is the host alone run once, on SQLite:
# the database changes nothing in them (a guest booting an imported disk
# through the BIOS, anti-spoofing and NAT and public IP datapaths in
# nftables, QEMU's I/O throttling, host route checks, the CLI's output, the
# harness's own sweep). What they store is covered on PostgreSQL by the
# other integration tests and the Python suite.
HOST_ONLY='binary(=harness) | binary(=host_ranges) | binary(=cli) | binary(=networking_nat) | binary(=down)
  | test(=imported_raw_and_qcow2_disks_boot_through_the_bios_encrypted_at_rest)
  | test(=a_guest_cannot_pass_for_another_address_or_mac)
  | test(=a_public_ip_lets_the_outside_in_and_only_to_its_guest)
  | test(=io1_volume_is_throttled_near_its_iops)'

on_postgres() {
  SOCLE_TEST_DATABASE=postgres nextest postgres -p socle --tests -E "not ($HOST_ONLY)"
}

# osc-cli's own tests prove a client's requests (paths, signatures, its
# error output): the database changes nothing there, they run once.
python_on_postgres() {
  SOCLE_TEST_DATABASE=postgres pytest_suite python-postgres --ignore=tests/python/test_osc_cli.py
}

# The check of the bound itself: a test that hangs on purpose must be ended
# by nextest as a timeout, named, well within a minute.
hung_test_is_ended() {
  local name=a_deliberately_hanging_test_fails_within_its_bound out rc=0 t0=$SECONDS
  out=$(SOCLE_TEST_HANG=1 cargo nextest run --locked -p socle-testkit --run-ignored only -E "test(=$name)" 2>&1) || rc=$?
  if [[ $rc == 0 ]] || ! grep -q "TIMEOUT.*$name" <<<"$out"; then
    echo "$out"
    echo "error: the deliberately hanging test was not ended as a timeout (nextest exit status $rc)"
    return 1
  fi
  if (( SECONDS - t0 > 60 )); then
    echo "error: ending the hanging test took $((SECONDS - t0)) s"
    return 1
  fi
  echo "ended as a timeout, by name, $((SECONDS - t0)) s after it started (bound: 10 s)"
}

if [[ $mode == quick ]]; then
  phase "build" cargo build --locked --workspace --lib --bins
  phase "unit tests (store tests on SQLite and PostgreSQL)" nextest unit --workspace --lib --bins
  phase "smoke test through osc-sdk-python" pytest_suite smoke tests/python/test_smoke.py
  exit 0
fi

phase "build" cargo build --locked --workspace --all-targets
phase "Rust tests: unit and integration, state in SQLite" nextest sqlite --workspace
phase "Rust doc tests" cargo test --locked --workspace --doc
phase "integration tests again, state in PostgreSQL (a throwaway cluster they start)" on_postgres
phase "harness check: a hung test is ended within its bound" hung_test_is_ended
phase "osc-sdk-python end-to-end suite, state in SQLite" pytest_suite python
phase "osc-sdk-python end-to-end suite again, state in PostgreSQL" python_on_postgres
