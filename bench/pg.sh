#!/usr/bin/env bash
# PostgreSQL: cairn vs pgBackRest on the same pgbench database, in one run.
# Writes bench/PG.md (overwritten). Needs root (runs the server and both tools as the
# postgres user, drops page caches). Knobs: BENCH_PG_SCALE (pgbench scale, default 50:
# about 800 MB), BENCH_DIR, BENCH_CAIRN_BIN, BENCH_PG_RESULTS.
#
# Both tools archive every WAL file (one archive_command runs both, each timed), take a
# full base backup, then a second one after more writes (pgBackRest: incremental), and
# restore to the same point in time; the restored clusters must match the table checksum
# taken at that time. Then the RPO of cairn's WAL streaming, idle and busy, measured after
# killing the server.
#
# Fairness: before each timed base backup the server is checkpointed and its archive queue
# drained, untimed, so that neither tool pays for work left by the writes or by the other
# (a backup that goes first after pgbench otherwise flushes all of shared_buffers for the
# one after it). The restores and the drill run BENCH_PG_ROUNDS times (default 3), the two
# tools alternating; the table shows medians, the rounds are listed under it.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
W=${BENCH_DIR:-/tmp/cairn-bench-pg}
SCALE=${BENCH_PG_SCALE:-50}
ROUNDS=${BENCH_PG_ROUNDS:-3}
RESULTS=${BENCH_PG_RESULTS:-$HERE/PG.md}
PW=cairn-bench-password
while read -r v; do unset "$v"; done < <(compgen -e | grep -E '^(CAIRN|PG)[A-Z_]*$' || true)

