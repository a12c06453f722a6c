#!/usr/bin/env bash
# Kill -9 soak (issues 9 and 11): runs the crash tests (crates/cli/tests/crash.rs) BENCH_CRASH_RUNS times,
# each with a fresh random seed and CAIRN_CRASH_TRIALS trials per loop: copies, backups,
# forget + prune, resumed restores,
# rewrites and prunes killed at random instants (or after a random number of packs),
# rerun, and `check`ed after every trial. Writes bench/TORTURE.md (overwritten) with the
# seeds, the kills that landed mid-run and the outcome. Any failing run stops the soak
# and its seed is in the report (replay it with CAIRN_CRASH_SEED=... and the same trials).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
RUNS=${BENCH_CRASH_RUNS:-10}
TRIALS=${CAIRN_CRASH_TRIALS:-20}
RESULTS=${BENCH_CRASH_RESULTS:-$HERE/TORTURE.md}
# The whole test output is kept (the report quotes only the failure): replaying a
# failure needs more than its seed, since kill instants also depend on timing.
LOG=${BENCH_CRASH_LOG:-/tmp/cairn-crash-bench.log}
: >"$LOG"

cd "$ROOT"
cargo build -q --locked -p cairn-cli --tests
start=$(date +%s)
status=passed
done_runs=0

# sum LOOP FIELD: FIELD 1 = runs killed mid-run, 2 = runs started, over every run.
sum() { sed -nE "s/^${1//+/\\+}: ([0-9]+) of ([0-9]+) runs killed.*/\1 \2/p" "$LOG" | awk -v k="$2" '{ s += $k } END { print s + 0 }'; }

# The report is rewritten after every run, so an interrupted soak still records what it did.
report() {
  local secs=$(( $(date +%s) - start ))
  {
    echo "# Kill -9 soak (bench/torture.sh)"
    echo
    echo "$(date -u +%Y-%m-%d), commit $(git rev-parse --short HEAD), $done_runs of $RUNS runs of the crash tests with $TRIALS trials per loop, $secs s: **$status**."
    echo "Each trial kills the command with SIGKILL, reruns it and runs \`cairn check\` on the repository it wrote;"
    echo "each run ends with \`check --read-data\` and restores compared with the source."
    echo
    echo "| loop | runs started | killed mid-run |"
    echo "|---|---:|---:|"
    for what in copy backup "backup at packs" rewrite prune "forget+prune" restore; do
      echo "| $what | $(sum "$what" 2) | $(sum "$what" 1) |"
    done
    echo
    echo "Plus, per run, the deterministic case of issue 9 (an adopted tree pack whose data never arrived)."
    echo
    echo "Seeds: $(grep -oE '^[a-z+ ]+: CAIRN_CRASH_SEED=[0-9]+' "$LOG" | tr '\n' ';' | sed 's/;/; /g')"
    if [ "$status" != passed ]; then
      echo
      echo '```'
      grep -E 'panicked at' -A12 "$LOG" | head -80
      echo "(whole output: $LOG)"
      echo '```'
    fi
  } >"$RESULTS"
}

for r in $(seq 1 "$RUNS"); do
  echo "[crash-bench] run $r of $RUNS" >&2
  if ! CAIRN_CRASH_TRIALS=$TRIALS cargo nextest run --locked --profile soak -p cairn-cli --test crash --no-capture >>"$LOG" 2>&1; then
    status="FAILED in run $r"
    done_runs=$r
    report
    break
  fi
  done_runs=$r
  report
done
cat "$RESULTS"
[ "$status" = passed ]
