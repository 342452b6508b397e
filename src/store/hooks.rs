//! Test hooks: a clock offset and injected storage faults. They exist only with the
//! `test-hooks` feature, which the test suites enable (a dev-dependency of the package on
//! itself) and the shipped binary does not; without it the writer's clock is the wall clock
//! and no write fails on purpose.

use super::StoreOptions;

#[cfg(feature = "test-hooks")]
pub use enabled::{FaultPlan, TestHooks};

#[cfg(feature = "test-hooks")]
mod enabled {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// What a test may change below the writer.
    #[derive(Debug, Clone, Default)]
    pub struct TestHooks {
        /// Added to the wall clock the writer stamps entries with (entries of an earlier
        /// fiscal year).
        pub clock_offset_ms: i64,
        /// Injected storage faults (tests of poisoning).
        pub faults: Option<Arc<FaultPlan>>,
    }

    /// Storage faults to inject below the writer: the n-th synced write of the key store or
    /// of the data batch fails as a failed `fsync` or a full disk would.
    #[derive(Debug, Default)]
    pub struct FaultPlan {
        /// Data batches that still succeed before one fails (`u64::MAX`: never).
        pub data_writes_left: AtomicU64,
        /// Key-store batches that still succeed before one fails (`u64::MAX`: never).
        pub key_writes_left: AtomicU64,
    }

    impl FaultPlan {
        /// Fails the data batch after `data` good ones and the key-store batch after `keys`.
        pub fn new(data: u64, keys: u64) -> Arc<Self> {
            Arc::new(FaultPlan {
                data_writes_left: data.into(),
                key_writes_left: keys.into(),
            })
        }

        /// Whether this write is the one to fail (counts it down otherwise).
        pub(super) fn fails(counter: &AtomicU64) -> bool {
            let before = counter.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| match n {
                0 | u64::MAX => None,
                n => Some(n - 1),
            });
            before == Err(0)
        }
    }
}

/// Which synced write a fault plan may fail.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Write {
    KeyStore,
    Data,
}

impl StoreOptions {
    /// Added to the wall clock by the writer: 0 without the feature.
    pub(crate) fn clock_offset_ms(&self) -> i64 {
        #[cfg(feature = "test-hooks")]
        return self.hooks.clock_offset_ms;
        #[cfg(not(feature = "test-hooks"))]
        0
    }

    /// Whether this synced write is to fail: never without the feature.
    pub(crate) fn injected_fault(&self, write: Write) -> bool {
        #[cfg(feature = "test-hooks")]
        return self.hooks.faults.as_deref().is_some_and(|f| {
            enabled::FaultPlan::fails(match write {
                Write::KeyStore => &f.key_writes_left,
                Write::Data => &f.data_writes_left,
            })
        });
        #[cfg(not(feature = "test-hooks"))]
        {
            let _ = write;
            false
        }
    }
}
