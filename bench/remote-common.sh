# Shared by bench/s3.sh and bench/sftp.sh (sourced, not run): the dataset, the four
# operations each tool runs against a remote repository and on local disk, and ratios.
# The caller defines log(), run TOOL OP CMD... (timing into R/M), $W and $MIB, and the
# command arrays C (cairn remote), CL (cairn local disk) and RS (restic remote).

# About $MIB MiB of /usr into $W/data; sets INFO.
make_dataset() {
  log "dataset: ${MIB} MiB of /usr"
  { find /usr/share /usr/lib -type f -printf '%s\t%p\n' 2>/dev/null || true; } | LC_ALL=C sort -t$'\t' -k2 |
    awk -F'\t' -v lim=$((MIB * 1048576)) 't < lim { print substr($2, 2); t += $1 }' >"$W/list"
  tar -C / --no-recursion --verbatim-files-from -T "$W/list" -cf - 2>/dev/null | tar -C "$W/data" -xpf - || true
  INFO="$(find "$W/data" -type f | wc -l) files, $(du -sm "$W/data" | cut -f1) MiB"
}

# init, then initial backup, unchanged re-backup, restore (verified with diff into
# R[tool-ok]) and check --read-data, each op for cairn, restic and cairn on local disk.
run_operations() {
  "${C[@]}" init >/dev/null; "${CL[@]}" init >/dev/null; "${RS[@]}" init >/dev/null
  local op t
  for op in backup_initial backup_unchanged restore check; do
    for t in cairn restic local; do
      case $t in cairn) T=("${C[@]}") ;; local) T=("${CL[@]}") ;; *) T=("${RS[@]}") ;; esac
      case $op in
        backup*) run $t $op "${T[@]}" backup "$W/data" ;;
        restore) rm -rf "$W/restore/$t"; mkdir -p "$W/restore/$t"; run $t $op "${T[@]}" restore latest --target "$W/restore/$t"
                 diff -rq "$W/data" "$W/restore/$t$W/data" >/dev/null && R[$t-ok]=ok || R[$t-ok]=MISMATCH ;;
        check) run $t $op "${T[@]}" check --read-data ;;
      esac
    done
  done
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b > 0 && a > 0) printf "%.2f", a/b; else print "n/a" }'; }
