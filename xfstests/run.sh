#!/usr/bin/env bash
# Run xfstests against keelfs.
#
#   xfstests/run.sh XFSTESTS_DIR [-t SECONDS] [-w WORKDIR] [-L] [TEST... | -g GROUP]
#
# XFSTESTS_DIR is an xfstests build you already have (see xfstests/README.md;
# nothing here fetches or builds it). The keelfs programs must be installed
# (scripts/install.sh). Every test gets freshly formatted scratch images
# (xfstests cannot reformat a FUSE filesystem itself: its _scratch_mkfs only
# deletes files), and at most SECONDS of run time (default 300). The last
# line is "N passed, N failed, N notrun"; failures listed in
# xfstests/expected-failures.txt (with their reasons) are reported
# separately and do not count as failed.
#
# -L puts the first leg of the test and scratch filesystems on loop devices
# (losetup over the image files), so TEST_DEV and SCRATCH_DEV are block
# devices as the tests that require one expect; the second legs stay image
# files. The mount source xfstests sees in /proc/mounts is the loop device,
# exactly as given. The loop devices are detached at the end.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
[ $# -ge 1 ] || { echo "usage: $0 XFSTESTS_DIR [-t SECONDS] [-w WORKDIR] [-L] [TEST...|-g GROUP]" >&2; exit 2; }
xfs=$(cd "$1" && pwd) || exit 2; shift
timeout_s=300
work=/var/tmp/keelfs-xfstests
loop=0
while [ $# -gt 0 ]; do
  case "$1" in
    -t) timeout_s=$2; shift 2 ;;
    -w) work=$2; shift 2 ;;
    -L) loop=1; shift ;;
    *) break ;;
  esac
done
[ -x "$xfs/check" ] || { echo "$xfs is not an xfstests build (no ./check)" >&2; exit 2; }
for p in keelfs mkfs.keelfs; do
  command -v /usr/local/sbin/$p >/dev/null || { echo "/usr/local/sbin/$p missing: run scripts/install.sh" >&2; exit 2; }
done
command -v mount.fuse3 >/dev/null || { echo "mount.fuse3 missing: run scripts/install-deps.sh" >&2; exit 2; }

# What xfstests expects of the machine: its users and groups.
for g in fsgqa fsgqa2; do getent group $g >/dev/null || groupadd $g; done
getent passwd fsgqa >/dev/null || useradd -m -g fsgqa fsgqa
getent passwd fsgqa2 >/dev/null || useradd -m -g fsgqa2 fsgqa2
getent passwd 123456-fsgqa >/dev/null || useradd -m -g fsgqa 123456-fsgqa

mkdir -p "$work/test" "$work/scratch" "$work/results"

# The first leg of PREFIX (test or scratch): its image file, or with -L the
# loop device over it.
declare -A first_leg
detach_loops() {
  for dev in "${first_leg[@]}"; do
    case "$dev" in /dev/loop*) losetup -d "$dev" 2>/dev/null ;; esac
  done
}
for prefix in test scratch; do
  umount "$work/$prefix" 2>/dev/null
  # Loop devices a killed run left on the image.
  losetup -j "$work/$prefix-a.img" 2>/dev/null | cut -d: -f1 | xargs -r -n1 losetup -d
  first_leg[$prefix]=$work/$prefix-a.img
  if [ $loop = 1 ]; then
    # A loop device keeps the image it was attached to: make it once, at
    # full size, and never replace it while attached.
    rm -f "$work/$prefix-a.img"; truncate -s 2G "$work/$prefix-a.img"
    first_leg[$prefix]=$(losetup -f --show "$work/$prefix-a.img") || { detach_loops; exit 2; }
  fi
done
trap 'umount "$work/test" "$work/scratch" 2>/dev/null; detach_loops' EXIT

sed -e '/^#/d' -e "s|@WORK@|$work|g" -e "s|@TEST_DEV@|${first_leg[test]}|g" \
    -e "s|@SCRATCH_DEV@|${first_leg[scratch]}|g" "$here/local.config.in" > "$xfs/local.config"

fresh() { # fresh PREFIX: two sparse 2 GiB legs, formatted as a mirror
  umount "$work/$1" 2>/dev/null
  local a=${first_leg[$1]}
  if [ "$a" = "$work/$1-a.img" ]; then
    rm -f "$a"; truncate -s 2G "$a"
  else
    blkdiscard "$a" 2>/dev/null   # zeroes the loop device (punches the image)
  fi
  rm -f "$work/$1-b.img"; truncate -s 2G "$work/$1-b.img"
  # umount returns before the daemon has let go of the legs; mkfs refuses
  # a device in use, so give it a few seconds.
  local i
  for i in $(seq 50); do
    /usr/local/sbin/mkfs.keelfs -q -F "$a" "$work/$1-b.img" 2>/dev/null && return 0
    sleep 0.2
  done
  /usr/local/sbin/mkfs.keelfs -q -F "$a" "$work/$1-b.img"
}
fresh test
fresh scratch

# The list of tests: explicit names, or a group expanded by ./check -n.
if [ $# -eq 0 ]; then set -- -g quick; fi
mapfile -t tests < <(cd "$xfs" && ./check -n "$@" 2>/dev/null | grep -E '^[a-z]+/[0-9]+' | awk '{print $1}')
expected=$(grep -vE '^\s*(#|$)' "$here/expected-failures.txt" | awk '{print $1}')

pass=0 fail=0 notrun=0 xfail=0
failed=()
start=$(date +%s)
for t in "${tests[@]}"; do
  fresh scratch
  out=$(cd "$xfs" && timeout --kill-after=30 "$timeout_s" ./check "$t" 2>&1)
  # ./check says "Passed all 1 tests" for a test it did not run, too.
  if echo "$out" | grep -qE "^Not run:|\[not run\]"; then
    notrun=$((notrun + 1)); r=notrun
  elif echo "$out" | grep -q "^Passed all"; then
    pass=$((pass + 1)); r=pass
  elif echo "$expected" | grep -qx "$t"; then
    xfail=$((xfail + 1)); r="fail (expected)"
  else
    fail=$((fail + 1)); r=FAIL; failed+=("$t")
  fi
  echo "$t $r"
  # A test that wedged the test filesystem must not sink the next one.
  if ! mountpoint -q "$work/test" && [ "$r" = FAIL ]; then fresh test; fi
done
echo "time: $(( $(date +%s) - start )) s; expected failures: $xfail"
[ ${#failed[@]} -gt 0 ] && echo "unexpected failures: ${failed[*]}"
echo "$pass passed, $fail failed, $notrun notrun"
[ "$fail" -eq 0 ]