log() { printf '[pg-bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (the server and the tools run as postgres; caches are dropped)"
command -v pgbackrest >/dev/null || { log "installing pgbackrest"; apt-get install -y -q pgbackrest >&2 || { apt-get update -q >&2; apt-get install -y -q pgbackrest >&2; }; }
BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
[ -x "$BIN/initdb" ] || die "no PostgreSQL server binaries"
if [ -n "${BENCH_CAIRN_BIN:-}" ]; then CAIRN_SRC=$BENCH_CAIRN_BIN
else (cd "$ROOT" && cargo build --release -p cairn-cli >&2); CAIRN_SRC=${CARGO_TARGET_DIR:-$ROOT/target}/release/cairn; fi

if [ -e "$W" ] && [ ! -e "$W/.cairn-bench" ]; then die "BENCH_DIR=$W exists and is not ours"; fi
[ -e "$W/data/postmaster.pid" ] && runuser -u postgres -- "$BIN/pg_ctl" -D "$W/data" -m immediate stop >/dev/null 2>&1 || true
rm -rf "$W"; mkdir -p "$W"/{sock,pgbr-repo,pgbr-log,pgbr-lock,pgbr-spool,home,log}; touch "$W/.cairn-bench"
cp "$CAIRN_SRC" "$W/cairn"; printf '%s' "$PW" >"$W/password"
chown -R postgres:postgres "$W"
cleanup() {
  for d in "$W"/data "$W"/r-*; do [ -e "$d/postmaster.pid" ] && runuser -u postgres -- "$BIN/pg_ctl" -D "$d" -m immediate stop >/dev/null 2>&1; done
  pkill -f "$W/cairn pg wal-stream" 2>/dev/null || true
  [ "${BENCH_KEEP:-0}" = 1 ] || rm -rf "$W"
}
trap cleanup EXIT

ENVS="HOME=$W/home XDG_CACHE_HOME=$W/home/.cache CAIRN_REPO=$W/cairn-repo CAIRN_PASSWORD_FILE=$W/password PATH=$BIN:$PATH"
pg() { runuser -u postgres -- env $ENVS "$@"; }
cairn() { pg "$W/cairn" "$@"; }
PGBR="pgbackrest --config=$W/pgbackrest.conf --stanza=bench"
sql() { pg psql -X -A -t -q -h "$W/sock" -d postgres -c "$1"; }
sql_at() { pg psql -X -A -t -q -h "$1" -p 5433 -d postgres -c "$2"; } # a restored cluster
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.2f", b-a}'; }
MD5="SELECT md5(string_agg(aid::text || ':' || abalance::text, ',' ORDER BY aid)) FROM pgbench_accounts"
declare -A R=()

cat >"$W/pgbackrest.conf" <<EOF
[global]
repo1-path=$W/pgbr-repo
repo1-cipher-type=aes-256-cbc
repo1-cipher-pass=$PW
compress-type=zst
process-max=2
start-fast=y
log-level-console=warn
log-level-file=off
log-path=$W/pgbr-log
lock-path=$W/pgbr-lock
spool-path=$W/pgbr-spool

[bench]
pg1-path=$W/data
pg1-socket-path=$W/sock
pg1-port=5432
EOF
# One archive_command, both tools, each timed (ms) into its own log.
cat >"$W/archive-cairn-then-pgbackrest.sh" <<EOF
#!/bin/sh
set -e
a=\$(date +%s%N); env $ENVS "$W/cairn" pg archive-push "\$1"; b=\$(date +%s%N)
$PGBR archive-push "\$1"; c=\$(date +%s%N)
echo \$(( (b - a) / 1000000 )) >>"$W/log/cairn-push.ms"
echo \$(( (c - b) / 1000000 )) >>"$W/log/pgbackrest-push.ms"
EOF
chmod 755 "$W/archive-cairn-then-pgbackrest.sh"; chown postgres:postgres "$W"/pgbackrest.conf "$W/archive-cairn-then-pgbackrest.sh"

log "cluster: initdb, pgbench scale $SCALE"
pg "$BIN/initdb" -D "$W/data" -U postgres --auth=trust -E UTF8 --locale=C >/dev/null
cat >>"$W/data/postgresql.conf" <<EOF
listen_addresses = ''
unix_socket_directories = '$W/sock'
wal_level = replica
max_wal_senders = 4
archive_mode = on
archive_command = '$W/archive-cairn-then-pgbackrest.sh %p'
shared_buffers = 256MB
max_wal_size = 2GB
EOF
pg "$BIN/pg_ctl" -D "$W/data" -l "$W/log/server.log" -w start >/dev/null
cairn init >/dev/null
pg $PGBR stanza-create >/dev/null
pg "$BIN/pgbench" -h "$W/sock" -i -s "$SCALE" -q postgres >/dev/null 2>&1
DBSIZE=$(sql "SELECT pg_size_pretty(pg_database_size('postgres'))")

# Untimed: a checkpoint, and every completed WAL segment archived by both tools.
settle() {
  sql "CHECKPOINT" >/dev/null
  local i=0
  until [ "$(sql "SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'")" = 0 ]; do
    i=$((i + 1)); [ $i -lt 1200 ] || die "the archive queue did not drain in 120 s"; sleep 0.1
  done
}
# Bytes a tool's repository holds besides its WAL archive: what its base backups stored.
backup_bytes() {
  case $1 in
    cairn) du -sb --exclude=wal "$W/cairn-repo" | cut -f1 ;;
    pgbackrest) du -sb --exclude=archive "$W/pgbr-repo" | cut -f1 ;;
  esac
}
base_backup() { # tool kind -> R[tool-kind], R[tool-kind-stored] (MiB)
  settle; local before; before=$(backup_bytes "$1"); drop_caches; local t0; t0=$(now)
  case $1 in
    cairn) cairn pg backup --data-dir "$W/data" --connection "host=$W/sock user=postgres" >"$W/log/$1-$2.log" 2>&1 ;;
    pgbackrest) pg $PGBR --type="$2" backup >"$W/log/$1-$2.log" 2>&1 ;;
  esac || { tail -n 5 "$W/log/$1-$2.log" >&2; die "$1 backup failed"; }
  R[$1-$2]=$(since "$t0"); log "$1 backup ($2): ${R[$1-$2]} s"
  R[$1-$2-stored]=$(awk -v a="$before" -v b="$(backup_bytes "$1")" 'BEGIN { printf "%.1f", (b - a) / 1048576 }')
}
base_backup cairn full
base_backup pgbackrest full
log "writes: pgbench 20 s"
pg "$BIN/pgbench" -h "$W/sock" -T 20 -c 2 -n postgres >/dev/null 2>&1
base_backup cairn incr
base_backup pgbackrest incr
pg "$BIN/pgbench" -h "$W/sock" -T 10 -c 2 -n postgres >/dev/null 2>&1
sleep 1.2
T=$(sql "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'")
SUM_T=$(sql "$MD5")
sleep 1.2
pg "$BIN/pgbench" -h "$W/sock" -T 10 -c 2 -n postgres >/dev/null 2>&1
sql "SELECT pg_switch_wal()" >/dev/null
sleep 3
R[cairn-size]=$(du -sm "$W/cairn-repo" | cut -f1); R[pgbackrest-size]=$(du -sm "$W/pgbr-repo" | cut -f1)

