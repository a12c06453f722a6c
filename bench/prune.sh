#!/usr/bin/env bash
# Prune on a repository of 100k+ blobs: cairn vs restic vs rustic, same data, one run.
# Writes bench/PRUNE.md (overwritten). Knobs: BENCH_PRUNE_FILES (default 120000 files of
# 2 KiB: one blob each), BENCH_DIR, BENCH_CAIRN_BIN, BENCH_TOOLS, BENCH_PRUNE_RESULTS.
#
# Scenario: back up N small files, delete every other file, back up again, forget the
# first snapshot, then time prune; every tool deletes at once (cairn --delete-now, rustic
# --instant-delete, restic always) with its default --max-unused of 5%. Afterwards each
# tool's `check` must pass.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/tmp/cairn-bench-prune}
FILES=${BENCH_PRUNE_FILES:-120000}
BENCH_TOOLS=${BENCH_TOOLS:-cairn restic rustic}
RESULTS=${BENCH_PRUNE_RESULTS:-$HERE/PRUNE.md}
RUSTIC_ROOT=${RUSTIC_ROOT:-/opt/rustic}
PW=cairn-bench-password
while read -r v; do unset "$v"; done < <(compgen -e | grep -E '^(RESTIC|RUSTIC|CAIRN)_' || true)

log() { printf '[prune-bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
[ -x /usr/bin/time ] || die "/usr/bin/time missing (apt-get install time)"

if [ -e "$BENCH_DIR" ] && [ ! -e "$BENCH_DIR/.cairn-bench" ] && [ -n "$(ls -A "$BENCH_DIR")" ]; then
  die "BENCH_DIR=$BENCH_DIR exists and is not ours"
fi
rm -rf "$BENCH_DIR"; mkdir -p "$BENCH_DIR"/{data,repo,logs,cache}; touch "$BENCH_DIR/.cairn-bench"
trap 'rm -rf "$BENCH_DIR"' EXIT

declare -A BIN=() VERS=() W=() C=() M=() INFO=() OK=()
if [ -n "${BENCH_CAIRN_BIN:-}" ]; then BIN[cairn]=$BENCH_CAIRN_BIN
else (cd "$ROOT" && cargo build --release -p cairn-cli >&2); BIN[cairn]=${CARGO_TARGET_DIR:-$ROOT/target}/release/cairn; fi
command -v restic >/dev/null && BIN[restic]=$(command -v restic)
r=$RUSTIC_ROOT/bin/rustic; [ -x "$r" ] || r=$(command -v rustic || true); [ -n "$r" ] && BIN[rustic]=$r
LIVE=()
for t in cairn restic rustic; do
  [[ " $BENCH_TOOLS " == *" $t "* ]] && [ -n "${BIN[$t]:-}" ] && LIVE+=("$t")
done
for t in "${LIVE[@]}"; do
  case $t in restic) VERS[$t]=$("${BIN[$t]}" version | head -n1) ;; *) VERS[$t]=$("${BIN[$t]}" --version | head -n1) ;; esac
  log "$t: ${VERS[$t]}"
done

cmd() { # tool repo -> CMD prefix
  case $1 in
    cairn) CMD=(env "CAIRN_REPO=$2" "CAIRN_PASSWORD=$PW" "${BIN[cairn]}") ;;
    restic) CMD=(env "RESTIC_REPOSITORY=$2" "RESTIC_PASSWORD=$PW" "RESTIC_CACHE_DIR=$BENCH_DIR/cache/restic" "${BIN[restic]}") ;;
    rustic) CMD=(env "RUSTIC_PASSWORD=$PW" "XDG_CONFIG_HOME=$BENCH_DIR/cache/rustic-config" "${BIN[rustic]}"
                 --no-progress -P bench-none -r "$2" --cache-dir "$BENCH_DIR/cache/rustic") ;;
  esac
}
run() { # tool step args...: run, log, die on failure
  local t=$1 step=$2; shift 2; cmd "$t" "$BENCH_DIR/repo/$t"
  "${CMD[@]}" "$@" >"$BENCH_DIR/logs/$t-$step.log" 2>&1 || { tail -n 5 "$BENCH_DIR/logs/$t-$step.log" >&2; die "$t $step failed"; }
}

log "dataset: $FILES files of 2 KiB (random) in directories of 1000"
python3 - "$BENCH_DIR/data" "$FILES" <<'EOF'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, "d%03d" % (i // 1000))
    if i % 1000 == 0:
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%06d" % i), "wb") as f:
        f.write(os.urandom(2048))
EOF

for t in "${LIVE[@]}"; do
  log "$t: init, backup, half the files removed, backup, forget the first"
  run "$t" init init
done
for t in "${LIVE[@]}"; do run "$t" backup1 backup "$BENCH_DIR/data"; done
find "$BENCH_DIR/data" -type f -name 'f*[02468]' -delete
for t in "${LIVE[@]}"; do run "$t" backup2 backup "$BENCH_DIR/data"; done
for t in "${LIVE[@]}"; do run "$t" forget forget --keep-last 1; done

for t in "${LIVE[@]}"; do
  cmd "$t" "$BENCH_DIR/repo/$t"
  case $t in
    cairn) CMD+=(--json prune --delete-now) ;;
    restic) CMD+=(prune) ;;
    rustic) CMD+=(prune --instant-delete) ;;
  esac
  sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
  log "$t prune"
  /usr/bin/time -f '%e %U %S %M' -o "$BENCH_DIR/time.out" "${CMD[@]}" >"$BENCH_DIR/logs/$t-prune.log" 2>&1 ||
    { tail -n 5 "$BENCH_DIR/logs/$t-prune.log" >&2; die "$t prune failed"; }
  read -r e u s m < <(tail -n1 "$BENCH_DIR/time.out")
  W[$t]=$e; C[$t]=$(awk -v u="$u" -v s="$s" 'BEGIN{printf "%.2f", u+s}'); M[$t]=$((m / 1024))
  log "  wall ${e}s cpu ${C[$t]}s rss ${M[$t]} MiB"
  run "$t" check check
  OK[$t]=ok
done
INFO[cairn]=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("%d blobs, %d referenced; %d packs deleted, %d repacked" % (r["blobs"], r["blobs_used"], r["packs_deleted"], r["packs_repacked"]))' "$BENCH_DIR/logs/cairn-prune.log" 2>/dev/null || echo "?")

ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b > 0) printf "%.2f", a/b; else print "n/a" }'; }
{
  echo "# prune: cairn vs restic vs rustic"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) cores; page cache dropped before each prune"
  for t in "${LIVE[@]}"; do echo "- $t: ${VERS[$t]}"; done
  echo "- data: $FILES files of 2 KiB random bytes (one blob each), backed up; every other file deleted, backed up again; the first snapshot forgotten; then prune deleting at once (cairn --delete-now, rustic --instant-delete), default max-unused 5%"
  echo "- cairn's report: ${INFO[cairn]}"
  echo
  echo "| tool | wall s | CPU s | peak RSS MiB | check after |"
  echo "|---|---:|---:|---:|---|"
  for t in "${LIVE[@]}"; do echo "| $t | ${W[$t]} | ${C[$t]} | ${M[$t]} | ${OK[$t]} |"; done
  echo
  for t in restic rustic; do
    [ -n "${W[$t]:-}" ] && echo "- cairn/$t wall: $(ratio "${W[cairn]}" "${W[$t]}"), peak RSS: $(ratio "${M[cairn]}" "${M[$t]}")"
  done
} >"$RESULTS"
cat "$RESULTS"
