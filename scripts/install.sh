#!/usr/bin/env bash
# Build keelfs and install its programs where mount(8), mkfs(8) and fsck(8)
# look for them:
#   keelfs        mount program: `mount -t fuse.keelfs SRC MNT` runs it
#                 (through mount.fuse3), and `keelfs status MNT`
#   mkfs.keelfs   `mkfs -t keelfs DEV...`
#   fsck.keelfs   `fsck -t keelfs DEV...`; also as fsck.fuse.keelfs, the
#                 name fsck(8) looks for on an fstab line of type fuse.keelfs
# into $PREFIX/sbin (default /usr/local/sbin, which mount.fuse3's shell,
# mkfs(8) and fsck(8) search). Idempotent; needs root to write there.
#
# Environment: PREFIX (default /usr/local); KEELFS_PROFILE (default
# release; `dev` installs the debug build, for trying the scripts quickly).
set -euo pipefail
cd "$(dirname "$0")/.."

prefix=${PREFIX:-/usr/local}
profile=${KEELFS_PROFILE:-release}
case "$profile" in
  release) target_dir=target/release ;;
  dev) target_dir=target/debug ;;
  *) echo "install: KEELFS_PROFILE must be release or dev, not $profile" >&2; exit 1 ;;
esac

cargo build --profile "$profile" --workspace --bins --quiet

sbin="$prefix/sbin"
install -d "$sbin"
install_one() { # built-name installed-name
  install -m 0755 "$target_dir/$1" "$sbin/$2.new"
  mv -f "$sbin/$2.new" "$sbin/$2"   # atomic: a running daemon keeps its binary
  echo "install: $sbin/$2"
}
install_one keelfs keelfs
install_one mkfs-keelfs mkfs.keelfs
if [ -x "$target_dir/fsck-keelfs" ]; then
  install_one fsck-keelfs fsck.keelfs
  ln -sfn fsck.keelfs "$sbin/fsck.fuse.keelfs"
  echo "install: $sbin/fsck.fuse.keelfs -> fsck.keelfs"
else
  echo "install: fsck.keelfs is not built yet (no fsck crate in this tree): skipped"
fi