restore() { # tool round: restore to T, start, wait for promotion, compare
  local t=$1 n=$2 d=$W/r-$1 s=$W/r-$1-sock t0 t1
  mkdir -p "$s"; chown postgres:postgres "$s"; drop_caches; t0=$(now)
  case $t in
    cairn) pg "$W/cairn" --password-file "$W/password" pg restore --target-dir "$d" --time "$T" >"$W/log/$t-restore.log" 2>&1 ;;
    pgbackrest) mkdir -p "$d"; chown postgres:postgres "$d"; chmod 700 "$d"
      pg $PGBR --pg1-path="$d" --type=time "--target=$T" --target-action=promote restore >"$W/log/$t-restore.log" 2>&1 ;;
  esac || { tail -n 5 "$W/log/$t-restore.log" >&2; die "$t restore failed"; }
  R[$t-restore-$n]=$(since "$t0"); t1=$(now)
  pg "$BIN/pg_ctl" -D "$d" -l "$W/log/$t-restored.log" -w -t 600 \
     -o "-c unix_socket_directories='$s' -c archive_mode=off -c port=5433" start >/dev/null
  until [ "$(sql_at "$s" "SELECT pg_is_in_recovery()" 2>/dev/null)" = f ]; do sleep 0.2; done
  R[$t-replay-$n]=$(since "$t1")
  R[$t-total-$n]=$(awk -v a="${R[$t-restore-$n]}" -v b="${R[$t-replay-$n]}" 'BEGIN{printf "%.2f", a+b}')
  local got; got=$(pg psql -X -A -t -q -h "$s" -p 5433 -d postgres -c "$MD5")
  [ "$got" = "$SUM_T" ] || R[$t-ok]=DIFFERENT
  pg "$BIN/pg_ctl" -D "$d" -m fast -w stop >/dev/null
  log "$t round $n: restore ${R[$t-restore-$n]} s, replay+promote ${R[$t-replay-$n]} s, state at T: $([ "$got" = "$SUM_T" ] && echo equal || echo DIFFERENT)"
  rm -rf "$d"
}
# The median of R[key-1] .. R[key-ROUNDS] into R[key], the rounds into R[key-all].
med() {
  local k=$1 i vals=()
  for i in $(seq 1 "$ROUNDS"); do vals+=("${R[$k-$i]}"); done
  R[$k]=$(printf '%s\n' "${vals[@]}" | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}')
  R[$k-all]=$(IFS=/; echo "${vals[*]}")
}
R[cairn-ok]=equal; R[pgbackrest-ok]=equal
for i in $(seq 1 "$ROUNDS"); do
  if [ $((i % 2)) = 1 ]; then restore cairn "$i"; restore pgbackrest "$i"; else restore pgbackrest "$i"; restore cairn "$i"; fi
