#!/usr/bin/env bash
# Run xfstests against keelfs.
#
#   xfstests/run.sh XFSTESTS_DIR [-t SECONDS] [-w WORKDIR] [TEST... | -g GROUP]
#
# XFSTESTS_DIR is an xfstests build you already have (see xfstests/README.md;
# nothing here fetches or builds it). The keelfs programs must be installed
# (scripts/install.sh). Every test gets freshly formatted scratch images
# (xfstests cannot reformat a FUSE filesystem itself: its _scratch_mkfs only
# deletes files), and at most SECONDS of run time (default 300). The last
# line is "N passed, N failed, N notrun"; failures listed in
# xfstests/expected-failures.txt (with their reasons) are reported
# separately and do not count as failed.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
[ $# -ge 1 ] || { echo "usage: $0 XFSTESTS_DIR [-t SECONDS] [-w WORKDIR] [TEST...|-g GROUP]" >&2; exit 2; }
xfs=$(cd "$1" && pwd) || exit 2; shift
timeout_s=300
work=/var/tmp/keelfs-xfstests
while [ $# -gt 0 ]; do
  case "$1" in
    -t) timeout_s=$2; shift 2 ;;
    -w) work=$2; shift 2 ;;
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
sed -e '/^#/d' -e "s|@WORK@|$work|g" "$here/local.config.in" > "$xfs/local.config"

fresh() { # fresh PREFIX: two sparse 2 GiB legs, formatted as a mirror
  umount "$work/$1" 2>/dev/null
  for leg in a b; do rm -f "$work/$1-$leg.img"; truncate -s 2G "$work/$1-$leg.img"; done
  /usr/local/sbin/mkfs.keelfs -q -F "$work/$1-a.img" "$work/$1-b.img"
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
umount "$work/test" "$work/scratch" 2>/dev/null
echo "time: $(( $(date +%s) - start )) s; expected failures: $xfail"
[ ${#failed[@]} -gt 0 ] && echo "unexpected failures: ${failed[*]}"
echo "$pass passed, $fail failed, $notrun notrun"
[ "$fail" -eq 0 ]
