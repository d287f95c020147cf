#!/usr/bin/env bash
# Bring keelfs up on this machine, idempotently:
#  1. install the prerequisites (scripts/install-deps.sh);
#  2. build and install keelfs, mkfs.keelfs, fsck.keelfs (scripts/install.sh);
#  3. make two sparse image files, $KEELFS_DATA_DIR/a.img and b.img
#     (default /var/lib/keelfs, 4 GiB each), if they do not exist;
#  4. format them as a two-way mirror unless they already hold keelfs;
#  5. mount them at $KEELFS_MOUNTPOINT (default /mnt/keelfs) unless
#     something is mounted there already;
#  6. say how to use and unmount it.
# Environment: KEELFS_DATA_DIR, KEELFS_MOUNTPOINT, KEELFS_IMAGE_SIZE
# (default 4G), KEELFS_PROFILE (see install.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

data_dir=${KEELFS_DATA_DIR:-/var/lib/keelfs}
mnt=${KEELFS_MOUNTPOINT:-/mnt/keelfs}
size=${KEELFS_IMAGE_SIZE:-4G}
sbin=${PREFIX:-/usr/local}/sbin

scripts/install-deps.sh
scripts/install.sh

mkdir -p "$data_dir" "$mnt"
legs=("$data_dir/a.img" "$data_dir/b.img")
for img in "${legs[@]}"; do
  if [ ! -e "$img" ]; then
    truncate -s "$size" "$img"
    echo "setup: made $img ($size, sparse)"
  fi
done

# A keelfs leg carries "KEELFS" at byte 48 of its primary superblock.
is_keelfs() { [ "$(dd if="$1" bs=1 skip=48 count=6 status=none 2>/dev/null | tr -d '\0')" = KEELFS ]; }
is_blank() { ! [ -s "$1" ] || [ -z "$(head -c 65536 "$1" | tr -d '\0')" ]; }

source_spec="${legs[0]},${legs[1]}"
if mountpoint -q "$mnt"; then
  echo "setup: $mnt is already mounted:"
  findmnt -n "$mnt" || true
else
  if is_keelfs "${legs[0]}" && is_keelfs "${legs[1]}"; then
    echo "setup: ${legs[*]} already hold keelfs: not formatting"
  elif is_blank "${legs[0]}" && is_blank "${legs[1]}"; then
    "$sbin/mkfs.keelfs" -q -L keelfs "${legs[@]}"
    echo "setup: formatted ${legs[*]} as a two-way mirror"
  else
    echo "setup: ${legs[*]} hold something that is not a keelfs pair;" \
         "refusing to format them (remove them, or run mkfs.keelfs -F yourself)" >&2
    exit 1
  fi
  mount -t fuse.keelfs "$source_spec" "$mnt" -o allow_other,default_permissions
  echo "setup: mounted $source_spec on $mnt"
fi

cat <<EOT

keelfs is mounted at $mnt (two mirrored legs: ${legs[*]}).

  use it:          cp -r ~/photos $mnt/     (any user: allow_other,default_permissions)
  health:          keelfs status $mnt
  unmount:         umount $mnt
  mount again:     mount -t fuse.keelfs $source_spec $mnt -o allow_other,default_permissions
  check (unmounted): fsck -t keelfs -n $source_spec     (-y repairs)
  at boot, /etc/fstab:
    $source_spec $mnt fuse.keelfs allow_other,default_permissions,nofail 0 0
EOT
