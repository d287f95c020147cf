#!/usr/bin/env bash
# Install what keelfs's build, tests and mounts need on a fresh Debian
# machine: a C toolchain for the build, util-linux and mount for the tests,
# fuse3 (mount.fuse3, so `mount -t fuse.keelfs` works, and /dev/fuse) and
# attr (setfattr/getfattr, used by the tests).
# Idempotent: does nothing when everything is already there. Needs root for
# apt-get (CI and the development machines run as root).
set -euo pipefail

has() { command -v "$1" >/dev/null 2>&1 || [ -x "/sbin/$1" ] || [ -x "/usr/sbin/$1" ]; }

need=()
has ionice || need+=(util-linux)
has setpriv || need+=(util-linux)
has losetup || need+=(mount)
has cc || need+=(gcc)
has mount.fuse3 || need+=(fuse3)
has setfattr || need+=(attr)

if [ ${#need[@]} -gt 0 ]; then
  # util-linux may be listed twice.
  mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
  echo "install-deps: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

if [ ! -e /dev/fuse ]; then
  modprobe fuse 2>/dev/null || echo "install-deps: /dev/fuse is missing (no FUSE in this kernel?)" >&2
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "install-deps: cargo not found; install Rust (rustup) first" >&2
  exit 1
fi
