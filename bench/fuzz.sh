#!/usr/bin/env bash
# Fuzzes every decoder of untrusted bytes for BENCH_FUZZ_RUNS executions each (default
# 10^7) through scripts/fuzz, and writes bench/FUZZ.md (overwritten): executions, time
# and corpus per target, and the first crash if there was one (its input is left in
# fuzz/artifacts/TARGET/; make it a regression test and a seed in fuzz/corpus/TARGET/).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
RUNS=${BENCH_FUZZ_RUNS:-10000000}
RESULTS=${BENCH_FUZZ_RESULTS:-$HERE/FUZZ.md}
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
status=passed
start=$(date +%s)
FUZZ_RUNS=$RUNS bash "$ROOT/scripts/fuzz" 0 >"$LOG" 2>&1 || status=FAILED
{
  echo "# Fuzzing (bench/fuzz.sh)"
  echo
  echo "$(date -u +%Y-%m-%d), commit $(git -C "$ROOT" rev-parse --short HEAD), $RUNS executions per target, libFuzzer with"
  echo "cargo-fuzz's coverage instrumentation (scripts/fuzz), $(( $(date +%s) - start )) s in all: **$status**."
  echo
  echo "| target | executions | seconds | new corpus entries |"
  echo "|---|---:|---:|---:|"
  sed -nE 's/^fuzz ([a-z_]+): ([0-9?]+) executions in ([0-9]+) s, corpus ([0-9]+) new.*/| \1 | \2 | \3 | \4 |/p' "$LOG"
  if [ "$status" != passed ]; then
    echo
    echo '```'
    grep -E 'panicked at|FAILED' -A6 "$LOG" | head -40
    echo '```'
  fi
} >"$RESULTS"
cat "$RESULTS"
[ "$status" = passed ]
