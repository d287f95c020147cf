#!/usr/bin/env bash
# Where a keelfs daemon's time goes on one workload of bench/compare.sh.
#
#   bench/profile.sh WORKLOAD [TOOL]
#   WORKLOAD: write (SIZE_MIB MiB dd with fsync), read (cold read of it),
#             files (NFILES small files created, ls -l, removed)
#   TOOL:     strace (default: `strace -c -f -p` on the daemon: syscalls by
#             count and time), perf (`perf record -g` on the daemon, then
#             `perf report`), none (just the rate)
# Prints the rate, the FUSE requests answered (the daemon's status
# counter) and the tool's report, plus syscalls per request.
# Same environment as compare.sh: KEELFS_BIN, KEELFS_OPTS, WORK (default
# /var/tmp/keelfs-profile), SIZE_MIB, NFILES. Needs root.
set -euo pipefail
WORKLOAD=${1:?usage: profile.sh write|read|files [strace|perf|none]}
TOOL=${2:-strace}
SIZE_MIB=${SIZE_MIB:-512}
NFILES=${NFILES:-5000}
WORK=${WORK:-/var/tmp/keelfs-profile}
KEELFS_OPTS=${KEELFS_OPTS:-}
. "$(dirname "$0")/keelfs_bin.sh"
M=$WORK/mnt
mkdir -p "$M"
tracer=
cleanup() {
  [ -n "$tracer" ] && kill -INT "$tracer" 2>/dev/null && wait "$tracer" 2>/dev/null || true
  umount "$M" 2>/dev/null || true
  rm -f "$WORK/a.img" "$WORK/b.img"; [ -n "${KEEP_PERF:-}" ] || rm -f "$WORK/perf.data"
}
trap cleanup EXIT

rm -f "$WORK/a.img" "$WORK/b.img"
truncate -s 4G "$WORK/a.img" "$WORK/b.img"
"$MKFS" -q -F "$WORK/a.img" "$WORK/b.img"
"$KEELFS" "$WORK/a.img,$WORK/b.img" "$M" ${KEELFS_OPTS:+-o "$KEELFS_OPTS"}
pid=$(pgrep -n -f "^$KEELFS $WORK/a.img,$WORK/b.img ")
answered() { "$KEELFS" status "$M" | sed -n 's/^requests: \([0-9]*\) answered.*/\1/p'; }
# CPU seconds (user + system, every thread) the daemon has used.
# Context switches of every thread of the daemon (a thread that sleeps and
# is woken again counts one): the hand-offs a request costs.
switches() { cat /proc/"$pid"/task/*/status | awk '/^(non)?voluntary_ctxt_switches/ {n += $2} END {print n}'; }
cpu() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$pid/stat"; }

# Setup outside the measurement: the read workload needs the file.
if [ "$WORKLOAD" = read ]; then
  dd if=/dev/zero of="$M/big" bs=1M count="$SIZE_MIB" conv=fsync status=none
fi
mkdir -p "$M/d"
sync; echo 3 > /proc/sys/vm/drop_caches

case $TOOL in
  strace) strace -c -f -p "$pid" -o "$WORK/strace.txt" & tracer=$! ; sleep 1 ;;
  perf) perf record -g -F 2000 -p "$pid" -o "$WORK/perf.data" 2>/dev/null & tracer=$! ; sleep 1 ;;
  none) ;;
  *) echo "unknown tool $TOOL" >&2; exit 1 ;;
esac
before=$(answered)
c0=$(cpu); s0=$(switches)
t0=$(date +%s.%N)
case $WORKLOAD in
  write) dd if=/dev/zero of="$M/big" bs=1M count="$SIZE_MIB" conv=fsync status=none; units=$SIZE_MIB; unit=MiB ;;
  read) dd if="$M/big" of=/dev/null bs=1M status=none; units=$SIZE_MIB; unit=MiB ;;
  files) (cd "$M/d" && for i in $(seq 1 "$NFILES"); do echo x > f$i; done && ls -l >/dev/null && rm -f f*)
         sync; units=$NFILES; unit=files ;;
  *) echo "unknown workload $WORKLOAD" >&2; exit 1 ;;
esac
t1=$(date +%s.%N)
c1=$(cpu); s1=$(switches)
after=$(answered)
requests=$((after - before - 1))
python3 -c "
u, t, c, r = $units, $t1 - $t0, $c1 - $c0, max($requests, 1)
print(f'$WORKLOAD: {u/t:.1f} $unit/s (under $TOOL), {r} FUSE requests, '
      f'daemon CPU {c:.2f} s = {c*1e6/r:.1f} us/request, {c*1e6/u:.0f} us per ${unit%s}, '
      f'{($s1 - $s0)/r:.2f} context switches/request')"
if [ -n "$tracer" ]; then
  kill -INT "$tracer"; wait "$tracer" 2>/dev/null || true; tracer=
fi
case $TOOL in
  strace)
    cat "$WORK/strace.txt"
    python3 - "$WORK/strace.txt" "$requests" <<'PY'
import sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip() and l.split()[0][0].isdigit()]
n = max(int(sys.argv[2]), 1)
print("per FUSE request:", ", ".join(f"{r[-1]} {int(r[3])/n:.2f}" for r in rows if len(r) >= 5 and int(r[3]) / n >= 0.05))
PY
    rm -f "$WORK/strace.txt" ;;
  perf) perf report -i "$WORK/perf.data" --no-children --sort comm --stdio -g none 2>/dev/null | grep -v "^$" | grep -v "^#" | head -20
        perf report -i "$WORK/perf.data" --no-children --sort sym --stdio -g none --percent-limit 0.7 2>/dev/null | grep -v "^$" | grep -v "^#" | head -60 ;;
esac
