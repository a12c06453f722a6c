#!/usr/bin/env bash
# How cairn's cost grows with the number of files and of blobs (issue 15's scale target).
# Two synthetic datasets, each at two sizes ten times apart:
#   files: N small files (64 B - 2 KiB, 1,000 per directory), default 100,000 and 1,000,000;
#   blobs: a file set chunked small (init --chunk-size 128,512,2K) into about N blobs,
#          default 1,000,000 and 10,000,000 (about 0.6 KiB of random data per blob).
# For each: initial backup and unchanged re-backup, wall time, CPU and peak RSS, cold page
# cache (dropped before each run when root). Writes bench/SCALE.md (overwritten).
# Knobs: SCALE_DIR (default /var/tmp/cairn-scale), SCALE_FILES="100000 1000000",
# SCALE_BLOBS="1000000 10000000", BENCH_CAIRN_BIN (default: build --release), SCALE_RESULTS.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
SCALE_DIR=${SCALE_DIR:-/var/tmp/cairn-scale}
SCALE_FILES=${SCALE_FILES:-100000 1000000}
SCALE_BLOBS=${SCALE_BLOBS:-1000000 10000000}
SCALE_RESULTS=${SCALE_RESULTS:-$HERE/SCALE.md}
CHUNKS=128,512,2K
PW=cairn-scale-password
while read -r v; do unset "$v"; done < <(compgen -e | grep -E '^CAIRN_' || true)