done
for k in cairn-restore cairn-replay cairn-total pgbackrest-restore pgbackrest-replay pgbackrest-total; do med "$k"; done

# The same recovery as a drill (docs/policy.md §5.6): restore, fetch WAL, start a sandbox
# server, replay to T, promote, then check the table against its checksum at T and run
# pg_amcheck. The drill measures its own phases; RTO is its start to validated-ready.
drill_bench() {
  cat >"$W/cairn.toml" <<EOF
[daemon]
state_dir = "$W/drill-state"

[repository.primary]
url = "$W/cairn-repo"
password_file = "$W/password"

[class.db]
repository = "primary"
drill = { pg_bin = "$BIN", timeout = "1h" }

[source.bench]
class = "db"
kind = "postgres"
data_dir = "$W/data"
connection = "host=$W/sock user=postgres"
validate = [{ query = "SELECT ($MD5) = '$SUM_T'" }]
EOF
}
drill_round() { # round
  local n=$1 t0
  drop_caches; t0=$(now)
  env HOME="$W/home" XDG_CACHE_HOME="$W/home/.cache" PATH="$BIN:$PATH" "$W/cairn" --config "$W/cairn.toml" --json drill bench --time "$T" >"$W/log/drill-$n.json" 2>"$W/log/drill-$n.log" \
    || { cat "$W/log/drill-$n.log" "$W/log/drill-$n.json" >&2; die "the drill did not pass"; }
  R[drill-wall-$n]=$(since "$t0")
  eval "$(python3 - "$W/log/drill-$n.json" "$n" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); n = sys.argv[2]
ph = {p["name"]: p["secs"] for p in r["phases"]}
ck = {c["check"]: c["secs"] for c in r["checks"]}
amcheck = sum(v for k, v in ck.items() if k.startswith("pg_amcheck"))
restore = ph.get("restore data", 0) + ph.get("fetch wal", 0) + ph.get("fetch metadata", 0) + ph.get("select", 0)
replay = ph.get("start", 0) + ph.get("wal replay", 0)
print(f'R[drill-rto-{n}]={r["rto_secs"]:.2f}')
print(f'R[drill-restore-{n}]={restore:.2f}')
print(f'R[drill-replay-{n}]={replay:.2f}')
print(f'R[drill-ready-{n}]={restore + replay:.2f}')
print(f'R[drill-validate-{n}]={ph.get("validate", 0):.2f}')
print(f'R[drill-amcheck-{n}]={amcheck:.2f}')
PY
)"
  log "drill round $n: RTO ${R[drill-rto-$n]} s (restore ${R[drill-restore-$n]}, start+replay ${R[drill-replay-$n]}, validate ${R[drill-validate-$n]} of which pg_amcheck ${R[drill-amcheck-$n]}); wall ${R[drill-wall-$n]} s"
}
drill_bench
for i in $(seq 1 "$ROUNDS"); do drill_round "$i"; done
for k in drill-rto drill-restore drill-replay drill-ready drill-validate drill-amcheck; do med "$k"; done

median() { sort -n "$1" | awk '{a[NR]=$1} END{ if (NR) print a[int((NR+1)/2)]; else print "n/a" }'; }
p95() { sort -n "$1" | awk '{a[NR]=$1} END{ if (NR) { i = int(NR * 0.95 + 0.999); if (i > NR) i = NR; print a[i] } else print "n/a" }'; }
R[cairn-push]=$(median "$W/log/cairn-push.ms"); R[pgbackrest-push]=$(median "$W/log/pgbackrest-push.ms")
R[pushes]=$(wc -l <"$W/log/cairn-push.ms")
R[cairn-push95]=$(p95 "$W/log/cairn-push.ms"); R[pgbackrest-push95]=$(p95 "$W/log/pgbackrest-push.ms")

