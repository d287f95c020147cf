#!/usr/bin/env bash
# Same-run comparison of keelfs (two-leg mirror, tags on) with fuse2fs and
# kernel ext4 on loop devices: sequential write + read of SIZE_MIB, and
# creating + stat'ing + removing NFILES small files. Prints MiB/s and
# files/s per system and keelfs's ratio to each reference.
# Needs root and fuse2fs (apt-get install fuse2fs). Images go under $WORK
# (default /var/tmp/keelfs-bench) and are removed at the end.
#
# Environment:
#   KEELFS_BIN   directory holding `keelfs` and `mkfs.keelfs` (or the
#                cargo names `mkfs-keelfs`), e.g. target/release; default:
#                where the installed `keelfs` is (scripts/install.sh)
#   KEELFS_OPTS  extra `-o` options for the keelfs mount (e.g. threads=8)
#   KEELFS_BEFORE_BIN  a second directory of keelfs programs (e.g. a build
#                from before a change, copied aside): it runs too, as
#                "before", and the table gets keelfs/before ratios
#   PASSTHROUGH_HP  path of libfuse's example/passthrough_hp (built from
#                libfuse's source outside this repository; it is not packaged):
#                when set, it runs too, over ext4 on a loop device, as "phk"
#                (the FUSE ceiling: a daemon that only forwards to ext4)
#   SYSTEMS      which to run, default "ext4 fuse2fs keelfs" (+ "phk" when
#                PASSTHROUGH_HP is set)
#   SIZE_MIB     sequential file size (512), NFILES small files (5000)
# keelfs is mounted by running `$KEELFS_BIN/keelfs SOURCE MOUNTPOINT -o ...`
# directly (the mount program's own argv form, docs/mount.md).
set -euo pipefail
SIZE_MIB=${SIZE_MIB:-512}
NFILES=${NFILES:-5000}
WORK=${WORK:-/var/tmp/keelfs-bench}
SYSTEMS=${SYSTEMS:-ext4 fuse2fs keelfs${PASSTHROUGH_HP:+ phk}}
KEELFS_OPTS=${KEELFS_OPTS:-}
. "$(dirname "$0")/keelfs_bin.sh"
want() { case " $SYSTEMS " in *" $1 "*) return 0;; *) return 1;; esac; }
if want fuse2fs; then
  command -v fuse2fs >/dev/null || { echo "fuse2fs missing: apt-get install fuse2fs" >&2; exit 2; }
fi
if want keelfs; then
  [ -x "$KEELFS" ] && [ -x "$MKFS" ] || { echo "no keelfs / mkfs.keelfs in $KEELFS_BIN" >&2; exit 2; }
fi
if want phk; then
  [ -x "${PASSTHROUGH_HP:-}" ] || { echo "PASSTHROUGH_HP is not an executable: ${PASSTHROUGH_HP:-unset}" >&2; exit 2; }
fi
mkdir -p "$WORK/mnt" "$WORK/under"
cleanup() {
  umount "$WORK/mnt" 2>/dev/null || true
  umount "$WORK/under" 2>/dev/null || true
  rm -f "$WORK/ext4.img" "$WORK/a.img" "$WORK/b.img"
}
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

rm -f "$WORK"/{ext4,fuse2fs,keelfs,before,phk}.txt
if want ext4 || want fuse2fs || want phk; then
  fresh_img ext4.img; mkfs.ext4 -q -F "$WORK/ext4.img"
fi
if want ext4; then
  mount -o loop "$WORK/ext4.img" "$WORK/mnt"; run ext4 | tee "$WORK/ext4.txt"; umount "$WORK/mnt"
  mount -o loop "$WORK/ext4.img" "$WORK/mnt"; rm -rf "$WORK/mnt"/*; umount "$WORK/mnt"
fi
if want phk; then
  # passthrough_hp over ext4: absolute paths (it changes directory to /).
  mount -o loop "$WORK/ext4.img" "$WORK/under"
  "$PASSTHROUGH_HP" "$WORK/under" "$WORK/mnt"
  run phk | tee "$WORK/phk.txt"; umount "$WORK/mnt"; sleep 1
  rm -rf "$WORK/under"/*; umount "$WORK/under"
fi
if want fuse2fs; then
  fuse2fs -o fakeroot "$WORK/ext4.img" "$WORK/mnt" >/dev/null 2>&1 || fuse2fs "$WORK/ext4.img" "$WORK/mnt"
  run fuse2fs | tee "$WORK/fuse2fs.txt"; umount "$WORK/mnt"; sleep 1
fi
rm -f "$WORK/ext4.img"

run_keelfs() { # name bindir
  local mkfs=$2/mkfs.keelfs
  [ -x "$mkfs" ] || mkfs=$2/mkfs-keelfs
  fresh_img a.img; fresh_img b.img
  "$mkfs" -q -F "$WORK/a.img" "$WORK/b.img"
  "$2/keelfs" "$WORK/a.img,$WORK/b.img" "$WORK/mnt" ${KEELFS_OPTS:+-o "$KEELFS_OPTS"}
  run "$1" | tee "$WORK/$1.txt"; umount "$WORK/mnt"; sleep 1
  rm -f "$WORK/a.img" "$WORK/b.img"
}
if [ -n "${KEELFS_BEFORE_BIN:-}" ]; then
  run_keelfs before "$KEELFS_BEFORE_BIN"
fi
if want keelfs; then
  run_keelfs keelfs "$KEELFS_BIN"
fi

python3 - "$WORK" <<'PY'
import os, sys, re
w = sys.argv[1]
def load(n):
    p = f"{w}/{n}.txt"
    return dict(re.findall(r'(\S+)=(\S+)', open(p).read())) if os.path.exists(p) else None
k, f, e, b, p = load("keelfs"), load("fuse2fs"), load("ext4"), load("before"), load("phk")
def ratio(a, b, m):
    return f"{float(a[m])/float(b[m]):.2f}" if a and b else "-"
for m in ("write_MiB/s", "read_MiB/s", "files/s"):
    cell = lambda d: d[m] if d else "-"
    line = (f"{m:12} keelfs {cell(k):>8}  fuse2fs {cell(f):>8}  ext4 {cell(e):>8}"
            f"   keelfs/fuse2fs {ratio(k, f, m)}  keelfs/ext4 {ratio(k, e, m)}")
    if p:
        line += f"   passthrough_hp {cell(p):>8}  keelfs/passthrough_hp {ratio(k, p, m)}"
    if b:
        line += f"   before {cell(b):>8}  keelfs/before {ratio(k, b, m)}"
    print(line)
PY