log() { printf '[scale %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
[ -x /usr/bin/time ] || die "/usr/bin/time is missing (apt-get install time)"
command -v python3 >/dev/null || die "python3 is missing"

if [ -n "${BENCH_CAIRN_BIN:-}" ]; then CAIRN=$BENCH_CAIRN_BIN
else
  log "building cairn (cargo build --release -p cairn-cli)"
  (cd "$ROOT" && cargo build --release -p cairn-cli >&2) || die "cargo build failed"
  CAIRN=${CARGO_TARGET_DIR:-$ROOT/target}/release/cairn
fi
[ -x "$CAIRN" ] || die "no cairn binary at $CAIRN"

if [ -e "$SCALE_DIR" ] && [ -n "$(ls -A "$SCALE_DIR")" ] && [ ! -e "$SCALE_DIR/.cairn-scale" ]; then
  die "SCALE_DIR=$SCALE_DIR exists, is not empty and is not ours: choose another"
fi
rm -rf "$SCALE_DIR"; mkdir -p "$SCALE_DIR"; touch "$SCALE_DIR/.cairn-scale"
trap 'rc=$?; [ $rc -eq 0 ] && rm -rf "$SCALE_DIR" || log "kept $SCALE_DIR (exit $rc)"' EXIT

DROP=0
sync; if (echo 3 >/proc/sys/vm/drop_caches) 2>/dev/null; then DROP=1; fi
cold() { sync; [ "$DROP" = 0 ] || echo 3 >/proc/sys/vm/drop_caches; }

# gen KIND N DIR: the dataset, deterministic (seeded by N).
gen() {
  python3 - "$1" "$2" "$3" <<'EOF'
import os, random, sys
kind, n, root = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rng = random.Random(n)
if kind == "files":
    # n files of 64 B to 2 KiB, 1,000 per directory: half random bytes, half text, so
    # the backup compresses some of them as real small files would be.
    for d in range((n + 999) // 1000):
        dd = os.path.join(root, f"d{d:05}")
        os.makedirs(dd)
        for i in range(d * 1000, min(n, d * 1000 + 1000)):
            size = rng.randrange(64, 2048)
            if i % 2:
                data = rng.randbytes(size)
            else:
                data = (f"file {i} line " * (size // 12 + 1)).encode()[:size]
            with open(os.path.join(dd, f"f{i:07}"), "wb") as f:
                f.write(data)
else:
    # About n blobs of ~0.6 KiB (chunk sizes 128/512/2K on random data): files of 1,000
    # blobs' worth, 100 per directory, so no tree blob holds a huge content list.
    per_file = 640 * 1000
    files = max(1, n // 1000)
    for i in range(files):
        dd = os.path.join(root, f"d{i // 100:04}")
        os.makedirs(dd, exist_ok=True)
        with open(os.path.join(dd, f"f{i:06}"), "wb") as f:
            f.write(rng.randbytes(per_file))
EOF
}

ROWS=()
# run KIND N LABEL ARGS...: one timed cairn command; appends "wall cpu rss_mib" to $RES.
run() {
  local tf=$SCALE_DIR/time.out lf=$SCALE_DIR/$1-$2-$3.log
  shift 3
  cold
  if ! /usr/bin/time -f '%e %U %S %M' -o "$tf" env CAIRN_REPO="$REPO" CAIRN_PASSWORD=$PW "$CAIRN" "$@" >"$lf" 2>&1; then
    tail -n 5 "$lf" >&2; die "cairn $* failed (log $lf)"
  fi
  local e u s m; read -r e u s m < <(tail -n1 "$tf")
  RES="$e $(awk -v u="$u" -v s="$s" 'BEGIN{printf "%.1f", u+s}') $((m / 1024))"
  LAST_JSON=$(tail -n1 "$lf")
}
field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$LAST_JSON" "$1"; }

for kind in files blobs; do
  if [ "$kind" = files ]; then sizes=$SCALE_FILES; else sizes=$SCALE_BLOBS; fi
  for n in $sizes; do
    DATA=$SCALE_DIR/data-$kind-$n REPO=$SCALE_DIR/repo-$kind-$n
    log "$kind $n: generating $DATA"
    gen "$kind" "$n" "$DATA"
    bytes=$(du -sb "$DATA" | cut -f1); files=$(find "$DATA" -type f | wc -l)
    if [ "$kind" = files ]; then env CAIRN_REPO="$REPO" CAIRN_PASSWORD=$PW "$CAIRN" init >/dev/null
    else env CAIRN_REPO="$REPO" CAIRN_PASSWORD=$PW "$CAIRN" init --chunk-size "$CHUNKS" >/dev/null; fi
    log "$kind $n: initial backup"
    run "$kind" "$n" initial backup --json "$DATA"; init=$RES
    blobs=$(field blobs_added)
    log "  $init (wall s, cpu s, peak RSS MiB); $blobs blobs"
    log "$kind $n: unchanged re-backup"
    run "$kind" "$n" unchanged backup --json "$DATA"; again=$RES
    added=$(field bytes_added)
    log "  $again; $added bytes added"
    repo=$(du -sb "$REPO" | cut -f1)
    ROWS+=("$kind $n $files $bytes $blobs $repo $init $again $added")
    rm -rf "$DATA" "$REPO"
  done
done

# Report: per-unit costs and how they grow from the small size to the large one.
{
  echo "# cairn at scale"
  echo
  echo "Written by \`bench/scale.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC') ($(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM; $("$CAIRN" --version)); page cache $( [ "$DROP" = 1 ] && echo "dropped before each run" || echo "NOT dropped (not root)")."
  echo "Datasets: \`files\` = small files (64 B - 2 KiB, 1,000 per directory, half random, half text), default chunk sizes;"
  echo "\`blobs\` = 640 KB files of random data in a repository initialized with \`--chunk-size $CHUNKS\`."
  echo
  echo "| dataset | files | data MiB | blobs | repository MiB | initial s (cpu s) | initial peak RSS MiB | unchanged s (cpu s) | unchanged peak RSS MiB | unchanged added B |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  for r in "${ROWS[@]}"; do
    read -r kind n files bytes blobs repo iw ic im uw uc um added <<<"$r"
    printf '| %s %s | %s | %.0f | %s | %.0f | %s (%s) | %s | %s (%s) | %s | %s |\n' "$kind" "$n" "$files" \
      "$(awk -v b="$bytes" 'BEGIN{print b/1048576}')" "$blobs" "$(awk -v b="$repo" 'BEGIN{print b/1048576}')" \
      "$iw" "$ic" "$im" "$uw" "$uc" "$um" "$added"
  done
  echo
  echo "Growth from the smaller size to the larger of each dataset (the larger has ten times the files or blobs):"
  echo
  echo "| dataset | initial µs per file/blob | unchanged µs per file/blob | initial RSS growth per added blob | unchanged RSS growth per added blob |"
  echo "|---|---:|---:|---:|---:|"
  for kind in files blobs; do
    small= big=
    for r in "${ROWS[@]}"; do [[ $r == "$kind "* ]] && { [ -z "$small" ] && small=$r || big=$r; }; done
    [ -n "$small" ] && [ -n "$big" ] || continue
    read -r _ n1 f1 _ b1 _ iw1 _ im1 uw1 _ um1 _ <<<"$small"
    read -r _ n2 f2 _ b2 _ iw2 _ im2 uw2 _ um2 _ <<<"$big"
    unit=$f2; [ "$kind" = blobs ] && unit=$b2
    unit1=$f1; [ "$kind" = blobs ] && unit1=$b1
    awk -v k="$kind" -v n1="$n1" -v n2="$n2" -v u1="$unit1" -v u="$unit" \
        -v iw1="$iw1" -v iw2="$iw2" -v uw1="$uw1" -v uw2="$uw2" -v im1="$im1" -v im2="$im2" -v um1="$um1" -v um2="$um2" \
        -v b1="$b1" -v b2="$b2" 'BEGIN{
      printf "| %s %s -> %s | %.1f -> %.1f | %.1f -> %.1f | %.0f B | %.0f B |\n", k, n1, n2,
        iw1*1e6/u1, iw2*1e6/u, uw1*1e6/u1, uw2*1e6/u, (im2-im1)*1048576/(b2-b1), (um2-um1)*1048576/(b2-b1) }'
  done
} >"$SCALE_RESULTS"
log "wrote $SCALE_RESULTS"
cat "$SCALE_RESULTS"
