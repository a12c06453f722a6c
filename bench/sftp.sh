#!/usr/bin/env bash
# cairn vs restic on an SFTP repository (a private OpenSSH sshd on 127.0.0.1, the same
# for both), and cairn on local disk, same data, one run.
# Writes bench/SFTP.md (overwritten). Knobs: BENCH_SFTP_MIB (dataset size, default 400),
# BENCH_DIR, BENCH_CAIRN_BIN, BENCH_SFTP_RESULTS. Needs sshd (openssh-server), restic.
#
# Both tools go through the system ssh with the same client config (one connection
# each); restic with `-o sftp.command`, cairn with CAIRN_SSH_ARGS.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
W=${BENCH_DIR:-/tmp/cairn-bench-sftp}
MIB=${BENCH_SFTP_MIB:-400}
RESULTS=${BENCH_SFTP_RESULTS:-$HERE/SFTP.md}
PW=cairn-bench-password
while read -r v; do unset "$v"; done < <(compgen -e | grep -E '^(RESTIC|RUSTIC|CAIRN)_' || true)

log() { printf '[sftp-bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
# shellcheck source=remote-common.sh
. "$HERE/remote-common.sh"
[ -x /usr/sbin/sshd ] || die "no sshd (apt-get install openssh-server)"
command -v restic >/dev/null || die "no restic (apt-get install restic)"
[ -x /usr/bin/time ] || die "no /usr/bin/time"
if [ -n "${BENCH_CAIRN_BIN:-}" ]; then CAIRN=$BENCH_CAIRN_BIN
else (cd "$ROOT" && cargo build --release -p cairn-cli >&2); CAIRN=${CARGO_TARGET_DIR:-$ROOT/target}/release/cairn; fi
if [ -e "$W" ] && [ ! -e "$W/.cairn-bench" ]; then die "BENCH_DIR=$W exists and is not ours"; fi
rm -rf "$W"; mkdir -p "$W"/{ssh,data,restore,logs,cache,remote}; touch "$W/.cairn-bench"

ssh-keygen -q -t ed25519 -N '' -f "$W/ssh/host_ed25519"
ssh-keygen -q -t ed25519 -N '' -f "$W/ssh/id_ed25519"
cp "$W/ssh/id_ed25519.pub" "$W/ssh/authorized_keys"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p /run/sshd 2>/dev/null || true
cat >"$W/ssh/sshd_config" <<CONF
Port $PORT
ListenAddress 127.0.0.1
HostKey $W/ssh/host_ed25519
PidFile $W/ssh/sshd.pid
AuthorizedKeysFile $W/ssh/authorized_keys
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
Subsystem sftp internal-sftp
CONF
echo "[127.0.0.1]:$PORT $(cat "$W/ssh/host_ed25519.pub")" >"$W/ssh/known_hosts"
cat >"$W/ssh/config" <<CONF
Host bench
  HostName 127.0.0.1
  Port $PORT
  User $(id -un)
  IdentityFile $W/ssh/id_ed25519
  IdentitiesOnly yes
  UserKnownHostsFile $W/ssh/known_hosts
  BatchMode yes
CONF
/usr/sbin/sshd -D -e -f "$W/ssh/sshd_config" 2>"$W/logs/sshd.log" &
SSHD=$!
trap 'kill $SSHD 2>/dev/null; rm -rf "$W"' EXIT
until ssh -F "$W/ssh/config" bench true 2>/dev/null; do kill -0 $SSHD 2>/dev/null || die "sshd exited: $(tail -n 3 "$W/logs/sshd.log")"; sleep 0.2; done

make_dataset

declare -A R=() M=()
run() { # tool op args...
  local t=$1 op=$2; shift 2
  sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
  if /usr/bin/time -f '%e %M' -o "$W/time" "$@" >"$W/logs/$t-$op.log" 2>&1; then
    read -r e m < "$W/time"; R[$t-$op]=$e; M[$t-$op]=$((m / 1024)); log "$t $op: ${e} s, ${M[$t-$op]} MiB"
  else
    R[$t-$op]=FAIL; log "$t $op FAILED"; tail -n 5 "$W/logs/$t-$op.log" >&2
  fi
}
C=(env "CAIRN_REPO=sftp://bench$W/remote/cairn" "CAIRN_SSH_ARGS=-F $W/ssh/config" "CAIRN_SFTP_CONNECTIONS=${BENCH_SFTP_CONNECTIONS:-1}" "CAIRN_PASSWORD=$PW" "CAIRN_CACHE_DIR=$W/cache/cairn" "$CAIRN")
CL=(env "CAIRN_REPO=$W/local-repo" "CAIRN_PASSWORD=$PW" "$CAIRN")
RS=(env "RESTIC_PASSWORD=$PW" "RESTIC_CACHE_DIR=$W/cache/restic" restic -r "sftp:bench:$W/remote/restic" -o "sftp.command=ssh -F $W/ssh/config bench -s sftp")
run_operations
{
  echo "# cairn vs restic on SFTP (OpenSSH sshd on 127.0.0.1)"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) cores; page cache dropped before each run"
  echo "- $("$CAIRN" --version); $(restic version | head -n1); $(ssh -V 2>&1)"
  echo "- data: $INFO (from /usr/share, /usr/lib); caches start empty"
  echo
  echo "| operation | cairn s | cairn RSS MiB | restic s | restic RSS MiB | cairn/restic | cairn, local disk s | SFTP throughput / local |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|"
  for op in backup_initial backup_unchanged restore check; do
    echo "| $op | ${R[cairn-$op]} | ${M[cairn-$op]:-} | ${R[restic-$op]} | ${M[restic-$op]:-} | $(ratio "${R[cairn-$op]}" "${R[restic-$op]}") | ${R[local-$op]} | $(ratio "${R[local-$op]}" "${R[cairn-$op]}") |"
  done
  echo
  echo "Restore verified: cairn ${R[cairn-ok]}, restic ${R[restic-ok]}, cairn local ${R[local-ok]}."
} >"$RESULTS"
cat "$RESULTS"
