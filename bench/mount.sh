#!/usr/bin/env bash
# `cairn mount` against `restic mount` on the same file in one run: 4 KiB reads at random
# offsets of a large file (cold: page cache dropped, each read in another chunk; warm:
# the same offsets again), and a sequential read of the whole file. Writes bench/MOUNT.md.
# Usage: bash bench/mount.sh [FILE_MIB] (default 512). Needs root, /dev/fuse, fuse3.
set -euo pipefail
cd "$(dirname "$0")/.."
MIB=${1:-512}
READS=200
cargo build --release -q -p cairn-cli
C=$PWD/target/release/cairn
command -v restic >/dev/null || apt-get install -y -q restic >&2
command -v fusermount3 >/dev/null || apt-get install -y -q fuse3 >&2
W=$(mktemp -d /tmp/cairn-mount-bench.XXXXXX)
PIDS=()
cleanup() {
  for m in "$W/mnt-cairn" "$W/mnt-restic"; do umount -l "$m" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$W"
}
trap cleanup EXIT
mkdir -p "$W/data" "$W/mnt-cairn" "$W/mnt-restic"
head -c "$((MIB << 20))" /dev/urandom > "$W/data/big.bin"
echo bench-password > "$W/pass"
export HOME=$W/home CAIRN_REPO=$W/cairn CAIRN_PASSWORD_FILE=$W/pass RESTIC_REPOSITORY=$W/restic RESTIC_PASSWORD_FILE=$W/pass
mkdir -p "$HOME"
$C init -q && $C backup -q "$W/data"
restic init -q && restic backup -q "$W/data" >/dev/null
$C mount "$W/mnt-cairn" 2>/dev/null & PIDS+=($!)
restic mount "$W/mnt-restic" >/dev/null 2>&1 & PIDS+=($!)
for m in "$W/mnt-cairn" "$W/mnt-restic"; do
  for _ in $(seq 1 200); do [ -e "$m/snapshots/latest" ] && break; sleep 0.1; done
done
CF=$(echo "$W"/mnt-cairn/snapshots/latest"$W"/data/big.bin)
RF=$(echo "$W"/mnt-restic/snapshots/latest"$W"/data/big.bin)
measure() { # file -> "cold_median cold_p95 warm_median seq_seconds" (ms, ms, µs, s)
  sync; echo 3 > /proc/sys/vm/drop_caches
  python3 - "$1" "$READS" <<'PY'
import os, random, sys, time
path, n = sys.argv[1], int(sys.argv[2])
size = os.path.getsize(path)
rnd = random.Random(42)
offs = [rnd.randrange(0, size - 4096) // 4096 * 4096 for _ in range(n)]
fd = os.open(path, os.O_RDONLY)
def run():
    t = []
    for o in offs:
        s = time.perf_counter(); b = os.pread(fd, 4096, o); t.append((time.perf_counter() - s) * 1000)
        assert len(b) == 4096
    t.sort(); return t[len(t) // 2], t[int(len(t) * 0.95)]
cold = run(); warm = run()
os.close(fd)
s = time.perf_counter()
with open(path, 'rb') as f:
    while f.read(1 << 20): pass
print(f"{cold[0]:.2f} {cold[1]:.2f} {warm[0] * 1000:.1f} {time.perf_counter() - s:.2f}")
PY
}
# The sequential read comes after the random ones: drop caches between tools only.
read -r CC CC95 CW CS <<<"$(measure "$CF")"
read -r RC RC95 RW RS <<<"$(measure "$RF")"
cmp "$CF" "$W/data/big.bin" && cmp "$RF" "$W/data/big.bin"
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
cat > bench/MOUNT.md <<MD
# Mounted repositories: random and sequential reads

\`bash bench/mount.sh $MIB\` ($(date -u +%Y-%m-%d), release build, $(nproc) cores, local repositories):
one ${MIB} MiB file of random data backed up by cairn and by restic $(restic version | awk '{print $2}'),
both mounted with FUSE; $READS reads of 4 KiB at random offsets (the same offsets for
both; page cache dropped before), then the same offsets again, then the whole file read
sequentially.

| measure | cairn | restic | ratio |
|---|---:|---:|---:|
| random 4 KiB read, cold, median | $CC ms | $RC ms | $(ratio "$CC" "$RC") |
| random 4 KiB read, cold, p95 | $CC95 ms | $RC95 ms | $(ratio "$CC95" "$RC95") |
| random 4 KiB read, warm, median | $CW µs | $RW µs | $(ratio "$CW" "$RW") |
| sequential read of the file | $CS s | $RS s | $(ratio "$CS" "$RS") |

A cold read costs one blob (about 1 MiB on average, at most 4 MiB): read from its pack,
decrypted and, where it compressed, decompressed; \`open\` places every blob from the
index alone. Warm reads come from the kernel's page cache (cairn opens files with
\`FOPEN_KEEP_CACHE\`: snapshot contents never change) or cairn's 64 MiB blob cache.
MD
cat bench/MOUNT.md
