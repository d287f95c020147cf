#!/usr/bin/env bash
# Bring keelfs up on a fresh machine: install prerequisites, build.
# (Formatting and mounting two mirrored images join this script when the
# mount program lands; see README.md.)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release --workspace
echo "setup: built. The mount program is not part of this build yet (see README.md)."
