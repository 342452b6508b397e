#!/usr/bin/env bash
# Coverage-guided fuzzing of every target in fuzz/ (cargo fuzz, libFuzzer, nightly).
#   tools/fuzz.sh [seconds per target, default 60] [target ...]
# Starts from the committed seeds (fuzz/corpus/<target>/seed-NN); crashes land in
# fuzz/artifacts/<target>/. The bounded CI run of the same targets is tests/it/fuzz.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(envelope proof checkpoint csv_import json_body)
fi
if ! rustup toolchain list | grep -q '^nightly'; then
  echo "tools/fuzz.sh: cargo fuzz needs a nightly toolchain: rustup toolchain install nightly" >&2
  exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "tools/fuzz.sh: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked || {
    echo "tools/fuzz.sh: could not install cargo-fuzz (cargo install cargo-fuzz)" >&2
    exit 1
  }
fi
if [ -z "${CARGO_BUILD_TARGET:-}" ]; then
  CARGO_BUILD_TARGET="$(rustc -vV | sed -n 's/^host: //p')"
fi
# Its own target folder: sanitizer flags rebuild everything (rocksdb's C++ once, ~8 min).
export CARGO_TARGET_DIR="${KUKAKU_FUZZ_TARGET_DIR:-$HOME/.cache/kukaku-fuzz-target}"
for t in "${targets[@]}"; do
  echo "== fuzz $t for ${secs}s"
  # A private copy of the seeds, so libFuzzer's additions stay out of the tree.
  work="$CARGO_TARGET_DIR/corpus/$t"
  mkdir -p "$work"
  cp fuzz/corpus/"$t"/seed-* "$work"/
  # json_body keeps one store open for the whole process (a static): LeakSanitizer would
  # report the RocksDB cache blocks it still holds at exit as leaks.
  leaks=1
  if [ "$t" = json_body ]; then leaks=0; fi
  ASAN_OPTIONS="detect_leaks=$leaks:detect_odr_violation=0" cargo +nightly fuzz run --target "$CARGO_BUILD_TARGET" "$t" "$work" -- \
    -max_total_time="$secs" -max_len=65536 -rss_limit_mb=4096 -print_final_stats=1 \
    -detect_leaks="$leaks"
done
echo "tools/fuzz.sh: every target ran ${secs}s without a crash"
