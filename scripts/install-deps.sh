#!/usr/bin/env bash
# Install what keelfs's build and tests need on a fresh Debian machine.
# Idempotent: does nothing when everything is already there. Needs root for
# apt-get (CI and the development machines run as root).
set -euo pipefail

need=()
command -v ionice >/dev/null 2>&1 || need+=(util-linux)
command -v losetup >/dev/null 2>&1 || need+=(mount)
command -v cc >/dev/null 2>&1 || need+=(gcc)

if [ ${#need[@]} -gt 0 ]; then
  echo "install-deps: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "install-deps: cargo not found; install Rust (rustup) first" >&2
  exit 1
fi
