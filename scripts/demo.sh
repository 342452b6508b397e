#!/usr/bin/env bash
# The README's demo command.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
# The auditor too: the demo prints a kukaku-audit command for the bundle it writes.
cargo build --quiet -p kukaku-audit
cargo run --quiet --bin kukaku -- demo "$@"
