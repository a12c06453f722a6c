#!/usr/bin/env bash
# The audit log at scale: 1,000,000 records (1,000 segments of 1,000, as a daemon flushing
# per batch would write) in a local repository, then `cairn audit verify` end to end and
# what one job pays for its record (anchor + append) beside an unchanged re-backup of a
# real tree. Writes bench/AUDIT.md (overwritten). Knobs: BENCH_DIR, BENCH_AUDIT_SEGMENTS,
# BENCH_AUDIT_RECORDS, BENCH_AUDIT_SRC (default /usr/share/doc), BENCH_ROUNDS (default 3).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
W=${BENCH_DIR:-/tmp/cairn-bench-audit}
SEGS=${BENCH_AUDIT_SEGMENTS:-1000}
PER=${BENCH_AUDIT_RECORDS:-1000}
SRC=${BENCH_AUDIT_SRC:-/usr/share/doc}
ROUNDS=${BENCH_ROUNDS:-3}
RESULTS=${BENCH_AUDIT_RESULTS:-$HERE/AUDIT.md}
while read -r v; do unset "$v"; done < <(compgen -e | grep -E '^CAIRN[A-Z_]*$' || true)

log() { printf '[audit-bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
(cd "$ROOT" && cargo build --release -p cairn-cli >&2 && cargo test --release -p cairn-audit --test fill --no-run >&2)
# HOME moves below; cargo and rustup keep theirs.
export CARGO_HOME=${CARGO_HOME:-$HOME/.cargo} RUSTUP_HOME=${RUSTUP_HOME:-$HOME/.rustup}
CAIRN=${CARGO_TARGET_DIR:-$ROOT/target}/release/cairn
if [ -e "$W" ] && [ ! -e "$W/.cairn-bench" ]; then die "BENCH_DIR=$W exists and is not ours"; fi
rm -rf "$W"; mkdir -p "$W"; touch "$W/.cairn-bench"
trap '[ "${BENCH_KEEP:-0}" = 1 ] || rm -rf "$W"' EXIT
printf 'bench' >"$W/password"
export HOME=$W XDG_CACHE_HOME=$W/.cache CAIRN_PASSWORD_FILE=$W/password CAIRN_REPO=$W/repo
"$CAIRN" init -q
log "backing up $SRC"
"$CAIRN" -q backup "$SRC"
log "writing $SEGS x $PER audit records"
fill=$(cd "$ROOT" && CAIRN_BENCH_REPO=$W/repo CAIRN_BENCH_PASSWORD=bench CAIRN_BENCH_SEGMENTS=$SEGS \
  CAIRN_BENCH_RECORDS=$PER cargo test -q --release -p cairn-audit --test fill -- --ignored --nocapture \
  | grep -E '^(appended|loaded|per job)')
echo "$fill" >&2
secs() { local s e; s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N); echo "$e - $s" | bc; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
verify=(); rebackup=()
for _ in $(seq "$ROUNDS"); do
  verify+=("$(secs "$CAIRN" -q audit verify)")
  rebackup+=("$(secs "$CAIRN" -q backup "$SRC")")
done
v=$(printf '%.2f' "$(printf '%s\n' "${verify[@]}" | median)")
b=$(printf '%.2f' "$(printf '%s\n' "${rebackup[@]}" | median)")
job_ms=$(echo "$fill" | sed -nE 's/^per job: anchor \+ append ([0-9.]+) ms/\1/p')
share=$(printf '%.2f' "$(echo "scale=4; $job_ms / 10 / $b" | bc)")
records=$(( SEGS * PER ))
{
  echo "# Audit log (bench/audit.sh)"
  echo
  echo "$(date -u +%Y-%m-%d), commit $(cd "$ROOT" && git rev-parse --short HEAD), $(nproc) cores, release build, median of $ROUNDS runs."
  echo
  echo "| measure | value |"
  echo "|---|---:|"
  echo "| records in the log | $records ($SEGS segments) |"
  echo "| \`cairn audit verify\`, end to end | ${v} s |"
  echo "| one job's audit work (snapshot anchor + append) on that log | ${job_ms} ms |"
  echo "| unchanged re-backup of $SRC (with its record) | ${b} s |"
  echo "| audit share of that re-backup | ${share} % |"
  echo
  echo "From the library (bench's own process): $(echo "$fill" | tr '\n' ';' | sed 's/;$//; s/;/; /g')."
} >"$RESULTS"
cat "$RESULTS"
