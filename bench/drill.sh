#!/usr/bin/env bash
# A files drill against the plain restore it performs: the same snapshot restored by
# `cairn restore`, by `cairn restore --verify` (which re-hashes every file, as a drill
# does), and by `cairn drill`, in alternating rounds, page cache dropped before each run.
# Writes bench/DRILL.md (overwritten). Knobs: BENCH_DRILL_SRC (default /usr/share),
# BENCH_DIR, BENCH_CAIRN_BIN, BENCH_ROUNDS (default 3).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
W=${BENCH_DIR:-/tmp/cairn-bench-drill}
SRC=${BENCH_DRILL_SRC:-/usr/share}
ROUNDS=${BENCH_ROUNDS:-3}
RESULTS=${BENCH_DRILL_RESULTS:-$HERE/DRILL.md}
while read -r v; do unset "$v"; done < <(compgen -e | grep -E '^CAIRN[A-Z_]*$' || true)

log() { printf '[drill-bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
if [ -n "${BENCH_CAIRN_BIN:-}" ]; then CAIRN=$BENCH_CAIRN_BIN
else (cd "$ROOT" && cargo build --release -p cairn-cli >&2); CAIRN=${CARGO_TARGET_DIR:-$ROOT/target}/release/cairn; fi
if [ -e "$W" ] && [ ! -e "$W/.cairn-bench" ]; then die "BENCH_DIR=$W exists and is not ours"; fi
rm -rf "$W"; mkdir -p "$W"; touch "$W/.cairn-bench"
trap '[ "${BENCH_KEEP:-0}" = 1 ] || rm -rf "$W"' EXIT
printf 'bench' >"$W/password"
export HOME=$W XDG_CACHE_HOME=$W/.cache CAIRN_PASSWORD_FILE=$W/password CAIRN_REPO=$W/repo
cat >"$W/cairn.toml" <<TOML
[daemon]
state_dir = "$W/state"

[repository.primary]
url = "$W/repo"
password_file = "$W/password"

[class.c]
repository = "primary"
drill = { timeout = "1h" }

[source.tree]
class = "c"
kind = "files"
paths = ["$SRC"]
TOML
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.2f", b-a}'; }
"$CAIRN" init -q >/dev/null
"$CAIRN" --config "$W/cairn.toml" run tree >/dev/null
SIZE=$(du -sh --apparent-size "$SRC" 2>/dev/null | cut -f1); FILES=$(find "$SRC" -type f | wc -l)
log "backed up $SRC ($SIZE, $FILES files)"
for i in $(seq 1 "$ROUNDS"); do
  for what in restore verify drill; do
    rm -rf "$W/target"; drop_caches; t0=$(now)
    case $what in
      restore) "$CAIRN" restore latest --target "$W/target" -q ;;
      verify) "$CAIRN" restore latest --target "$W/target" --verify -q ;;
      drill) "$CAIRN" --config "$W/cairn.toml" --json drill tree >"$W/drill.json" ;;
    esac
    echo "$(since "$t0")" >>"$W/$what.s"
    if [ "$what" = drill ]; then
      python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["verdict"] == "passed", r; print(r["rto_secs"])' "$W/drill.json" >>"$W/rto.s"
    fi
    log "round $i: $what $(tail -n1 "$W/$what.s") s"
  done
done
rm -rf "$W/target"
median() { sort -n "$1" | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
R=$(median "$W/restore.s"); V=$(median "$W/verify.s"); D=$(median "$W/drill.s"); T=$(median "$W/rto.s")
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b > 0) printf "%.2f", a/b; else print "n/a" }'; }
{
  echo "# A files drill against the restore it performs"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) cores; $("$CAIRN" --version); page cache dropped before each run; median of $ROUNDS alternating rounds"
  echo "- data: $SRC ($SIZE, $FILES files), one snapshot in a local repository"
  echo
  echo "| run | seconds | vs plain restore | vs restore --verify |"
  echo "|---|---:|---:|---:|"
  echo "| \`cairn restore\` | $R | 1.00 | $(ratio "$R" "$V") |"
  echo "| \`cairn restore --verify\` (re-hash every file) | $V | $(ratio "$V" "$R") | 1.00 |"
  echo "| \`cairn drill\`: its RTO (start to validated-ready: restore, re-hash, count) | $T | $(ratio "$T" "$R") | $(ratio "$T" "$V") |"
  echo "| \`cairn drill\`: wall time (also recording, and removing the $FILES-file sandbox) | $D | $(ratio "$D" "$R") | $(ratio "$D" "$V") |"
} >"$RESULTS"
cat "$RESULTS"