# RPO with streaming: commit, then kill the server; how far behind is the newest
# commit a restore recovers?
rpo() { # idle|busy
  local mode=$1 bpid=
  pg "$W/cairn" pg backup --data-dir "$W/data" --connection "host=$W/sock user=postgres" >/dev/null 2>&1
  sql "CREATE TABLE IF NOT EXISTS rpo (at timestamptz default clock_timestamp())"
  pg "$W/cairn" pg wal-stream --connection "host=$W/sock user=postgres replication=true" --spool "$W/spool" >"$W/log/stream.log" 2>&1 &
  sleep 2
  if [ "$mode" = busy ]; then pg "$BIN/pgbench" -h "$W/sock" -T 60 -c 2 -n postgres >/dev/null 2>&1 & bpid=$!; fi
  for _ in $(seq 1 20); do sql "INSERT INTO rpo DEFAULT VALUES"; sleep 0.1; done
  [ "$mode" = idle ] && sleep 2
  local last; last=$(sql "SELECT extract(epoch FROM max(at)) FROM rpo")
  # The server dies; the streamer on its own keeps what it already has and is stopped
  # without a final flush from the server.
  kill -9 "$(head -n1 "$W/data/postmaster.pid")"; [ -n "$bpid" ] && { kill "$bpid" 2>/dev/null || true; wait "$bpid" 2>/dev/null || true; }
  pkill -9 -f "$W/cairn pg wal-stream" || true; pkill -9 -f "pg_receivewal.*$W/spool" || true; wait 2>/dev/null || true
  local d=$W/r-rpo s=$W/r-rpo-sock; mkdir -p "$s"; chown postgres:postgres "$s"
  pg "$W/cairn" --password-file "$W/password" pg restore --target-dir "$d" --latest >/dev/null
  pg "$BIN/pg_ctl" -D "$d" -l "$W/log/rpo-$mode.log" -w -t 600 -o "-c unix_socket_directories='$s' -c archive_mode=off -c port=5433" start >/dev/null
  until [ "$(sql_at "$s" "SELECT pg_is_in_recovery()" 2>/dev/null)" = f ]; do sleep 0.2; done
  local got; got=$(pg psql -X -A -t -q -h "$s" -p 5433 -d postgres -c "SELECT coalesce(extract(epoch FROM max(at)), 0) FROM rpo")
  R[rpo-$mode]=$(awk -v a="$last" -v b="$got" 'BEGIN{printf "%.2f", a-b}')
  log "RPO $mode: ${R[rpo-$mode]} s"
  pg "$BIN/pg_ctl" -D "$d" -m fast -w stop >/dev/null
  # Back to the primary for the next round: it restarts and recovers from its own WAL.
  rm -rf "$d" "$W/spool"
  pg "$BIN/pg_ctl" -D "$W/data" -l "$W/log/server.log" -w start >/dev/null
}
rpo idle
rpo busy

ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b > 0) printf "%.2f", a/b; else print "n/a" }'; }
{
  echo "# PostgreSQL: cairn vs pgBackRest"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) cores; page cache dropped before each backup, restore and drill; before each backup the server is checkpointed and its archive queue drained (untimed)"
  echo "- PostgreSQL $("$BIN/postgres" --version | awk '{print $3}'); $(pgbackrest version); $("$W/cairn" --version)"
  echo "- database: pgbench scale $SCALE ($DBSIZE); pgBackRest with zstd and aes-256-cbc, process-max=2; cairn with its defaults (zstd, AES-256-GCM)"
  echo "- the second backup follows 20 s of pgbench writes (pgBackRest: --type=incr; cairn: a base backup that skips unchanged files)"
  echo
  echo "| step | cairn | pgBackRest | cairn/pgBackRest |"
  echo "|---|---:|---:|---:|"
  echo "| full base backup (s) | ${R[cairn-full]} | ${R[pgbackrest-full]} | $(ratio "${R[cairn-full]}" "${R[pgbackrest-full]}") |"
  echo "| second base backup (s) | ${R[cairn-incr]} | ${R[pgbackrest-incr]} | $(ratio "${R[cairn-incr]}" "${R[pgbackrest-incr]}") |"
  echo "| stored by the full base backup, WAL aside (MiB) | ${R[cairn-full-stored]} | ${R[pgbackrest-full-stored]} | $(ratio "${R[cairn-full-stored]}" "${R[pgbackrest-full-stored]}") |"
  echo "| stored by the second base backup, WAL aside (MiB) | ${R[cairn-incr-stored]} | ${R[pgbackrest-incr-stored]} | $(ratio "${R[cairn-incr-stored]}" "${R[pgbackrest-incr-stored]}") |"
  echo "| PITR: restore files (s) | ${R[cairn-restore]} | ${R[pgbackrest-restore]} | $(ratio "${R[cairn-restore]}" "${R[pgbackrest-restore]}") |"
  echo "| PITR: replay + promote (s) | ${R[cairn-replay]} | ${R[pgbackrest-replay]} | $(ratio "${R[cairn-replay]}" "${R[pgbackrest-replay]}") |"
  echo "| **PITR total** (s) | ${R[cairn-total]} | ${R[pgbackrest-total]} | $(ratio "${R[cairn-total]}" "${R[pgbackrest-total]}") |"
  echo "| state at the target time | ${R[cairn-ok]} | ${R[pgbackrest-ok]} | |"
  echo "| drill to T: restore (s) | ${R[drill-restore]} | ${R[pgbackrest-restore]} | $(ratio "${R[drill-restore]}" "${R[pgbackrest-restore]}") |"
  echo "| drill to T: start + replay (WAL fetched meanwhile) + promote (s) | ${R[drill-replay]} | ${R[pgbackrest-replay]} | $(ratio "${R[drill-replay]}" "${R[pgbackrest-replay]}") |"
  echo "| drill to T: ready (restore to promoted) vs cairn's PITR total (s) | ${R[drill-ready]} | ${R[cairn-total]} (cairn) | $(ratio "${R[drill-ready]}" "${R[cairn-total]}") |"
  echo "| drill to T: validate (checksum query over all rows; pg_amcheck ${R[drill-amcheck]} s) (s) | ${R[drill-validate]} | - | |"
  echo "| drill RTO (start to validated-ready) vs pgBackRest restore + replay (s) | ${R[drill-rto]} | ${R[pgbackrest-total]} | $(ratio "${R[drill-rto]}" "${R[pgbackrest-total]}") |"
  echo "| archive-push, median per 16 MiB segment (ms, ${R[pushes]} segments) | ${R[cairn-push]} | ${R[pgbackrest-push]} | $(ratio "${R[cairn-push]}" "${R[pgbackrest-push]}") |"
  echo "| archive-push, p95 per segment (ms) | ${R[cairn-push95]} | ${R[pgbackrest-push95]} | $(ratio "${R[cairn-push95]}" "${R[pgbackrest-push95]}") |"
  echo "| repository size after both backups and all WAL (MiB) | ${R[cairn-size]} | ${R[pgbackrest-size]} | $(ratio "${R[cairn-size]}" "${R[pgbackrest-size]}") |"
  echo
  echo "Rounds (restores alternate which tool goes first; the table shows medians): cairn PITR total ${R[cairn-total-all]} s; pgBackRest ${R[pgbackrest-total-all]} s; drill ready ${R[drill-ready-all]} s, RTO ${R[drill-rto-all]} s."
  echo
  echo "RPO with \`cairn pg wal-stream\` (newest commit before killing the server minus newest commit recovered): idle ${R[rpo-idle]} s, busy (pgbench running) ${R[rpo-busy]} s. pgBackRest archives whole segments only: its RPO is bounded by \`archive_timeout\` (0 here, i.e. unbounded on an idle server)."
} >"$RESULTS"
cat "$RESULTS"
