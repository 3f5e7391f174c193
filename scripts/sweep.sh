#!/usr/bin/env bash
# Removes what tests left on this host, and nothing else.
#
# Tests hold slots (crates/socle-testkit/src/slot.rs): a lock file
# ROOT/slot-NN.lock held while the test runs, a directory ROOT/slot-NN that
# holds its files (so the command lines of its `socle up`, `socle agent`,
# QEMU and dnsmasq name it), and network objects whose names start with
# `tsNN` (NN in hex). A run of scripts/test.sh holds ROOT/run-ID.lock and
# keeps its temp files in ROOT/run-ID. ROOT is $SOCLE_TEST_ROOT, else
# /tmp/socle-tests.
#
#   sweep.sh --slot N           sweep slot N (its caller holds the lock)
#   sweep.sh --slot N --on-eof  wait until stdin closes, then sweep slot N:
#                               the watcher a test starts with its slot
#   sweep.sh --stale            sweep every slot and run nobody holds, and
#                               the PostgreSQL test clusters of dead processes
#
# Prints one line per kind of thing removed. Never touches a process or an
# object no marker names: a `socle up` of your own (prefix `socle`, data dir
# elsewhere) is left alone.
set -uo pipefail

ROOT="${SOCLE_TEST_ROOT:-/tmp/socle-tests}"
declare -A removed=()
note() { removed[$1]=$(( ${removed[$1]:-0} + 1 )); }

# Kills every process whose command line names directory $1 (the path
# followed by '/', a space, or the end of the line).
kill_naming() {
  local dir=$1 p pid cmd
  for p in /proc/[0-9]*; do
    pid=${p#/proc/}
    [[ $pid == "$$" || $pid == "$BASHPID" ]] && continue
    cmd=$( { tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null) || continue
    [[ -z $cmd ]] && continue
    if [[ "$cmd" == *"$dir/"* || "$cmd" == *"$dir "* ]]; then
      kill -9 "$pid" 2>/dev/null && note "processes (${cmd%% *})"
    fi
  done
}

# Removes namespaces (and what runs in them), root-namespace links and
# nftables tables whose names start with $1.
remove_net_objects() {
  local prefix=$1 ns link family table pids
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}'); do
    [[ $ns == "$prefix"* ]] || continue
    pids=$(ip netns pids "$ns" 2>/dev/null)
    [[ -n $pids ]] && kill -9 $pids 2>/dev/null
    ip netns del "$ns" 2>/dev/null && note "network namespaces"
  done
  for link in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
    [[ $link == "$prefix"* ]] || continue
    ip link del "$link" 2>/dev/null && note "links"
  done
  if command -v nft >/dev/null; then
    while read -r _ family table; do
      [[ $table == "$prefix"* ]] || continue
      nft delete table "$family" "$table" 2>/dev/null && note "nftables tables"
    done < <(nft list tables 2>/dev/null)
  fi
}

sweep_slot() {
  local n=$((10#$1)) dir prefix
  dir="$ROOT/$(printf 'slot-%02d' "$n")"
  prefix=$(printf 'ts%02x' "$n")
  kill_naming "$dir"
  remove_net_objects "$prefix"
  if [[ -d $dir ]]; then
    rm -rf "$dir" && note "temp dirs"
  fi
}

sweep_run() {
  local dir=$1
  kill_naming "$dir"
  rm -rf "$dir" && note "temp dirs"
}

# PostgreSQL clusters of test processes that are gone (socle-pg-PID-N in a
# temp dir: crates/socle-store/src/testing.rs, tests/python/postgres_cluster.py).
sweep_pg_clusters() {
  local d pid
  for d in /tmp/socle-pg-* "$ROOT"/run-*/socle-pg-*; do
    [[ -d $d ]] || continue
    pid=${d##*/socle-pg-}
    pid=${pid%%-*}
    [[ $pid =~ ^[0-9]+$ ]] || continue
    [[ -e /proc/$pid ]] && continue
    kill_naming "$d"
    rm -rf "$d" && note "PostgreSQL test clusters"
  done
}

# Runs "$2 $3..." while holding the lock file $1, if nobody else holds it.
with_free_lock() {
  local lock=$1; shift
  (
    flock -n 8 || exit 0
    "$@"
    declare -p removed
  ) 8<>"$lock"
}

report() {
  local kind
  for kind in "${!removed[@]}"; do
    echo "swept: ${removed[$kind]} $kind"
  done | sort
}

case "${1:-}" in
  --slot)
    [[ ${2:-} =~ ^[0-9]+$ ]] || { echo "usage: $0 --slot N [--on-eof]" >&2; exit 2; }
    if [[ ${3:-} == --on-eof ]]; then
      cat >/dev/null
      echo "$(date -Is) slot $2: test process gone or done, sweeping"
    fi
    sweep_slot "$2"
    report
    ;;
  --stale)
    mkdir -p "$ROOT"
    for lock in "$ROOT"/slot-*.lock; do
      [[ -e $lock ]] || continue
      n=${lock##*/slot-}; n=${n%.lock}
      eval "$(with_free_lock "$lock" sweep_slot "$n")"
    done
    for lock in "$ROOT"/run-*.lock; do
      [[ -e $lock ]] || continue
      eval "$(with_free_lock "$lock" sweep_run "${lock%.lock}")"
      [[ -d ${lock%.lock} ]] || rm -f "$lock"
    done
    sweep_pg_clusters
    report
    ;;
  *)
    sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
