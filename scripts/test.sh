#!/usr/bin/env bash
# The README's test command: format check, clippy and rustdoc with warnings denied, the
# layering checks, every test.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cargo fmt --check
cargo clippy --workspace --all-targets -- -D warnings
# The replicated engine (issue 31) is a feature of its own; it is checked the same way.
cargo clippy --features postgres --all-targets -- -D warnings
# The API documentation builds without a warning (broken intra-doc links included).
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace --quiet

# Layering (docs/ARCHITECTURE.md): the pure ledger builds alone and links none of the server
# crates; only src/store names rocksdb.
cargo clippy --lib --no-default-features -- -D warnings
forbidden=$(cargo tree --no-default-features -e normal --prefix none \
  | grep -E '^(rocksdb|librocksdb-sys|tokio|axum|aes-gcm|aes) ' | sort -u || true)
if [ -n "$forbidden" ]; then
  echo "error: --no-default-features build depends on: $forbidden" >&2
  exit 1
fi
# The library without the binary's feature links none of what only the binary uses.
forbidden=$(cargo tree --no-default-features --features server -e normal --prefix none \
  | grep -E '^(clap|anyhow|indicatif|tracing-subscriber|tikv-jemallocator) ' | sort -u || true)
if [ -n "$forbidden" ]; then
  echo "error: the library (--features server) depends on: $forbidden" >&2
  exit 1
fi
# The auditor, built alone as shipped, links none of them either.
forbidden=$(cargo tree -p kukaku-audit -e normal --prefix none \
  | grep -E '^(rocksdb|librocksdb-sys|tokio|axum|aes-gcm|aes) ' | sort -u || true)
if [ -n "$forbidden" ]; then
  echo "error: kukaku-audit depends on: $forbidden" >&2
  exit 1
fi
# The binary as shipped (normal edges, no dev-dependencies) has no test hook.
if cargo tree -e normal,features --prefix none | grep -q 'feature "test-hooks"'; then
  echo "error: the shipped build enables the test-hooks feature" >&2
  exit 1
fi
outside=$(grep -rl 'rocksdb' src | grep -v '^src/store/' || true)
if [ -n "$outside" ]; then
  echo "error: only src/store may name rocksdb; found in: $outside" >&2
  exit 1
fi
# Nor the replicated engine's client: only its engine module.
outside=$(grep -rlE '(^|[^_[:alnum:]])postgres::|tokio_postgres' src | grep -v '^src/store/engine/' || true)
if [ -n "$outside" ]; then
  echo "error: only src/store/engine may use the PostgreSQL client; found in: $outside" >&2
  exit 1
fi

# Dependencies (issue 26): known advisories (offline RustSec copy), licenses, bans, sources.
bash scripts/deny.sh

# The KEK-in-an-HSM test (issue 30) needs SoftHSM2: its PKCS#11 module and softhsm2-util
# (a library, no daemon: the test makes its own token in a temporary directory).
if [ ! -e /usr/lib/softhsm/libsofthsm2.so ] || ! command -v softhsm2-util >/dev/null; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "installing softhsm2 with apt-get" >&2
  { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq softhsm2; } \
    || { echo "error: could not install softhsm2 (the HSM test needs it); install it and retry" >&2; exit 2; }
fi

cargo test --workspace

# The benchmarks, reduced (issue 9): every bench target runs a few iterations in the test
# profile so none can rot. No timing is asserted; the real runs are `cargo bench`
# (docs/benchmarks.md).
KUKAKU_BENCH_SMOKE=1 KUKAKU_BENCH_PARTITIONS=20 cargo test --workspace --benches

# The storage seam's contract on the replicated engine (issue 31): a PostgreSQL cell of
# three etcd members and three Patroni-managed PostgreSQL nodes on loopback, synchronous
# replication (scripts/pg-cell.sh installs what is missing), stopped by PID afterwards.
cell="$(mktemp -d)"
trap 'bash scripts/pg-cell.sh stop "$cell" >/dev/null 2>&1 || true; rm -rf "$cell"' EXIT
dsn="$(bash scripts/pg-cell.sh start "$cell")"
KUKAKU_TEST_PG_DSN="$dsn" cargo test --features postgres --lib store::engine -- --ignored \
  --skip pg_failover
# The store itself on the cell (appends, reads, proofs, verification, bundle, reopen).
KUKAKU_TEST_PG_DSN="$dsn" cargo test --features postgres --test it on_postgres -- --ignored
# The binary on the cell: init --pg-dsn-file, then every command through engine.json.
KUKAKU_TEST_PG_DSN="$dsn" cargo test --features postgres --test process on_postgres -- --ignored
# The store and flow suites again, every instance on the cell (tests/common::init_store).
# Three are left out: they read RocksDB's own files or its memory tier (the destroy they
# check is checked on the cell by tests/it/on_postgres.rs).
KUKAKU_TEST_ENGINE=postgres KUKAKU_TEST_PG_DSN="$dsn" cargo test --features postgres --test it -- \
  --skip api::the_in_memory_credential_check_answers_as_the_full_one \
  --skip continuity::a_destroyed_partition_leaves_no_household_number_index_key_or_matching_token \
  --skip keys::destroy_shreds_a_partition_and_keeps_proofs
# The cell's bench, reduced (so it cannot rot; no timing is read).
KUKAKU_BENCH_SMOKE=1 KUKAKU_BENCH_PG_DSN="$dsn" cargo test --features postgres --bench cell
# Last, alone, each after the cell is whole again: the leader is killed (Patroni and
# PostgreSQL) while commits go on; then a pgBackRest backup restored to a copy that kukaku
# verifies; the leader killed while `kukaku serve` takes HTTP imports; both standbys stopped
# (imports wait for one to come back).
KUKAKU_TEST_PG_DSN="$dsn" KUKAKU_TEST_PG_CELL="$cell" \
  cargo test --features postgres --lib store::engine::tests::pg_failover -- --ignored --nocapture
bash scripts/pg-cell.sh revive "$cell"
KUKAKU_TEST_PG_DSN="$dsn" KUKAKU_TEST_PG_CELL="$cell" \
  cargo test --features postgres --test process cell_failover -- --ignored --nocapture \
  --test-threads 1
bash scripts/pg-cell.sh stop "$cell"

# The terminal in a real browser (issue 6): headless Chromium driven by playwright-core, CJK
# fonts for the screenshots and the PDF, pdftotext to read the PDF back.
bash scripts/browser-setup.sh
KUKAKU_NODE_PATH="$HOME/.cache/kukaku-node/node_modules" \
  cargo test --test terminal_browser -- --ignored
