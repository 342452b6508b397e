#!/usr/bin/env bash
# The full crash loop of issue 10: a child appends from four threads while a fifth rotates
# DEKs, re-encrypts and rotates the KEK; it is SIGKILLed at pseudo-random points N times
# (default 200), and after every kill the store must reopen with every acknowledged append,
# no partial batch, every body decrypting and verify passing. CI runs 3 kills (scripts/test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
KUKAKU_CRASH_KILLS="${1:-200}" cargo test --test crash sigkill_loses_no_acknowledged_append -- --nocapture
