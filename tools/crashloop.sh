#!/usr/bin/env bash
# The full crash loops of issue 10 (CI runs 3 kills of each, scripts/test.sh):
# 1. tests/process/crash.rs: a child appends from four threads while a fifth rotates DEKs,
#    re-encrypts and rotates the KEK; after every SIGKILL the store must reopen with every
#    acknowledged append, no partial batch, every body decrypting and verify passing.
# 2. tests/process/serve_crash.rs: a child `kukaku serve` under HTTP imports, lookups and reads, with
#    key rotations through its admin socket and an intermediate replicating from it; after
#    every SIGKILL every acknowledged import and access record is there and whole,
#    `kukaku verify --with-keys` passes, and at the end the replicator has every snapshot
#    exactly once.
#   tools/crashloop.sh [kills, default 200]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
kills="${1:-200}"
KUKAKU_CRASH_KILLS="$kills" cargo test --test process crash::sigkill_loses_no_acknowledged_append -- --nocapture
KUKAKU_SERVE_CRASH_KILLS="$kills" cargo test --test process serve_crash:: -- --nocapture
