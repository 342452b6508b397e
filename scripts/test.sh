#!/usr/bin/env bash
# The README's test command: format check, clippy with warnings denied, every test.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cargo fmt --check
cargo clippy --all-targets -- -D warnings
cargo test --workspace
