#!/usr/bin/env bash
# The README's demo command.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cargo run --quiet --bin kukaku -- demo
