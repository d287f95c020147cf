#!/bin/sh
# Foreground read throughput on a keelfs mount, alone and with an online
# scrub (idle I/O class, `keelfs scrub`) running on the same mount.
#
# What it measures: a 2-leg mirror of image files, a file of $FILE_MIB MiB
# and $SCRUB_MIB MiB of other files for the scrub to walk; the page cache is
# dropped before each read so the reads reach the daemon. It prints the
# solo MiB/s, the MiB/s while the scrub runs, and their ratio (1.0 = the
# scrub costs the reader nothing).
#
# Needs root and /dev/fuse. Uses the binaries in $BIN (default
# target/debug; build them first: cargo build -p keelfs-fs -p keelfs-mkfs).
# Image files go to $DIR (default a new directory under /tmp; tmpfs-backed
# images measure the software path, not a disk).
set -eu
BIN=${BIN:-$(dirname "$0")/../target/debug}
FILE_MIB=${FILE_MIB:-256}
SCRUB_MIB=${SCRUB_MIB:-512}
ROUNDS=${ROUNDS:-3}
DIR=${DIR:-$(mktemp -d /tmp/keelfs-bench-XXXXXX)}
MNT=$DIR/mnt
SIZE_MIB=$(( (FILE_MIB + SCRUB_MIB) * 2 + 256 ))

cleanup() {
    umount "$MNT" 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT

mkdir -p "$MNT"
truncate -s "${SIZE_MIB}M" "$DIR/leg0.img" "$DIR/leg1.img"
"$BIN/mkfs-keelfs" -q "$DIR/leg0.img" "$DIR/leg1.img" >/dev/null 2>&1 ||
    "$BIN/mkfs-keelfs" "$DIR/leg0.img" "$DIR/leg1.img" >/dev/null
"$BIN/keelfs" "$DIR/leg0.img,$DIR/leg1.img" "$MNT" -o "logfile=$DIR/daemon.log"

dd if=/dev/urandom of="$MNT/reader" bs=1M count="$FILE_MIB" status=none
i=0
while [ $i -lt $(( SCRUB_MIB / 64 )) ]; do
    dd if=/dev/urandom of="$MNT/scrubme$i" bs=1M count=64 status=none
    i=$(( i + 1 ))
done
sync

# MiB/s of one cold read of the reader file.
read_mibs() {
    echo 3 > /proc/sys/vm/drop_caches
    start=$(date +%s.%N)
    dd if="$MNT/reader" of=/dev/null bs=1M status=none
    end=$(date +%s.%N)
    echo "$FILE_MIB $start $end" | awk '{ printf "%.1f", $1 / ($3 - $2) }'
}

best() { tr ' ' '\n' | sort -n | tail -1; }

solo=""
r=0
while [ $r -lt "$ROUNDS" ]; do solo="$solo $(read_mibs)"; r=$(( r + 1 )); done

busy=""
r=0
while [ $r -lt "$ROUNDS" ]; do
    "$BIN/keelfs" scrub "$MNT" start >/dev/null
    busy="$busy $(read_mibs)"
    "$BIN/keelfs" scrub "$MNT" status | sed 's/^/  /'
    "$BIN/keelfs" scrub "$MNT" cancel >/dev/null 2>&1 || true
    sleep 0.5
    r=$(( r + 1 ))
done

s=$(echo $solo | best)
b=$(echo $busy | best)
echo "reader solo:        $s MiB/s   (rounds:$solo)"
echo "reader with scrub:  $b MiB/s   (rounds:$busy)"
echo "$s $b" | awk '{ printf "ratio (with/solo):  %.2f\n", $2 / $1 }'
