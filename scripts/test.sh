#!/usr/bin/env bash
# The whole keelfs test suite: formatting, lints, unit, property and
# integration tests. This is the command README.md gives and .ci/run calls.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace --quiet --no-fail-fast
