# Sourced by the bench scripts: where the keelfs programs under test are.
# KEELFS_BIN is a directory holding `keelfs` and `mkfs.keelfs` (or the
# cargo names `mkfs-keelfs`), e.g. target/release; by default the one
# holding the installed `keelfs` (scripts/install.sh). Sets KEELFS and MKFS.
if [ -z "${KEELFS_BIN:-}" ]; then
  KEELFS_BIN=$(dirname "$(command -v keelfs || echo /usr/local/sbin/keelfs)")
fi
KEELFS=$KEELFS_BIN/keelfs
MKFS=$KEELFS_BIN/mkfs.keelfs
[ -x "$MKFS" ] || MKFS=$KEELFS_BIN/mkfs-keelfs
