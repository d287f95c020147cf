#!/usr/bin/env bash
# Same-run comparison of keelfs (two-leg mirror, tags on) with fuse2fs and
# kernel ext4 on loop devices: sequential write + read of SIZE_MIB, and
# creating + stat'ing + removing NFILES small files. Prints MiB/s and
# files/s per system and keelfs's ratio to each reference.
# Needs root, fuse2fs (apt-get install fuse2fs) and the installed keelfs
# programs (scripts/install.sh). Images go under $WORK (default /var/tmp).
set -euo pipefail
SIZE_MIB=${SIZE_MIB:-512}
NFILES=${NFILES:-5000}
WORK=${WORK:-/var/tmp/keelfs-bench}
command -v fuse2fs >/dev/null || { echo "fuse2fs missing: apt-get install fuse2fs" >&2; exit 2; }
mkdir -p "$WORK/mnt"
cleanup() { umount "$WORK/mnt" 2>/dev/null || true; }
trap cleanup EXIT

now() { date +%s.%N; }
rate() { python3 -c "print(round($1/($3-$2),1))"; }

run() { # name
  local name=$1 t0 t1 w r c
  sync; echo 3 > /proc/sys/vm/drop_caches
  t0=$(now); dd if=/dev/zero of="$WORK/mnt/big" bs=1M count="$SIZE_MIB" conv=fsync status=none; t1=$(now)
  w=$(rate "$SIZE_MIB" "$t0" "$t1")
  echo 3 > /proc/sys/vm/drop_caches
  t0=$(now); dd if="$WORK/mnt/big" of=/dev/null bs=1M status=none; t1=$(now)
  r=$(rate "$SIZE_MIB" "$t0" "$t1")
  mkdir "$WORK/mnt/d"
  t0=$(now)
  (cd "$WORK/mnt/d" && for i in $(seq 1 "$NFILES"); do echo x > f$i; done && ls -l >/dev/null && rm -f f*)
  sync; t1=$(now)
  c=$(rate "$NFILES" "$t0" "$t1")
  echo "$name write_MiB/s=$w read_MiB/s=$r files/s=$c"
}

fresh_img() { rm -f "$WORK/$1"; truncate -s 4G "$WORK/$1"; }

fresh_img ext4.img; mkfs.ext4 -q -F "$WORK/ext4.img"
mount -o loop "$WORK/ext4.img" "$WORK/mnt"; run ext4 | tee "$WORK/ext4.txt"; umount "$WORK/mnt"

mount -o loop "$WORK/ext4.img" "$WORK/mnt"; rm -rf "$WORK/mnt"/*; umount "$WORK/mnt"
fuse2fs -o fakeroot "$WORK/ext4.img" "$WORK/mnt" >/dev/null 2>&1 || fuse2fs "$WORK/ext4.img" "$WORK/mnt"
run fuse2fs | tee "$WORK/fuse2fs.txt"; umount "$WORK/mnt"; sleep 1

fresh_img a.img; fresh_img b.img
mkfs.keelfs -q -F "$WORK/a.img" "$WORK/b.img"
mount -t fuse.keelfs "$WORK/a.img,$WORK/b.img" "$WORK/mnt"
run keelfs | tee "$WORK/keelfs.txt"; umount "$WORK/mnt"; sleep 1

python3 - "$WORK" <<'PY'
import sys, re
w = sys.argv[1]
def load(n):
    return dict(re.findall(r'(\S+)=(\S+)', open(f"{w}/{n}.txt").read()))
k, f, e = load("keelfs"), load("fuse2fs"), load("ext4")
for m in ("write_MiB/s", "read_MiB/s", "files/s"):
    print(f"{m:12} keelfs {k[m]:>8}  fuse2fs {f[m]:>8}  ext4 {e[m]:>8}   keelfs/fuse2fs {float(k[m])/float(f[m]):.2f}  keelfs/ext4 {float(k[m])/float(e[m]):.2f}")
PY
