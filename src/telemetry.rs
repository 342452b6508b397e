//! The metrics kukaku records (docs/operations.md, "Metrics"), through the `metrics` facade:
//! without an installed recorder every call is a no-op; `kukaku serve --metrics-listen`
//! installs the Prometheus one. No label carries personal data, a credential id or a
//! request's path: HTTP metrics are labelled by route template, method and status only, and
//! partition ids appear only on the per-partition lags, and only when the operator asks
//! (`--metrics-partition-labels`).

use std::sync::atomic::{AtomicBool, Ordering};

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

use crate::ledger::PartitionId;

static PARTITION_LABELS: AtomicBool = AtomicBool::new(false);

/// Whether the per-partition lags carry a `partition` label (`--metrics-partition-labels`;
/// off by default: a partition id is a 保険者番号, not personal data, but an operator decides
/// where it goes).
pub fn set_partition_labels(on: bool) {
    PARTITION_LABELS.store(on, Ordering::Relaxed);
}

/// Sets the per-partition series of gauge `name` to `value`, when partition labels are on.
pub fn partition_gauge(name: &'static str, p: &PartitionId, value: u64) {
    if PARTITION_LABELS.load(Ordering::Relaxed) {
        metrics::gauge!(name, "partition" => p.to_string()).set(value as f64);
    }
}

/// Entries made durable by the writer (appends, access records, key events).
pub const APPENDED_ENTRIES: &str = "kukaku_appended_entries_total";
/// Group commits written.
pub const COMMITS: &str = "kukaku_commits_total";
/// Commands per group commit.
pub const BATCH_COMMANDS: &str = "kukaku_batch_commands";
/// Time to write and sync one group commit.
pub const COMMIT_SECONDS: &str = "kukaku_commit_seconds";
/// 1 once a failed write poisoned the store (nothing more is acknowledged until reopened).
pub const POISONED: &str = "kukaku_store_poisoned";
/// HTTP requests answered, by route template, method and status.
pub const HTTP_REQUESTS: &str = "kukaku_http_requests_total";
/// HTTP request latency, by route template and method.
pub const HTTP_SECONDS: &str = "kukaku_http_request_seconds";
/// Requests refused for a missing, wrong, expired or revoked credential.
pub const AUTH_FAILURES: &str = "kukaku_auth_failures_total";
/// RocksDB: bytes compaction is estimated to still have to rewrite.
pub const PENDING_COMPACTION_BYTES: &str = "kukaku_storage_pending_compaction_bytes";
/// RocksDB: 1 while writes are stopped (too many memtables or level-0 files).
pub const WRITE_STOPPED: &str = "kukaku_storage_write_stopped";
/// RocksDB: the rate writes are slowed to, bytes per second (0: not slowed).
pub const DELAYED_WRITE_RATE: &str = "kukaku_storage_delayed_write_rate";
/// RocksDB: bytes in memtables, all column families.
pub const MEMTABLE_BYTES: &str = "kukaku_storage_memtable_bytes";
/// RocksDB: bytes in the shared block cache.
pub const BLOCK_CACHE_BYTES: &str = "kukaku_storage_block_cache_bytes";
/// The largest share of its nonce budget any current DEK version has used (0–1; the writer
/// rotates at 1).
pub const NONCE_BUDGET_USED: &str = "kukaku_nonce_budget_used_ratio";
/// Hub entries the intermediate had not copied yet when its last round started.
pub const REPLICATION_LAG_ENTRIES: &str = "kukaku_replication_lag_entries";
/// Per partition (with `--metrics-partition-labels`): hub entries not yet copied.
pub const PARTITION_REPLICATION_LAG_ENTRIES: &str = "kukaku_partition_replication_lag_entries";
/// Seconds since the replicator's last round without an error.
pub const REPLICATION_LAG_SECONDS: &str = "kukaku_replication_lag_seconds";
/// Entries not yet covered by a witness cosignature.
pub const WITNESS_LAG_ENTRIES: &str = "kukaku_witness_lag_entries";

/// Per partition (with `--metrics-partition-labels`): entries no witness cosigned yet.
pub const PARTITION_WITNESS_LAG_ENTRIES: &str = "kukaku_partition_witness_lag_entries";

/// Registers units and help texts with the installed recorder.
pub fn describe() {
    describe_counter!(APPENDED_ENTRIES, "Entries made durable by the writer");
    describe_counter!(COMMITS, "Group commits written and synced");
    describe_histogram!(BATCH_COMMANDS, "Commands per group commit");
    describe_histogram!(
        COMMIT_SECONDS,
        Unit::Seconds,
        "Write and fsync of one group commit"
    );
    describe_gauge!(POISONED, "1 once a failed write poisoned the store");
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests by route template, method and status"
    );
    describe_histogram!(
        HTTP_SECONDS,
        Unit::Seconds,
        "HTTP request latency by route template"
    );
    describe_counter!(AUTH_FAILURES, "Requests refused for their credential");
    describe_gauge!(
        PENDING_COMPACTION_BYTES,
        Unit::Bytes,
        "RocksDB pending compaction bytes"
    );
    describe_gauge!(WRITE_STOPPED, "1 while RocksDB has stopped writes");
    describe_gauge!(
        DELAYED_WRITE_RATE,
        "RocksDB delayed write rate, bytes/s (0: none)"
    );
    describe_gauge!(MEMTABLE_BYTES, Unit::Bytes, "RocksDB memtable bytes");
    describe_gauge!(BLOCK_CACHE_BYTES, Unit::Bytes, "RocksDB block cache bytes");
    describe_gauge!(
        NONCE_BUDGET_USED,
        "Largest share of its nonce budget a DEK version used"
    );
    describe_gauge!(
        REPLICATION_LAG_ENTRIES,
        "Hub entries not yet copied at the last round"
    );
    describe_gauge!(
        REPLICATION_LAG_SECONDS,
        Unit::Seconds,
        "Seconds since the last clean replication round"
    );
    describe_gauge!(
        WITNESS_LAG_ENTRIES,
        "Entries no witness cosignature covers yet"
    );
    describe_gauge!(
        PARTITION_REPLICATION_LAG_ENTRIES,
        "Per partition: hub entries not yet copied"
    );
    describe_gauge!(
        PARTITION_WITNESS_LAG_ENTRIES,
        "Per partition: entries no witness cosigned yet"
    );
}
